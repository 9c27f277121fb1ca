"""Class statistics from the masks alone: counts, load_target's encodings, the cache and its key, the binary
warning."""
import os

import numpy as np
import pytest
from PIL import Image

from datasets import Cityscapes, DatasetError, FolderSegmentation, VOCSegmentation, class_stats
from datasets.class_stats import ClassStats, background_only_warning, compute_class_stats, load_class_stats
from tests.helpers import write_voc

# Three 2x2 masks of classes background, crack, rust; the first is stored as RGB through the palette.
MASKS = [np.array([[0, 0], [1, 255]], np.uint8), np.array([[0, 2], [2, 2]], np.uint8), np.zeros((2, 2), np.uint8)]
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
EXPECTED = ClassStats(pixel_counts=[7, 1, 3], image_counts=[3, 1, 1], image_pixels=[11, 3, 4], num_images=3,
                      background_only_images=1)


def write_folder(root, masks=MASKS, names=("background", "crack", "rust"), rgb_first=True, split=None) -> str:
    """A folder dataset with these masks (and plain images); ``split`` names go to splits/train.txt."""
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    with open(os.path.join(root, "classes.yaml"), "w") as f:
        f.write(f"names: [{', '.join(names)}]\npalette: {PALETTE[:len(names)]}\n")
    for i, mask in enumerate(masks):
        Image.new("RGB", mask.shape[::-1]).save(os.path.join(root, "images", f"m{i}.png"))
        stored = np.asarray(PALETTE, np.uint8)[np.minimum(mask, 2)] if rgb_first and i == 0 else mask
        if rgb_first and i == 0:
            stored[mask == 255] = (0, 0, 0)  # an RGB mask has no void: the first mask's 255 becomes background
        Image.fromarray(stored).save(os.path.join(root, "masks", f"m{i}.png"))
    if split is not None:
        os.makedirs(os.path.join(root, "splits"), exist_ok=True)
        with open(os.path.join(root, "splits", "train.txt"), "w") as f:
            f.write("\n".join(split) + "\n")
    return str(root)


def test_counts_by_hand(tmp_path):
    ds = FolderSegmentation(write_folder(tmp_path, rgb_first=False))
    assert compute_class_stats(ds) == EXPECTED


def test_load_target_encodes_rgb_masks_without_reading_images(tmp_path):
    ds = FolderSegmentation(write_folder(tmp_path))
    os.remove(ds.images[0])  # masks alone
    assert ds.load_target(0).tolist() == [[0, 0], [1, 0]] and ds.load_target(0).dtype == np.uint8


def test_load_target_encodes_cityscapes_label_ids(tmp_path):
    for city in ("aachen", "bonn"):
        for top, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds")):
            os.makedirs(tmp_path / top / "train" / city)
        Image.new("RGB", (2, 1)).save(tmp_path / "leftImg8bit" / "train" / city / f"{city}_0_0_leftImg8bit.png")
        Image.fromarray(np.array([[7, 26]], np.uint8)).save(
            tmp_path / "gtFine" / "train" / city / f"{city}_0_0_gtFine_labelIds.png")
    ds = Cityscapes(str(tmp_path), split="train")
    assert ds.load_target(1).tolist() == [[0, 13]]  # road (7) -> 0, car (26) -> 13
    assert ds.split_file is None and len(ds.split_key()) == 64


def test_voc_split_key_follows_its_split_file(tmp_path):
    voc = write_voc(str(tmp_path))
    key = VOCSegmentation(str(tmp_path)).split_key()
    assert VOCSegmentation(str(tmp_path)).split_file.endswith(os.path.join("Segmentation", "train.txt"))
    assert VOCSegmentation(str(tmp_path), image_set="val").split_key() != key
    with open(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), "w") as f:
        f.write("a\nb\n")
    assert VOCSegmentation(str(tmp_path)).split_key() != key


def test_cache_is_reused_without_reading_masks(tmp_path, monkeypatch):
    root = write_folder(tmp_path)
    first = load_class_stats(FolderSegmentation(root))
    assert any(name.endswith(".json") for name in os.listdir(os.path.join(root, ".class_stats")))

    def no_reading(self, index):
        raise AssertionError("masks read despite the cache")

    monkeypatch.setattr(FolderSegmentation, "load_target", no_reading)
    assert load_class_stats(FolderSegmentation(root)) == first


