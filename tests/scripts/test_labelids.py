"""predict.py --output labelids: Cityscapes benchmark files scored by the official evaluator as main.py scores the
checkpoint, and label ids from a classes.yaml for your own classes."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

import main as train_script
import predict
from datasets.cityscapes import CITYSCAPES_CLASSES
from tests.scripts.test_predict import MODEL, ckpt, inputs  # noqa: F401  (fixtures)

evaluator = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

CITIES = {"train": ("aachen", "bremen"), "val": ("frankfurt", "lindau")}
HEIGHT, WIDTH = 64, 128
# Every label id the files hold, void ones (0-6) and classes without a train id (e.g. 9 parking) included.
LABEL_IDS = [c.id for c in CITYSCAPES_CLASSES if c.id >= 0]


def _write_cityscapes(root, frames_per_city: int = 2) -> None:
    """Cityscapes' layout with images whose colour follows the ground truth, so a few steps learn something."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (256, 3))
    for split, cities in CITIES.items():
        for city in cities:
            for frame in range(frames_per_city):
                stem = f"{city}_{frame:06d}_{19 + frame:06d}"
                ids = np.zeros((HEIGHT, WIDTH), np.uint8)
                ids[:, :] = rng.choice([7, 8])  # road or sidewalk below
                ids[: HEIGHT // 2] = 23  # sky above
                for _ in range(4):  # a few boxes of random ids, void ones among them
                    top, left = rng.integers(0, HEIGHT - 16), rng.integers(0, WIDTH - 16)
                    ids[top:top + 16, left:left + 16] = rng.choice(LABEL_IDS)
                noise = rng.integers(-20, 21, (HEIGHT, WIDTH, 3))
                image = np.clip(colours[ids] + noise, 0, 255).astype(np.uint8)
                for top, name, array in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelIds", ids)):
                    folder = os.path.join(root, top, split, city)
                    os.makedirs(folder, exist_ok=True)
                    Image.fromarray(array).save(os.path.join(folder, f"{stem}_{name}.png"))


def _official_class_average(data_root: str, predictions: str, monkeypatch) -> float:
    """The official evaluator's class-average IoU (what the benchmark ranks by), run as its main() runs it."""
    args = evaluator.args
    monkeypatch.setattr(args, "groundTruthSearch", os.path.join(data_root, "gtFine", "val", "*",
                                                                "*_gtFine_labelIds.png"))
    monkeypatch.setattr(args, "predictionPath", predictions)
    monkeypatch.setattr(args, "predictionWalk", None)
    monkeypatch.setattr(args, "evalInstLevelScore", False)  # the generated layout has no instanceIds files
    monkeypatch.setattr(args, "JSONOutput", False)
    monkeypatch.setattr(args, "quiet", True)
    ground_truth = sorted(glob.glob(args.groundTruthSearch))
    found = [evaluator.getPrediction(args, gt) for gt in ground_truth]  # exits on none or two matches
    return evaluator.evaluateImgLists(found, ground_truth, args)["averageScoreClasses"]


def test_labelids_scored_by_the_official_evaluator_equal_main_test_only(tmp_path, monkeypatch, capsys):
    data = str(tmp_path / "cityscapes")
    _write_cityscapes(data)
    common = ["--data_root", data, "--dataset", "cityscapes", "--model", MODEL, "--no-pretrained_backbone",
              "--num_workers", "0", "--amp", "off", "--checkpoint_dir", str(tmp_path / "ck"),
              "--results_dir", str(tmp_path / "res")]
    assert train_script.main([*common, "--total_itrs", "12", "--val_interval", "12", "--crop_size", "64",
                              "--batch_size", "4", "--lr", "0.05", "--bn_momentum", "0.1"]) == 0
    # latest_*, not best_*: best_* is only written when the validation scores above 0, which a 12-step model need
    # not do on every CPU's kernels; both hold the weights of iteration 12 when it does
    ckpt_path = str(tmp_path / "ck" / f"latest_{MODEL}_cityscapes_os16.pth")
    assert train_script.main([*common, "--test_only", "--ckpt", ckpt_path]) == 0
    with open(tmp_path / "res" / "metrics.json") as f:
        main_miou = json.load(f)["summary"]["Mean IoU"]

    out = tmp_path / "results"
    assert predict.main(["--input", os.path.join(data, "leftImg8bit", "val"), "--dataset", "cityscapes",
                         "--ckpt", ckpt_path, "--output", "labelids", "--amp", "off", "--num_workers", "0",
                         "--save_val_results_to", str(out)]) == 0
    written = sorted(os.path.relpath(p, out) for p in glob.glob(str(out / "**" / "*"), recursive=True)
                     if os.path.isfile(p))
    assert written == [f"{city}/{city}_{frame:06d}_{19 + frame:06d}_leftImg8bit_labelIds.png"
                       for city in CITIES["val"] for frame in range(2)]  # one PNG per image: no double match
    with Image.open(out / written[0]) as first:
        assert first.mode == "L" and first.size == (WIDTH, HEIGHT)
        assert set(np.unique(np.asarray(first))) <= {c.id for c in CITYSCAPES_CLASSES if c.train_id < 19}
    capsys.readouterr()
    assert 0 < main_miou < 1
    assert _official_class_average(data, str(out), monkeypatch) == pytest.approx(main_miou, abs=1e-4)


def test_labelids_of_your_own_classes_come_from_classes_yaml(tmp_path, inputs, ckpt, capsys):  # noqa: F811
    classes = tmp_path / "classes.yaml"
    classes.write_text("names: [background, crack, rust]\nids: [0, 40, 200]\n")
    base = ["--input", str(inputs / "b.JPG"), "--ckpt", ckpt[0], "--num_workers", "0", "--dataset", "folder",
            "--classes", str(classes)]
    assert predict.main([*base, "--output", "label", "labelids", "--save_val_results_to", str(tmp_path / "o")]) == 0
    labels = np.asarray(Image.open(tmp_path / "o" / "b_label.png"))
    ids = np.asarray(Image.open(tmp_path / "o" / "b_labelIds.png"))
    assert np.array_equal(ids, np.array([0, 40, 200], np.uint8)[labels])

    classes.write_text("names: [background, crack, rust]\n")
    assert predict.main([*base, "--output", "labelids", "--save_val_results_to", str(tmp_path / "p")]) == 1
    assert capsys.readouterr().err.strip() == (f"error: --output labelids needs the id of each class: add "
                                               f"`ids: [...]` (one per name) to {classes}")
    classes.write_text("names: [background, crack, rust]\nids: [0, 300]\n")
    assert predict.main([*base, "--output", "color", "--save_val_results_to", str(tmp_path / "q")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {classes}: `ids` must hold one whole number 0-255 per name (3)"


def test_labelids_without_ids_to_write_is_one_line(tmp_path, inputs, ckpt, capsys):  # noqa: F811
    base = ["--input", str(inputs / "b.JPG"), "--ckpt", ckpt[0], "--num_workers", "0", "--output", "labelids",
            "--save_val_results_to", str(tmp_path / "o")]
    assert predict.main(base) == 1
    assert capsys.readouterr().err.strip().startswith("error: --output labelids writes Cityscapes label ids")
    assert predict.main([*base, "--dataset", "cityscapes"]) == 1
    assert capsys.readouterr().err.strip().startswith("error: --dataset cityscapes names 19 classes but ")
