"""datasets/annotations: class order, splits, EXIF-turned images, and shapes a reader refuses."""
import base64
import io

import numpy as np
import pytest
from PIL import ExifTags, Image

from datasets import DatasetError
from datasets.annotations import LabelMap, Region
from datasets.annotations.classes import parse_class_list
from datasets.annotations.coco import mask_api, run_lengths
from datasets.annotations.folder_writer import split_stems
from datasets.annotations.images import open_file
from datasets.annotations.labelme import LabelMeShape, _parse_shape, draw_shape
from tests.helpers import coco_run_lengths


def test_classes_are_the_declared_labels_first_then_the_rest_by_name():
    found = {"zebra": "a.json", "ant": "b.json", "_background_": "a.json", "cat": "c.json", "__ignore__": "c.json"}
    assert LabelMap.build(found).names == ["background", "ant", "cat", "zebra"]
    assert LabelMap.build(found, declared=["zebra", "unused", "cat"]).names == ["background", "zebra", "cat", "ant"]
    given = LabelMap.build(found, given=["zebra", "cat", "ant", "bee"])
    assert given.names == ["background", "zebra", "cat", "ant", "bee"]
    assert [given.index(label) for label in ("_background_", "background", "__ignore__", "ant")] == [0, 0, 255, 3]


def test_paint_covers_in_order_and_fills_the_rest():
    left, right = np.zeros((2, 3), bool), np.zeros((2, 3), bool)
    left[:, :2], right[:, 1:] = True, True
    labels = LabelMap(["a", "b"], unknown_index=255)
    mask = labels.paint([Region("a", left), Region("b", right)], 3, 2, fill=255)
    assert mask.tolist() == [[1, 2, 2], [1, 2, 2]]
    assert labels.paint([Region("zzz", left)], 3, 2).tolist() == [[255, 255, 0], [255, 255, 0]]


def test_class_list_flag():
    assert parse_class_list("background, cat,dog") == ["cat", "dog"]
    for bad, message in (("cat,,dog", "separated by commas"), ("cat,cat", "more than once"),
                         ("cat,__ignore__", "not a class name")):
        with pytest.raises(ValueError, match=message):
            parse_class_list(bad)


def test_splits_are_seeded_and_never_empty():
    stems = [f"s{i}" for i in range(10)]
    train, val = split_stems(stems, 0.2, seed=3)
    assert len(val) == 2 and sorted(train + val) == sorted(stems)
    assert split_stems(stems, 0.2, seed=3) == (train, val) and split_stems(stems, 0.2, seed=4) != (train, val)
    assert [len(v) for _, v in (split_stems(stems[:2], 0.01, 0), split_stems(stems[:2], 0.99, 0))] == [1, 1]
    assert split_stems(["only"], 0.2, 0) == (["only"], ["only"])


def _rotated_jpeg(path):
    """A 40x20 JPEG whose EXIF says 'rotate 90 degrees clockwise to show': a viewer shows it 20x40."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)
    return path


def test_an_exif_rotated_photo_is_written_the_way_the_tool_showed_it(tmp_path):
    source = open_file(_rotated_jpeg(str(tmp_path / "photo.jpg")))
    source.match((20, 40))  # drawn on the upright photo
    assert source.size == (20, 40) and source.write(str(tmp_path / "out"), "photo") == "photo.png"
    assert Image.open(tmp_path / "out" / "photo.png").size == (20, 40)
    source.match((40, 20))  # a tool that ignored EXIF: the stored pixels, copied byte for byte
    assert source.write(str(tmp_path / "out"), "photo") == "photo.jpg"
    assert (tmp_path / "out" / "photo.jpg").read_bytes() == (tmp_path / "photo.jpg").read_bytes()
    with pytest.raises(DatasetError, match="annotations are for a 30x30 image but .*photo.jpg is 40x20"):
        source.match((30, 30))


def test_labelme_shapes_that_cannot_be_drawn_say_why():
    for raw, message in (({"label": "a", "points": [[0, 0]], "shape_type": "rectangle"}, "has 1 point; a rect"),
                         ({"label": "a", "points": [[0, "x"]]}, "not a list of \\[x, y\\] numbers"),
                         ({"label": "", "points": [[0, 0]] * 3}, "has no label"),
                         ({"label": "a", "points": [[0, 0]] * 3, "shape_type": "cuboid"}, "shape_type 'cuboid'"),
                         ({"label": "a", "points": [[0, 0], [1, 1]], "shape_type": "mask"}, "without its mask")):
        with pytest.raises(ValueError, match=message):
            _parse_shape(1, raw)
    assert _parse_shape(1, {"label": "a", "points": [[0, 0], [1, 0], [0, 1]], "shape_type": None}).kind == "polygon"
    with pytest.raises(ValueError, match="not a base64 image"):
        draw_shape(LabelMeShape(1, "a", "mask", [(0, 0), (1, 1)], "bm90IGFuIGltYWdl"), 4, 4)


def test_compressed_rle_strings_are_read_to_their_runs():
    """run_lengths guards pycocotools, which decodes a damaged string to arbitrary pixels without a word."""
    rng = np.random.default_rng(0)
    for trial in range(50):
        mask = (rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < trial / 50).astype(np.uint8)
        compressed = mask_api().encode(np.asfortranarray(mask))["counts"].decode()
        assert run_lengths(compressed) == coco_run_lengths(mask)
    with pytest.raises(ValueError, match="ends inside a number"):
        run_lengths("1o")  # 'o' (0x3f) says another group follows


def test_more_classes_than_8_bit_masks_hold_is_one_line():
    assert len(LabelMap([f"c{i}" for i in range(254)]).names) == 255  # 0..254: 255 stays "ignore"
    with pytest.raises(DatasetError, match="255 classes do not fit 8-bit masks.*at most 254 besides background"):
        LabelMap([f"c{i}" for i in range(255)])


def test_a_labelme_mask_below_or_right_of_the_image_is_outside_it_not_an_error():
    bitmap = Image.fromarray(np.full((20, 20), 255, np.uint8))
    buffer = io.BytesIO()
    bitmap.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    for corner in ([[45, 35], [64, 54]], [[30, 30], [49, 49]], [[-30, 2], [-11, 21]], [[38, 28], [57, 47]]):
        shape = LabelMeShape(1, "cat", "mask", corner, mask_data=data)
        pixels = draw_shape(shape, width=40, height=30)
        assert pixels.shape == (30, 40)
        assert pixels.sum() == (4 if corner[0] == [38, 28] else 0)
