"""VOC and Cityscapes: layout, splits, decoding, and errors that name the file."""
import os

import numpy as np
import pytest
from PIL import Image

from datasets import Cityscapes, DatasetError, VOCSegmentation, voc_cmap
from datasets.cityscapes import CITYSCAPES_CLASSES, TRAIN_CLASS_NAMES
from datasets.voc import VOC_TARBALLS
from tests.helpers import write_voc


def test_voc_reads_split_and_pairs(tmp_path):
    write_voc(tmp_path)
    train = VOCSegmentation(str(tmp_path), image_set="train")
    assert len(train) == 4 and train.num_classes == 21
    image, mask = train[0]
    assert image.mode == "RGB" and image.size == mask.size == (40, 30)
    assert set(np.unique(np.asarray(mask))) <= {0, 1, 2, 255}


def test_voc_cmap_known_colours():
    cmap = voc_cmap()
    assert tuple(cmap[1]) == (128, 0, 0) and tuple(cmap[15]) == (192, 128, 128) and tuple(cmap[255]) == (224, 224, 192)


def test_decode_target_does_not_mutate():
    target = np.array([[0, 1], [255, 15]], dtype=np.uint8)
    before = target.copy()
    rgb = VOCSegmentation.decode_target(target)
    assert rgb.shape == (2, 2, 3) and tuple(rgb[1, 1]) == (192, 128, 128)
    assert np.array_equal(target, before)


def test_missing_root_says_download(tmp_path):
    with pytest.raises(DatasetError, match=r"VOCdevkit/VOC2012 does not exist; pass --download"):
        VOCSegmentation(str(tmp_path))


def test_missing_split_file_names_it(tmp_path):
    voc = write_voc(tmp_path)
    os.remove(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"))
    with pytest.raises(DatasetError, match="split file .*val.txt does not exist"):
        VOCSegmentation(str(tmp_path), image_set="val")


def test_empty_split_is_an_error(tmp_path):
    voc = write_voc(tmp_path)
    open(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), "w").close()
    with pytest.raises(DatasetError, match="lists no samples"):
        VOCSegmentation(str(tmp_path))


def test_corrupt_image_names_the_file(tmp_path):
    voc = write_voc(tmp_path)
    path = os.path.join(voc, "JPEGImages", "a.jpg")
    with open(path, "rb") as f:
        head = f.read(200)
    with open(path, "wb") as f:
        f.write(head)
    with pytest.raises(DatasetError, match="cannot decode image .*a.jpg"):
        VOCSegmentation(str(tmp_path))[0]


def test_size_mismatch_names_both(tmp_path):
    voc = write_voc(tmp_path)
    Image.new("L", (10, 10)).save(os.path.join(voc, "SegmentationClass", "a.png"))
    with pytest.raises(DatasetError, match=r"mask .*a.png is 10x10 but image .*a.jpg is 40x30"):
        VOCSegmentation(str(tmp_path))[0]


def test_bad_mask_values_name_file_and_values(tmp_path):
    voc = write_voc(tmp_path)
    mask = np.zeros((30, 40), np.uint8)
    mask[5, 5] = 77
    Image.fromarray(mask).save(os.path.join(voc, "SegmentationClass", "a.png"))
    with pytest.raises(DatasetError, match=r"a.png has values \[77\]"):
        VOCSegmentation(str(tmp_path))[0]


def test_aug_split_is_derived_or_read_from_train_aug_and_a_missing_folder_explained(tmp_path, capsys):
    voc = write_voc(tmp_path)
    with pytest.raises(DatasetError, match="SegmentationClassAug does not exist"):
        VOCSegmentation(str(tmp_path), year="2012_aug")
    aug = os.path.join(voc, "SegmentationClassAug")
    os.makedirs(aug)
    for name in ("a", "b", "e", "f", "g"):  # e and f are val: held out of train
        Image.new("L", (40, 30)).save(os.path.join(aug, name + ".png"))
    Image.new("RGB", (40, 30)).save(os.path.join(voc, "JPEGImages", "g.jpg"))  # SBD names are all VOC2012 images
    train = VOCSegmentation(str(tmp_path), year="2012_aug", image_set="train")
    assert [os.path.basename(p) for p in train.masks] == ["a.png", "b.png", "g.png"]
    assert all("SegmentationClassAug" in p for p in train.masks)
    assert len(VOCSegmentation(str(tmp_path), year="2012_aug", image_set="val")) == 2
    with open(os.path.join(str(tmp_path), "train_aug.txt"), "w") as f:  # where the original reads its list
        f.write("b\ng\ne\n")
    capsys.readouterr()
    train = VOCSegmentation(str(tmp_path), year="2012_aug", image_set="train")
    assert [os.path.basename(p) for p in train.masks] == ["b.png", "g.png", "e.png"]
    assert train.split_file == os.path.join(str(tmp_path), "train_aug.txt")
    assert capsys.readouterr().err == (f"warning: {train.split_file} lists 1 name(s) of the VOC2012 val split (such "
                                       "as e): they are trained on and validated on\n")


