"""The original's checkpoints (best_score a NumPy float64, pickled by NumPy 2 or 1.x) through every entry point:
main.py --test_only / --continue_training / --init_from, predict.py and tools/convert_weights.py."""
import numpy as np
import pytest
import torch
from PIL import Image

import main as train_script
import network
import predict
from tests.helpers import write_original_checkpoint, write_voc
from tests.scripts.test_main import MODEL, _args, _ckpt
from tools import convert_weights

ORIGINAL_ITRS = 3


@pytest.fixture(scope="module", params=[False, True], ids=["numpy2_pickle", "numpy1_pickle"])
def original(request, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("original") / f"best_{MODEL}_voc_os16.pth"
    model = network.build_model(MODEL, 21, 16, pretrained_backbone=False)
    return write_original_checkpoint(str(path), model, ORIGINAL_ITRS, numpy1_pickle=request.param)


@pytest.fixture
def voc(tmp_path):
    write_voc(tmp_path / "data", names_train=["t0", "t1"], names_val=["v0"], size=(48, 40))
    return tmp_path


def test_test_only_evaluates_it(voc, original, capsys):
    assert train_script.main(_args(voc, "--test_only", "--ckpt", original)) == 0
    assert "Mean IoU" in capsys.readouterr().out


def test_continue_training_resumes_with_best_score_as_a_float(voc, original, capsys):
    assert train_script.main(_args(voc, "--ckpt", original, "--continue_training",
                                   "--total_itrs", str(ORIGINAL_ITRS + 1), "--val_interval", "100")) == 0
    out = capsys.readouterr().out
    assert f"restored from {original} at iteration {ORIGINAL_ITRS}" in out
    # its PolyLR state holds max_iters 30000: the --total_itrs given wins and is said; nothing else is recorded
    assert f"Resuming with this run's settings from iteration {ORIGINAL_ITRS + 1}: --total_itrs 30000 -> " \
           f"{ORIGINAL_ITRS + 1}\n" in out
    assert (f"note: {original} records no settings beyond its optimizer's and schedule's (--lr_policy, --total_itrs, "
            "--lr, --weight_decay), as the original's checkpoints: the others are this run's flags, else the "
            "defaults\n") in out
    saved = torch.load(_ckpt(voc), weights_only=True)  # no NumPy allowed: best_score is a Python float now
    assert saved["cur_itrs"] == saved["scheduler_state"]["last_epoch"] == ORIGINAL_ITRS + 1  # its schedule in step
    assert type(saved["best_score"]) is float and saved["best_score"] == 0.25


def test_init_from_fills_every_tensor(voc, original, capsys):
    assert train_script.main(_args(voc, "--init_from", original, "--total_itrs", "1", "--val_interval", "100")) == 0
    total = len(network.build_model(MODEL, 21, 16, pretrained_backbone=False).state_dict())
    assert f"filled {total} of {total} tensors" in capsys.readouterr().out


def test_predict_uses_it(tmp_path, original):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert predict.main(["--input", str(image.parent), "--ckpt", original, "--model", MODEL,
                         "--save_val_results_to", str(out), "--num_workers", "0"]) == 0
    assert (out / "a.png").is_file()


def test_convert_weights_rewrites_it_in_our_format(tmp_path, original):
    out = tmp_path / "ours.pth"
    assert convert_weights.main([original, str(out), "--model", MODEL]) == 0
    converted = torch.load(out, weights_only=True)["model_state"]
    source = torch.load(original, weights_only=False)["model_state"]  # a file this test wrote itself
    assert converted.keys() == source.keys() and all(torch.equal(converted[k], source[k]) for k in source)
