"""The tu- entries through the scripts: main.py trains a V3+ and a V3 entry, its checkpoint rebuilds the model in
--test_only, --continue_training, predict.py and the ONNX export without model flags, and bad names, strides and
missing weights are one line. timm's tiny test models, random weights, no downloads (the three families' training
steps at stride 16 and 8 are in tests/network/test_timm_encoders.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main as train_script
import predict
from tests.conftest import ROOT
from tests.helpers import write_voc
from tools import export_onnx, model_info

timm = pytest.importorskip("timm", reason="timm is a test dependency (requirements-dev.txt)")


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("timm_voc")
    write_voc(root / "data", names_train=[f"t{i}" for i in range(4)], names_val=["v0", "v1"], size=(48, 40))
    return root


def _train(voc, folder, model, output_stride, *extra):
    return train_script.main([
        "--data_root", str(voc / "data"), "--dataset", "voc", "--model", model, "--output_stride", str(output_stride),
        "--no-pretrained_backbone", "--crop_size", "32", "--batch_size", "2", "--num_workers", "0",
        "--total_itrs", "2", "--val_interval", "2", "--print_interval", "1",
        "--checkpoint_dir", str(folder / "ck"), "--results_dir", str(folder / "res"), *extra])


def _checkpoint(folder, model, output_stride, kind="latest"):
    return str(folder / "ck" / f"{kind}_{model}_voc_os{output_stride}.pth")


def test_a_v3plus_entry_trains_records_its_encoder_and_logs_to_tensorboard(voc, tmp_path, capsys):
    model = "deeplabv3plus_tu-test_convnext"
    assert _train(voc, tmp_path, model, 16, "--tensorboard", str(tmp_path / "tb")) == 0
    assert "Finished 2 iterations" in capsys.readouterr().out
    saved = torch.load(_checkpoint(tmp_path, model, 16), weights_only=True)
    assert saved["model_name"] == model and saved["output_stride"] == 16
    assert saved["timm_encoder"] == {"name": "test_convnext", "options": {}, "timm_version": timm.__version__}
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))


@pytest.fixture(scope="module")
def trained(voc, tmp_path_factory):
    """A DeepLabV3 (V3, not V3+) tu- entry trained by main.py for 2 steps at stride 8: (folder, checkpoint)."""
    folder = tmp_path_factory.mktemp("trained")
    assert _train(voc, folder, "deeplabv3_tu-test_efficientnet", 8) == 0
    return folder, _checkpoint(folder, "deeplabv3_tu-test_efficientnet", 8)


def test_test_only_and_continue_training_rebuild_the_model_from_the_checkpoint(voc, trained, capsys):
    folder, checkpoint = trained
    common = ["--data_root", str(voc / "data"), "--dataset", "voc", "--num_workers", "0", "--crop_size", "32",
              "--batch_size", "2", "--checkpoint_dir", str(folder / "ck"), "--results_dir", str(folder / "res2"),
              "--ckpt", checkpoint]  # no --model, no --output_stride
    assert train_script.main([*common, "--test_only", "--eval_flip", "--eval_slide", "--window", "32",
                              "--stride", "24"]) == 0
    assert "Mean IoU" in capsys.readouterr().out
    assert train_script.main([*common, "--continue_training", "--total_itrs", "3", "--val_interval", "3"]) == 0
    assert "Training state restored from" in capsys.readouterr().out
    assert torch.load(checkpoint, weights_only=True)["cur_itrs"] == 3


def _images(folder):
    folder.mkdir()
    for seed, (width, height) in enumerate(((96, 64), (97, 75))):
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
            folder / f"{seed}.png")
    return folder


def _labels(folder):
    return {name: np.array(Image.open(folder / name)) for name in sorted(os.listdir(folder)) if "_label" in name}


def test_predict_and_onnx_agree_without_model_flags(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    _, checkpoint = trained
    onnx_file = str(tmp_path / "model.onnx")
    assert export_onnx.main(["--ckpt", checkpoint, "--output", onnx_file, "--check_sizes", "96x64", "97x75"]) == 0
    images = _images(tmp_path / "in")
    runs = {"onnx": ["--onnx", onnx_file], "torch": ["--ckpt", checkpoint, "--amp", "off"],
            "tta": ["--ckpt", checkpoint, "--tta", "--slide", "--window", "64", "--stride", "48"]}
    for folder, model_args in runs.items():
        assert predict.main(["--input", str(images), "--save_val_results_to", str(tmp_path / folder),
                             "--num_workers", "0", "--output", "label", *model_args]) == 0
    onnx_labels, torch_labels = _labels(tmp_path / "onnx"), _labels(tmp_path / "torch")
    assert sorted(onnx_labels) == sorted(torch_labels) and len(onnx_labels) == 2
    agreement = np.mean(np.concatenate([(onnx_labels[n] == torch_labels[n]).ravel() for n in onnx_labels]))
    assert agreement >= 0.999
    assert all(labels.shape == torch_labels[name].shape for name, labels in _labels(tmp_path / "tta").items())


@pytest.mark.parametrize("model, output_stride, message", [
    ("deeplabv3plus_tu-resnt50", 16, "error: timm has no model 'resnt50'; close names: resnet50,"),
    ("deeplabv3plus_tu-test_mambaout", 8, "error: timm's test_mambaout cannot work at output stride 8: it builds at "
                                          "32; pass --output_stride 32"),
])
def test_bad_names_and_strides_are_one_line_before_any_data(tmp_path, capsys, model, output_stride, message):
    assert _train(tmp_path / "nothing_here", tmp_path, model, output_stride) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(message)


def test_offline_default_weights_are_one_line_naming_the_file(voc, tmp_path):
    """A real process with HF_HUB_OFFLINE=1 and empty caches: no retries, no traceback."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--data_root", str(voc / "data"), "--model",
           "deeplabv3plus_tu-test_resnet", "--crop_size", "32", "--batch_size", "2", "--num_workers", "0",
           "--total_itrs", "1", "--checkpoint_dir", str(tmp_path / "ck"), "--results_dir", str(tmp_path / "res")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 1
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: tu-test_resnet: no pretrained weights: model.safetensors of "
                          f"timm/test_resnet.r160_in1k is not in the Hugging Face cache {tmp_path / 'hf' / 'hub'}")
    assert "--pretrained_backbone PATH" in err and "--no-pretrained_backbone" in err


def test_model_info_counts_a_timm_entry(capsys):
    assert model_info.main(["--model", "deeplabv3plus_tu-test_convnext", "--size", "64", "--no-speed"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == "deeplabv3plus_tu-test_convnext" and float(row[1]) > 0 and float(row[2]) > 0
