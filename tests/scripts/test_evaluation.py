"""main.py's evaluation: the output files, the recipes (multi-scale, flip, sliding windows), TensorBoard, and
own-data training with the imbalance losses."""
import csv
import json
import os
import re

import numpy as np
import pytest
import torch

import main as train_script
import network
from datasets import FolderSegmentation, VOCSegmentation
from datasets.class_weights import resolve_class_weights
from datasets.cracks import make_crack_dataset
from tests.helpers import write_voc
from utils import ext_transforms as et
from utils.constants import IMAGENET_MEAN, IMAGENET_STD
from utils.loss import LOSS_TYPES, build_criterion
from utils.runtime.training import train_step

MODEL = "deeplabv3plus_mobilenet"
EXACT = ("--amp", "off", "--no-channels_last")  # the same arithmetic on every CPU kind


def _args(root, *extra):
    return ["--data_root", str(root / "data"), "--dataset", "voc", "--model", MODEL, "--no-pretrained_backbone",
            "--crop_size", "32", "--batch_size", "2", "--num_workers", "0", "--checkpoint_dir", str(root / "ck"),
            "--results_dir", str(root / "res"), "--print_interval", "1", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A VOC-layout folder and a checkpoint trained for 2 iterations on it."""
    root = tmp_path_factory.mktemp("eval")
    write_voc(root / "data", names_train=[f"t{i}" for i in range(4)], names_val=["v0", "v1", "v2"], size=(48, 40))
    assert train_script.main(_args(root, "--total_itrs", "2", "--val_interval", "2", "--results_dir",
                                   str(root / "train_res"), *EXACT)) == 0
    return root, str(root / "ck" / f"latest_{MODEL}_voc_os16.pth")


def _test_only(root, ckpt, results, *recipe):
    assert train_script.main(_args(root, "--test_only", "--ckpt", ckpt, "--results_dir", str(results),
                                   *EXACT, *recipe)) == 0
    with open(results / "metrics.json") as f:
        written = json.load(f)
    with open(results / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))
    return written, np.array([[int(v) for v in row[1:]] for row in rows[1:]])


def _direct_confusion(root, ckpt) -> np.ndarray:
    """The confusion matrix of a plain loop: model(image).argmax, as the original evaluated."""
    model = network.build_model(MODEL, 21, 16, pretrained_backbone=False)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model_state"])
    model.eval()
    transform = et.ExtCompose([et.ExtToTensor(), et.ExtNormalize(IMAGENET_MEAN, IMAGENET_STD)])
    hist = np.zeros((21, 21), np.int64)
    with torch.no_grad():
        for image, target in VOCSegmentation(str(root / "data"), image_set="val", transform=transform):
            pred, t = model(image[None]).argmax(1)[0].numpy(), target.numpy()
            keep = t < 21
            np.add.at(hist, (t[keep], pred[keep]), 1)
    return hist


def test_test_only_writes_metrics_and_the_confusion_matrix_of_a_plain_loop(trained, tmp_path, capsys):
    root, ckpt = trained
    written, counts = _test_only(root, ckpt, tmp_path / "res")
    assert np.array_equal(counts, _direct_confusion(root, ckpt))  # single scale: bit for bit the plain loop
    assert os.path.isfile(tmp_path / "res" / "confusion_matrix.png")
    printed = float(re.search(r"^Mean IoU: ([0-9.]+)$", capsys.readouterr().out, re.M).group(1))
    assert written["info"]["checkpoint"] == ckpt and written["info"]["iteration"] == 2  # the checkpoint's
    assert written["info"]["evaluation"] == {"scales": [1.0], "flip": False, "slide": False}
    computed = written["info"]["computed_with"]  # scores from two machines may differ: what computed these
    assert computed["amp"] == "off" and computed["channels_last"] is False and computed["device"].startswith("CPU ")
    assert "best_checkpoint" not in written["info"]  # --test_only saves nothing
    assert json.dumps(written).count("NaN") == 0
    assert printed == pytest.approx(written["results"]["Mean IoU"], abs=1e-6)


def test_training_validations_write_the_files_too(trained):
    root, ckpt = trained
    with open(root / "train_res" / "metrics.json") as f:
        info = json.load(f)["info"]
    assert info["iteration"] == 2
    # the scores belong to latest_*, and to best_* when this validation made it the best (a score above 0)
    best = root / "ck" / f"best_{MODEL}_voc_os16.pth"
    assert info["checkpoint"] == ckpt and info["best_checkpoint"] == (str(best) if best.exists() else None)


def test_multi_scale_flip_and_slide_recipes_are_deterministic_and_recorded(trained, tmp_path):
    root, ckpt = trained
    single, single_counts = _test_only(root, ckpt, tmp_path / "single")
    recipes = {"tta": ("--eval_scales", "0.75", "1.0", "1.25", "--eval_flip"),
               "slide": ("--eval_slide", "--window", "32", "--stride", "16")}
    for name, recipe in recipes.items():
        first, first_counts = _test_only(root, ckpt, tmp_path / f"{name}1", *recipe)
        again, again_counts = _test_only(root, ckpt, tmp_path / f"{name}2", *recipe)
        assert np.array_equal(first_counts, again_counts) and first["results"] == again["results"]
        assert first_counts.sum() == single_counts.sum()  # every labelled pixel once
    assert first["info"]["evaluation"] == {"scales": [1.0], "flip": False, "slide": True, "window": 32, "stride": 16}
    # a window as large as the image is a plain whole-image pass
    whole, whole_counts = _test_only(root, ckpt, tmp_path / "whole", "--eval_slide", "--window", "64",
                                     "--stride", "64")
    assert np.array_equal(whole_counts, single_counts)


def test_bad_recipe_options_are_one_line_errors(trained, capsys):
    root, ckpt = trained
    for flags, message in ((("--eval_scales", "0", "1"), "--eval_scales must all be positive"),
                           (("--eval_slide", "--window", "16", "--stride", "32"), "--stride 32 is larger than"),
                           (("--window", "0"), "--window must be positive"),
                           (("--eval_scales", "inf"), "--eval_scales must all be positive and finite"),
                           (("--eval_scales", "0.01"), "an image of 48x40 is smaller than this model takes at the smallest scale 0.01: at least 300x300 pixels")):
        assert train_script.main(_args(root, "--test_only", "--ckpt", ckpt, *flags)) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
        assert len(errors) == 1 and message in errors[0]  # the warnings: the training options _args gives


def test_tensorboard_logs_what_the_dashboard_shows(trained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = trained
    assert train_script.main(_args(root, "--total_itrs", "2", "--val_interval", "2", "--checkpoint_dir",
                                   str(tmp_path / "ck"), "--results_dir", str(tmp_path / "res"), "--tensorboard",
                                   str(tmp_path / "tb"), "--vis_num_samples", "1", *EXACT)) == 0
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert len(events.Scalars("train/Loss")) == 2
    assert {"train/LR", "train/Images/s", "val/Mean IoU", "val/Overall Acc"} <= set(tags["scalars"])
    assert {"val/Confusion Matrix", "val/Sample 0"} <= set(tags["images"])
    # the time report at the end of the run
    assert {"time/seconds/total", "time/seconds/warm-up steps", "time/seconds/evaluation"} <= set(tags["scalars"])
    assert any(tag.startswith("time/Report") for tag in tags["tensors"])


def test_binary_own_data_trains_with_ce_dice_and_auto_weights(tmp_path, capsys):
    root = tmp_path / "cracks"
    make_crack_dataset(str(root), num_train=8, num_val=2, size=64, seed=3)
    args = ["--dataset", "folder", "--data_root", str(root), "--model", MODEL, "--no-pretrained_backbone",
            "--crop_size", "64", "--batch_size", "4", "--num_workers", "0", "--checkpoint_dir", str(tmp_path / "ck"),
            "--results_dir", str(tmp_path / "res"), "--loss_type", "ce+dice", "--class_weights", "auto",
            "--total_itrs", "8", "--val_interval", "8", "--print_interval", "1", "--lr", "0.01",
            "--bn_momentum", "0.1", *EXACT]
    assert train_script.main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"class weights \(auto, median frequency\): background [0-9.]+, crack [0-9.]+", out)
    assert len(re.findall(r"Loss=([0-9.]+)", out)) == 8
    assert re.search(r"^Object IoU: [0-9.]+$", out, re.M) and re.search(r"^Object Dice: [0-9.]+$", out, re.M)
    assert os.path.isdir(root / ".class_stats")  # counted once, cached next to the data


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_each_loss_trains_the_model_on_crack_data(tmp_path, loss_type):
    """Training the real model with each loss (and auto class weights) on a fixed batch of the crack data
    lowers its cross-entropy on that batch (OHEM's own value follows the pixels it keeps, so it need not fall).
    Dice alone does not optimise cross-entropy: its own value must fall."""
    root = tmp_path / "cracks"
    make_crack_dataset(str(root), num_train=4, num_val=1, size=64, seed=4)
    dataset = FolderSegmentation(str(root), "train", et.ExtCompose([et.ExtToTensor(),
                                                                   et.ExtNormalize(IMAGENET_MEAN, IMAGENET_STD)]))
    images, labels = map(torch.stack, zip(*[dataset[i] for i in range(4)]))
    weights = resolve_class_weights("auto", dataset, log=lambda *a, **k: None)
    criterion = build_criterion(loss_type, class_weights=weights, ohem_min_kept=2000)
    torch.manual_seed(0)
    model = network.build_model(MODEL, 2, 16, pretrained_backbone=False).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def cross_entropy() -> float:
        with torch.no_grad():
            return build_criterion("cross_entropy")(model(images), labels).item()

    before = cross_entropy()
    losses = [train_step(model, optimizer, scaler, criterion, images, labels, torch.device("cpu"))
              for _ in range(12)]
    assert np.isfinite(losses).all()
    if loss_type == "dice":
        assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.01, losses
    else:
        assert cross_entropy() < 0.8 * before, losses
