"""Flags as a user meets them in main.py, predict.py and tools/model_info.py: an option this combination leaves
unused is one warning line, a value out of range or options that contradict each other one error line (exit
status 1) before any work, a device that is not there one line, and a checkpoint for another class count is
never evaluated or trained with a random classifier."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main as train_script
import network
import predict
from tests.conftest import ROOT
from tests.helpers import write_voc
from tools import model_info

MODEL = "deeplabv3plus_mobilenet"
NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, whatever the machine has


def _data_args(root):
    return ["--data_root", str(root / "data"), "--model", MODEL, "--num_workers", "0", "--amp", "off",
            "--checkpoint_dir", str(root / "ck"), "--results_dir", str(root / "res")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny VOC data and a checkpoint trained for one iteration by a real ``python main.py`` run given options that
    this run leaves unused; returns (root, checkpoint, the run's stderr)."""
    root = tmp_path_factory.mktemp("flags")
    write_voc(root / "data", names_train=["t0", "t1", "t2"], names_val=["v0"], size=(48, 40))
    unused = ["--step_size", "5", "--ohem_thresh", "0.5", "--dice_weight", "2", "--focal_gamma", "1", "--vis_port",
              "1", "--val_batch_size", "2", "--dist_timeout", "10", "--window", "64", "--gpu_id", "1"]
    run = subprocess.run([sys.executable, "main.py", *_data_args(root), "--no-pretrained_backbone", "--crop_size", "32",
                          "--batch_size", "2", "--total_itrs", "1", *unused], cwd=ROOT, env=NO_CUDA,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return root, str(root / "ck" / f"latest_{MODEL}_voc_os16.pth"), run.stderr


def test_a_training_run_warns_once_about_each_unused_option(trained):
    warnings = [line for line in trained[2].splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --step_size is not used: the poly schedule has no steps (--lr_policy step)",
        "warning: --ohem_thresh is not used: --loss_type is not ohem",
        "warning: --dice_weight is not used: --loss_type is not ce+dice",
        "warning: --focal_gamma is not used: --loss_type is not focal_loss",
        "warning: --window is not used: --eval_slide is off",
        "warning: --val_batch_size is not used: without --crop_val whole images, of many sizes, are validated one at "
        "a time",
        "warning: --vis_port is not used: --enable_vis is off",
        "warning: --gpu_id is not used: no CUDA device is visible (CUDA_VISIBLE_DEVICES=), so this run is on the CPU",
        "warning: --dist_timeout is not used: this is a single-process run (torchrun starts distributed ones)",
    ]


def test_test_only_warns_about_the_training_options_given(trained, capsys):
    root, ckpt, _ = trained
    assert train_script.main([*_data_args(root), "--test_only", "--ckpt", ckpt, "--lr", "0.1", "--batch_size", "2",
                              "--crop_size", "32", "--year", "2012", "--no-pretrained_backbone"]) == 0
    out, err = capsys.readouterr()
    assert "Mean IoU" in out
    assert err.splitlines() == ["warning: --lr, --batch_size, --checkpoint_dir are not used: --test_only trains "
                                "nothing",
                                "warning: --crop_size is not used: --test_only without --crop_val evaluates whole "
                                "images"]


@pytest.mark.parametrize("flags, message", [
    (["--test_only"], "--test_only evaluates --ckpt: give --ckpt CHECKPOINT (a model that was never trained scores "
                      "nothing)"),
    (["--continue_training"], "--continue_training resumes --ckpt: give --ckpt CHECKPOINT (e.g. a latest_*.pth), or "
                              "drop it to start anew"),
    (["--init_from", "a.pth", "--ckpt", "b.pth"], "--init_from and --ckpt both give the starting weights: keep --ckpt "
                                                  "to evaluate or resume a checkpoint, or --init_from to start a new "
                                                  "run from a file"),
    (["--device", "mps"], "--device mps: Apple's MPS is not supported (CUDA GPUs and CPUs are); use --device cpu"),
    (["--device", "cuda:3"], "--device cuda:3: choose the GPU with --gpu_id 3 (it sets CUDA_VISIBLE_DEVICES, as in "
                             "the original) and --device cuda"),
    (["--device", "tpu"], "--device 'tpu' is not one of auto, cpu, cuda"),
])
def test_main_refuses_options_it_cannot_honour_before_any_work(tmp_path, capsys, flags, message):
    assert train_script.main([*_data_args(tmp_path), *flags]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "res").exists() and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("script", ["main.py", "predict.py"])
def test_device_cuda_without_a_visible_gpu_is_one_line(tmp_path, script):
    extra = (["--input", str(tmp_path), "--ckpt", "x.pth", "--save_val_results_to", str(tmp_path / "out")]
             if script == "predict.py" else _data_args(tmp_path))
    run = subprocess.run([sys.executable, script, "--device", "cuda", *extra], cwd=ROOT, env=NO_CUDA,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("error: --device cuda: ") and "use --device cpu" in run.stderr


def _other_class_count_checkpoint(folder) -> str:
    path = str(folder / "cityscapes.pth")
    model = network.build_model(MODEL, 19, 16, pretrained_backbone=False)
    torch.save({"model_state": model.state_dict(), "model_name": MODEL}, path)
    return path


def test_a_checkpoint_for_another_class_count_is_not_evaluated_or_trained(trained, tmp_path, capsys):
    root, _, _ = trained
    ckpt = _other_class_count_checkpoint(tmp_path)
    fix = (f"the --dataset (and --data_root) it was trained on, or start a new run on these 21 classes from it with "
           f"--init_from {ckpt} (its classifier is then initialised, and the log says so)")
    results = tmp_path / "evaluation"
    assert train_script.main([*_data_args(root), "--results_dir", str(results), "--test_only", "--ckpt", ckpt]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == (f"error: checkpoint {ckpt} predicts 19 classes, but --dataset voc has 21; "
                                    f"evaluate it with {fix}")  # after the warning about --checkpoint_dir
    assert "Mean IoU" not in out and not (results / "metrics.json").exists()
    assert train_script.main([*_data_args(root), "--checkpoint_dir", str(tmp_path / "ck"), "--ckpt", ckpt,
                              "--crop_size", "32", "--batch_size", "2", "--total_itrs", "1"]) == 1
    assert capsys.readouterr().err == (f"error: checkpoint {ckpt} predicts 19 classes, but --dataset voc has 21; "
                                       f"use {fix}\n")
    assert not (tmp_path / "ck").exists()  # no checkpoint, and not the folder made for them


def test_init_from_another_class_count_trains_a_new_classifier_and_says_so(trained, tmp_path, capsys):
    root, _, _ = trained
    ckpt = _other_class_count_checkpoint(tmp_path)
    assert train_script.main([*_data_args(root), "--checkpoint_dir", str(tmp_path / "ck"), "--init_from", ckpt,
                              "--crop_size", "32", "--batch_size", "2", "--total_itrs", "1", "--val_interval",
                              "100"]) == 0
    assert f"--init_from {ckpt}: filled 354 of 356 tensors; initialised: classifier.classifier.3" in \
        capsys.readouterr().out


@pytest.fixture(scope="module")
def image_and_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    (folder / "in").mkdir()
    photo = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(photo).save(folder / "in" / "a.png")
    torch.manual_seed(0)
    torch.save({"model_state": network.build_model(MODEL, 3, 16, pretrained_backbone=False).state_dict(),
                "model_name": MODEL}, folder / "m.pth")
    return folder


def _predict(folder, *flags):
    return predict.main(["--input", str(folder / "in"), "--ckpt", str(folder / "m.pth"), "--save_val_results_to",
                         str(folder / "out"), "--num_workers", "0", *flags])


def test_predict_warns_once_about_each_unused_option(image_and_checkpoint, capsys):
    assert _predict(image_and_checkpoint, "--tta_scales", "1", "--no-tta_flip", "--window", "640", "--overlay_alpha",
                    "0.5", "--crop_size", "100", "--dataset", "voc", "--classes", "x.yaml", "--device", "cpu",
                    "--gpu_id", "1", "--output", "color") == 1  # x.yaml does not exist: the warnings come first
    assert capsys.readouterr().err.splitlines()[:-1] == [
        "warning: --tta_scales, --tta_flip are not used: --tta is off",
        "warning: --window is not used: --slide is off: only images over 4096x4096 pixels are predicted in windows",
        "warning: --overlay_alpha is not used: --output has no overlay",
        "warning: --crop_size is not used: --crop_val is off",
        "warning: --dataset is not used: --classes gives the classes' names, colours and ids",
        "warning: --gpu_id is not used: --device cpu runs on the CPU",
    ]
    assert _predict(image_and_checkpoint, "--tta", "--tta_scales", "1", "--overlay_alpha", "0.5", "--output",
                    "overlay") == 0
    assert "warning" not in capsys.readouterr().err and (image_and_checkpoint / "out" / "a_overlay.png").is_file()


def test_predict_refuses_an_overlay_opacity_outside_0_to_1_before_any_work(tmp_path, image_and_checkpoint, capsys):
    """Run as a user runs it (a subprocess, its exit status and its only line), then the other values in-process."""
    model = ["--input", str(image_and_checkpoint / "in"), "--ckpt", str(image_and_checkpoint / "m.pth"),
             "--save_val_results_to", str(tmp_path / "out"), "--output", "overlay"]
    run = subprocess.run([sys.executable, "predict.py", *model, "--overlay_alpha", "1.5"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == "error: --overlay_alpha must be between 0 and 1, not 1.5\n"
    for alpha in ("-0.1", "nan"):
        assert predict.main([*model, "--overlay_alpha", alpha]) == 1
        assert capsys.readouterr() == ("", f"error: --overlay_alpha must be between 0 and 1, not {float(alpha)}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device, message", [
    ("mps", "--device mps: Apple's MPS is not supported (CUDA GPUs and CPUs are); use --device cpu"),
    ("cuda:1", "--device cuda:1: choose the GPU with --gpu_id 1 (it sets CUDA_VISIBLE_DEVICES, as in the original) "
               "and --device cuda"),
])
def test_predict_and_model_info_refuse_devices_that_are_not_ours_in_one_line(image_and_checkpoint, capsys, device,
                                                                               message):
    assert _predict(image_and_checkpoint, "--device", device) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert model_info.main(["--model", MODEL, "--size", "64", "--device", device]) == 1
    assert capsys.readouterr() == ("", f"error: {message}\n")


def test_model_info_warns_about_speed_options_with_no_speed(capsys):
    assert model_info.main(["--model", MODEL, "--size", "64", "--no-speed", "--batch", "4", "--device", "cuda"]) == 0
    out, err = capsys.readouterr()
    assert err == "warning: --batch, --device are not used: --no-speed measures no memory and no speed\n"
    assert MODEL in out


def test_an_output_stride_that_hrnet_ignores_is_said(capsys):
    assert model_info.main(["--model", "deeplabv3plus_hrnetv2_32", "--size", "64", "--no-speed", "--output_stride",
                            "8"]) == 0
    assert capsys.readouterr().err == ("warning: --output_stride is not used: deeplabv3plus_hrnetv2_32 always works at "
                                       "stride 4\n")
