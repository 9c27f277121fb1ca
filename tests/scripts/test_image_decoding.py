"""What training reads, as a user meets it: an image over --max_image_pixels (utils/image_limit.py), files that cannot
be decoded (in DataLoader workers too), split and classes files that are not UTF-8: one line naming the file.
(--max_image_pixels in predict.py, the annotation import and INT8 calibration: in their own tests.)"""
import argparse
import os

import numpy as np
import pytest
import yaml
from PIL import Image, PngImagePlugin

import main as train_script
from tests.scripts.test_main import _args, voc  # noqa: F401 (voc is a fixture)
from utils.io.image_limit import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels, parse_max_image_pixels


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_training_refuses_an_image_over_the_limit_in_one_line(voc, capsys):
    """The VOC files are 48x40 = 1,920 pixels, just over a limit of 1,900."""
    assert train_script.main(_args(voc, "--total_itrs", "2", "--max_image_pixels", "1900")) == 1
    err = _error_line(capsys)
    assert "is 48x40 = 1,920 pixels, more than --max_image_pixels 1900 (a guard against decompression bombs)" in err
    assert os.path.join("VOC2012", "") in err  # names the file


def test_an_image_a_dataloader_worker_cannot_decode_is_one_line(voc, capsys):
    jpeg = voc / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages" / "t3.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:400])  # a copy cut short
    assert train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "4", "--num_workers", "1")) == 1
    assert _error_line(capsys).startswith(f"error: cannot decode image {jpeg}: ")  # not the worker's traceback


def test_a_png_whose_text_inflates_past_pil_s_limit_is_named(voc, capsys):
    """A 3 kB PNG whose compressed comment inflates to 3 MB: PIL refuses it with a ValueError, which named no file."""
    png = voc / "data" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "t2.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * 3_000_000, zip=True)
    with Image.open(png) as mask:
        mask.save(png, pnginfo=info)
    assert train_script.main(_args(voc, "--total_itrs", "2")) == 1
    assert _error_line(capsys).startswith(f"error: cannot decode mask {png}: Decompressed data too large")


def test_split_and_classes_files_that_are_not_utf8_are_named(tmp_path, capsys):
    """Written on Windows in its code page: one line naming the file, not a UnicodeDecodeError's words alone."""
    root = tmp_path / "mine"
    for folder in ("images", "masks", "splits"):
        (root / folder).mkdir(parents=True)
    for stem in ("caf\xe9", "b"):
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(np.zeros((40, 48), np.uint8)).save(root / "masks" / f"{stem}.png")
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["background", "fissure"]}), encoding="utf-8")
    for split in ("train", "val"):
        (root / "splits" / f"{split}.txt").write_bytes("caf\xe9\nb\n".encode("cp1252"))
    argv = ["--dataset", "folder", "--data_root", str(root), *_args(tmp_path, "--total_itrs", "2")[4:]]
    assert train_script.main(argv) == 1
    assert _error_line(capsys) == (f"error: split file {root / 'splits' / 'train.txt'} is not UTF-8 text (byte 0xe9 at "
                                   "offset 3); save it as UTF-8")
    for split in ("train", "val"):
        (root / "splits" / f"{split}.txt").write_text("caf\xe9\nb\n", encoding="utf-8")
    (root / "classes.yaml").write_bytes("names: [background, f\xeal\xe9e]\n".encode("cp1252"))
    assert train_script.main(argv) == 1
    assert _error_line(capsys) == (f"error: classes file {root / 'classes.yaml'} is not UTF-8 text (byte 0xea at "
                                   "offset 21); save it as UTF-8")


@pytest.mark.parametrize("text, limit", [("0", 0), ("none", 0), ("None", 0), ("179000000", 179_000_000),
                                         ("2_000_000_000", 2_000_000_000)])
def test_the_option_takes_a_count_or_none(text, limit):
    assert parse_max_image_pixels(text) == limit


@pytest.mark.parametrize("text", ["-1", "1e9", "many"])
def test_other_values_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="is not a pixel count"):
        parse_max_image_pixels(text)


def test_the_default_is_a_gigapixel_until_a_script_sets_it():
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 1_000_000_000