def _write_cityscapes(root):
    img_dir = os.path.join(root, "leftImg8bit", "train", "aachen")
    gt_dir = os.path.join(root, "gtFine", "train", "aachen")
    os.makedirs(img_dir)
    os.makedirs(gt_dir)
    Image.new("RGB", (8, 4)).save(os.path.join(img_dir, "aachen_000000_000019_leftImg8bit.png"))
    ids = np.array([[7, 8, 26, 0], [1, 33, 24, 11]] * 2, dtype=np.uint8)
    Image.fromarray(ids).resize((8, 4), Image.NEAREST).save(
        os.path.join(gt_dir, "aachen_000000_000019_gtFine_labelIds.png"))


def test_cityscapes_encodes_ids_to_train_ids(tmp_path):
    _write_cityscapes(str(tmp_path))
    ds = Cityscapes(str(tmp_path), split="train")
    assert ds.num_classes == 19 and TRAIN_CLASS_NAMES[0] == "road"
    _, mask = ds[0]
    values = np.asarray(mask)
    assert values[0, 0] == 0 and values[0, 2] == 1  # road (7) -> 0, sidewalk (8) -> 1
    encoded = Cityscapes.encode_target(np.array([7, 8, 26, 0, 1, 33, 24, 11]))
    assert encoded.tolist() == [0, 1, 13, 255, 255, 18, 11, 2]


def test_cityscapes_decode_does_not_mutate():
    target = np.array([[0, 255]], dtype=np.uint8)
    rgb = Cityscapes.decode_target(target)
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 0)
    assert target[0, 1] == 255


def test_cityscapes_missing_folder_says_what_to_get(tmp_path):
    with pytest.raises(DatasetError, match="leftImg8bit_trainvaltest.zip"):
        Cityscapes(str(tmp_path))


def test_a_split_without_masks_or_images_fails_when_built(tmp_path):
    """VOC's test split has no masks: the original scored it as NaN; a missing file should not wait for training."""
    voc = write_voc(tmp_path)
    with open(os.path.join(voc, "ImageSets", "Segmentation", "test.txt"), "w") as f:
        f.write("a\nx\n")
    Image.new("RGB", (40, 30)).save(os.path.join(voc, "JPEGImages", "x.jpg"))
    with pytest.raises(DatasetError, match=r"mask .*x\.png does not exist .* 1 of 2 samples have no mask"):
        VOCSegmentation(str(tmp_path), image_set="test")
    os.remove(os.path.join(voc, "JPEGImages", "b.jpg"))
    with pytest.raises(DatasetError, match=r"image .*b\.jpg does not exist .* 1 of 4 samples have no image"):
        VOCSegmentation(str(tmp_path), image_set="train")


def test_cityscapes_without_gt_fine_names_the_folder(tmp_path):
    os.makedirs(tmp_path / "leftImg8bit" / "train" / "aachen")
    with pytest.raises(DatasetError, match=r"gtFine.train does not exist; download .*gtFine_trainvaltest\.zip"):
        Cityscapes(str(tmp_path), split="train")


def test_the_voc_tarballs_and_cityscapes_table_are_torchvision_s():
    """Written out in datasets/ so that importing them needs no torchvision; the installed one agrees."""
    voc = pytest.importorskip("torchvision.datasets.voc")
    for year, source in VOC_TARBALLS.items():
        theirs = voc.DATASET_YEAR_DICT[year]
        assert (source["url"], source["md5"], source["base_dir"]) == (theirs["url"], theirs["md5"], theirs["base_dir"])
    cityscapes = pytest.importorskip("torchvision.datasets").Cityscapes
    assert [tuple(c) for c in CITYSCAPES_CLASSES] == [tuple(c) for c in cityscapes.classes]