def test_cache_is_recounted_when_the_split_file_changes(tmp_path):
    root = write_folder(tmp_path, split=["m0", "m1", "m2"])
    assert load_class_stats(FolderSegmentation(root)).num_images == 3
    with open(os.path.join(root, "splits", "train.txt"), "w") as f:
        f.write("m2\n")
    assert load_class_stats(FolderSegmentation(root)).pixel_counts == [4, 0, 0]


@pytest.mark.parametrize("split", [None, ["m0", "m1", "m2"]])
def test_cache_is_recounted_when_a_mask_changes(tmp_path, split):
    """Relabelled masks are counted again, with or without a split file that stays the same."""
    root = write_folder(tmp_path, rgb_first=False, split=split)
    assert load_class_stats(FolderSegmentation(root)) == EXPECTED
    Image.fromarray(np.ones((3, 2), np.uint8)).save(os.path.join(root, "masks", "m2.png"))
    Image.new("RGB", (2, 3)).save(os.path.join(root, "images", "m2.png"))
    assert load_class_stats(FolderSegmentation(root)).pixel_counts == [3, 7, 3]


def test_a_cache_that_cannot_be_written_is_one_note(tmp_path, monkeypatch):
    def refuse(path, sync=False):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(class_stats, "atomic_write", refuse)
    notes = []
    assert load_class_stats(FolderSegmentation(write_folder(tmp_path)), log=notes.append).num_images == 3
    assert notes == [f"note: cannot cache class statistics in {tmp_path / '.class_stats'} (Permission denied); "
                     "they are counted again on the next run"]


def test_read_only_folder_counts_without_caching(tmp_path):
    root = write_folder(tmp_path)
    notes = []
    os.chmod(root, 0o555)
    try:
        assert load_class_stats(FolderSegmentation(root), log=notes.append).num_images == 3
    finally:
        os.chmod(root, 0o755)
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    assert len(notes) == 1 and notes[0].startswith("note: cannot cache class statistics in")
    assert not os.path.exists(os.path.join(root, ".class_stats"))


def test_background_only_warning_for_mostly_empty_binary_masks():
    stats = ClassStats([1000, 10], [20, 1], [1010, 100], num_images=20, background_only_images=19)
    message = background_only_warning(stats, ("background", "crack"))
    assert message.startswith("warning: 19 of 20 training images have no crack pixel") and "\n" not in message
    assert "--class_weights auto" in message and "--loss_type ce+dice" in message
    assert background_only_warning(ClassStats([9, 1], [10, 2], [10, 2], 10, 9), ("bg", "crack")) is None  # 90%
    assert background_only_warning(EXPECTED, ("background", "crack", "rust")) is None
    already = background_only_warning(stats, ("background", "crack"), ["--loss_type ce+dice"])
    assert "--class_weights auto" not in already and "--loss_type ce+dice" in already
    assert background_only_warning(stats, ("background", "crack"), []).endswith(
        "; drop most empty images from the training split")
    none = ClassStats([1000, 0], [20, 0], [1000, 0], num_images=20, background_only_images=20)
    assert background_only_warning(none, ("background", "crack")) == (
        "warning: no training mask has a crack pixel (value 1), so the model cannot learn it; check the masks")


def test_a_bad_mask_stops_the_count_and_caches_nothing(tmp_path):
    root = write_folder(tmp_path, masks=MASKS + [np.full((2, 2), 7, np.uint8)], rgb_first=False)
    with pytest.raises(DatasetError, match=r"m3.png has values \[7\]"):
        load_class_stats(FolderSegmentation(root))
    assert not any(name.endswith(".json") for name in os.listdir(os.path.join(root, ".class_stats")))


def test_cache_is_recounted_when_classes_yaml_changes(tmp_path):
    root = write_folder(tmp_path, rgb_first=False)
    before = FolderSegmentation(root).split_key()
    with open(os.path.join(root, "classes.yaml"), "w") as f:  # the palette decodes RGB masks: new colours
        f.write("names: [background, crack, rust]\npalette: [[0, 0, 0], [0, 255, 0], [255, 0, 0]]\n")
    assert FolderSegmentation(root).split_key() != before
