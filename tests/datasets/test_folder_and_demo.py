"""Your own data (index and RGB masks, classes.yaml, the 0/255 mistake) and the demo generator."""
import os

import numpy as np
import pytest
from PIL import Image

from datasets import DatasetError, FolderSegmentation, VOCSegmentation, make_demo_dataset
from datasets.demo import DEMO_CLASSES


def _folder(root, masks, classes="names: [background, crack, rust]\npalette: [[0,0,0],[255,0,0],[0,255,0]]\n"):
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    with open(os.path.join(root, "classes.yaml"), "w") as f:
        f.write(classes)
    for i, mask in enumerate(masks):
        h, w = mask.shape[:2]
        Image.new("RGB", (w, h), (10, 20, 30)).save(os.path.join(root, "images", f"img{i}.JPG"))
        Image.fromarray(mask).save(os.path.join(root, "masks", f"img{i}.png"))
    return str(root)


def test_index_masks_and_class_count(tmp_path):
    root = _folder(tmp_path, [np.array([[0, 1], [2, 255]], np.uint8)])
    ds = FolderSegmentation(root, split="train")
    assert ds.num_classes == 3 and ds.class_names == ("background", "crack", "rust")
    _, mask = ds[0]
    assert np.asarray(mask).tolist() == [[0, 1], [2, 255]]


def test_16_bit_training_images_are_scaled_not_clipped(tmp_path):
    """A 16-bit image (microscopy, thermal, medical) keeps its contrast: 0..65535 maps to 0..255."""
    root = _folder(tmp_path, [np.zeros((2, 3), np.uint8)])
    deep = np.array([[0, 32768, 65535], [257, 1000, 65535]], np.uint16)
    os.remove(os.path.join(root, "images", "img0.JPG"))
    Image.fromarray(deep).save(os.path.join(root, "images", "img0.png"))
    image, _ = FolderSegmentation(root)[0]
    assert image.mode == "RGB"
    assert np.asarray(image)[..., 0].tolist() == [[0, 127, 255], [1, 3, 255]]


def test_rgb_masks_map_through_the_palette(tmp_path):
    rgb = np.array([[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [0, 0, 0]]], np.uint8)
    ds = FolderSegmentation(_folder(tmp_path, [rgb]))
    assert np.asarray(ds[0][1]).tolist() == [[0, 1], [2, 0]]


def test_rgb_mask_with_unknown_colour_is_an_error(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(DatasetError, match=r"colours \[\(1, 2, 3\)\]"):
        FolderSegmentation(_folder(tmp_path, [rgb]))[0]


def test_binary_mask_saved_as_0_255_is_detected(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = 255
    root = _folder(tmp_path, [mask], classes="names: [background, object]\n")
    with pytest.raises(DatasetError, match="binary mask saved as 0/255.*or, if 255 does mark pixels to ignore, say "
                                           "`ignore_index: 255` in classes.yaml"):
        FolderSegmentation(root)[0]


def test_a_classes_file_that_states_255_as_ignore_is_taken_at_its_word(tmp_path):
    """An image whose objects are all marked "ignore" (as an annotation import writes it) is no 0/255 mistake."""
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = 255
    root = _folder(tmp_path, [mask], classes="names: [background, object]\nignore_index: 255\n")
    _, target = FolderSegmentation(root)[0]
    assert set(np.unique(np.asarray(target)).tolist()) == {0, 255}


def test_split_files_and_missing_masks(tmp_path):
    root = _folder(tmp_path, [np.zeros((2, 2), np.uint8)] * 2)
    os.makedirs(os.path.join(root, "splits"))
    with open(os.path.join(root, "splits", "val.txt"), "w") as f:
        f.write("img1\n")
    assert len(FolderSegmentation(root, "val")) == 1 and len(FolderSegmentation(root, "train")) == 2
    os.remove(os.path.join(root, "masks", "img1.png"))
    with pytest.raises(DatasetError, match="no mask masks/img1.png"):
        FolderSegmentation(root, "val")


def test_missing_classes_file_and_unknown_keys(tmp_path):
    root = _folder(tmp_path, [np.zeros((2, 2), np.uint8)], classes="names: [a, b]\ncolors: []\n")
    with pytest.raises(DatasetError, match="unknown keys"):
        FolderSegmentation(root)
    for text, message in (("names: [a, b\n", r"classes file .*classes.yaml is not valid YAML \(while parsing"),
                          ("- a\n- b\n", r"classes file .*classes.yaml must hold `names: \[background, ...\]`")):
        with open(os.path.join(root, "classes.yaml"), "w") as f:
            f.write(text)
        with pytest.raises(DatasetError, match=message):
            FolderSegmentation(root)
    os.remove(os.path.join(root, "classes.yaml"))
    with pytest.raises(DatasetError, match="classes file .* does not exist"):
        FolderSegmentation(root)


def test_demo_dataset_is_deterministic_voc_layout(tmp_path):
    a = make_demo_dataset(str(tmp_path / "a"), num_train=6, num_val=2, seed=3)
    b = make_demo_dataset(str(tmp_path / "b"), num_train=6, num_val=2, seed=3)
    for sub in ("JPEGImages/demo_00001.jpg", "SegmentationClass/demo_00007.png"):
        with open(os.path.join(a, sub), "rb") as fa, open(os.path.join(b, sub), "rb") as fb:
            assert fa.read() == fb.read()
    ds = VOCSegmentation(str(tmp_path / "a"), image_set="train")
    assert len(ds) == 6 and len(VOCSegmentation(str(tmp_path / "a"), image_set="val")) == 2
    masks = np.concatenate([np.asarray(ds[i][1]).ravel() for i in range(6)])
    assert Image.open(ds.masks[0]).mode == "P"
    assert 255 in masks and 0 in masks
    assert set(np.unique(masks)) - {0, 255} <= set(DEMO_CLASSES)


def test_a_mask_without_an_image_is_reported_once(tmp_path, capsys):
    root = _folder(tmp_path, [np.zeros((2, 2), np.uint8)] * 2)
    os.rename(os.path.join(root, "images", "img1.JPG"), os.path.join(root, "images", "img1.jfif"))  # not an image here
    assert len(FolderSegmentation(root, "train")) == 1 and len(FolderSegmentation(root, "val")) == 1
    err = capsys.readouterr().err
    assert err.count("warning: 1 mask(s) in") == 1 and "(first: img1.png); they are not used" in err


def test_a_custom_ignore_index_becomes_255_for_training(tmp_path):
    """Transforms pad with 255 and every loss ignores 255: a mask's own void value is mapped to it."""
    root = _folder(tmp_path, [np.array([[0, 1], [2, 100]], np.uint8)],
                   classes="names: [background, crack, rust]\nignore_index: 100\n")
    _, mask = FolderSegmentation(root, split="train")[0]
    assert np.asarray(mask).tolist() == [[0, 1], [2, 255]]


def test_repeated_class_names_are_an_error(tmp_path):
    root = _folder(tmp_path, [np.zeros((2, 2), np.uint8)], classes="names: [background, crack, crack]\n")
    with pytest.raises(DatasetError, match=r"class names must be unique.*\['crack'\]"):
        FolderSegmentation(root, split="train")


@pytest.mark.parametrize("classes,message", [
    ("names: [background, crack, rust]\nignore_index: 1\n",
     "`ignore_index` 1 is the index of class 'crack', whose pixels would then be ignored; mark ignored pixels with a "
     "value no class has (3-255, 255 by default)"),
    ("names: [background, crack, rust]\nignore_index: 300\n", "`ignore_index` must be a whole number 0-255 (the mask "
     "value of pixels to ignore), not 300"),
    ("names: [background, crack, rust]\nignore_index: x\n", "`ignore_index` must be a whole number 0-255 (the "
     "mask value of pixels to ignore), not 'x'"),
    ("names: [" + ", ".join(f"c{i}" for i in range(256)) + "]\n",
     "256 class names, but masks hold 0-255 and 255 marks ignored pixels: at most 255 classes"),
])
def test_classes_files_that_would_lose_a_class_are_refused(tmp_path, classes, message):
    """A class whose index is the ignore value, or that no mask value can hold, would never be trained, yet would
    stand in every score table."""
    root = _folder(tmp_path, [np.zeros((2, 2), np.uint8)], classes=classes)
    with pytest.raises(DatasetError) as raised:
        FolderSegmentation(root)
    assert str(raised.value) == f"{os.path.join(root, 'classes.yaml')}: {message}"


def test_255_classes_and_a_quoted_ignore_index_are_fine(tmp_path):
    root = _folder(tmp_path, [np.array([[0, 254], [255, 1]], np.uint8)],
                   classes="names: [" + ", ".join(f"c{i}" for i in range(255)) + "]\nignore_index: '255'\n")
    dataset = FolderSegmentation(root)
    assert dataset.num_classes == 255 and np.asarray(dataset[0][1]).tolist() == [[0, 254], [255, 1]]


def test_two_classes_of_one_colour_cannot_read_an_rgb_mask(tmp_path):
    """Red would stand for one of the two classes alone; index masks do not depend on the colours."""
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    root = _folder(tmp_path, [rgb, np.array([[0, 1], [2, 0]], np.uint8)],
                   classes="names: [background, crack, rust]\npalette: [[0,0,0],[255,0,0],[255,0,0]]\n")
    with pytest.raises(DatasetError, match=r"^RGB mask .*img0.png cannot be read: classes 'crack' and 'rust' have the "
                                           r"same colour \[255, 0, 0\] in the palette of classes.yaml"):
        FolderSegmentation(root)[0]
    assert np.asarray(FolderSegmentation(root)[1][1]).tolist() == [[0, 1], [2, 0]]


def test_two_images_of_one_stem_and_split_lines_with_extensions_are_named(tmp_path):
    root = _folder(tmp_path, [np.zeros((2, 2), np.uint8)] * 2)
    os.makedirs(os.path.join(root, "splits"))
    for line, message in (("img0.JPG", r"split lists 'img0.JPG' but images/ has no such file \(a split lists file "
                                       r"stems, without extension\) \(1 missing\)"),
                          ("gone", r"split lists 'gone' but images/ has no such file \(1 missing\)")):
        with open(os.path.join(root, "splits", "val.txt"), "w") as f:
            f.write(line + "\n")
        with pytest.raises(DatasetError, match=message):
            FolderSegmentation(root, "val")
    Image.new("RGB", (2, 2)).save(os.path.join(root, "images", "img1.png"))
    with pytest.raises(DatasetError, match=r"img1.JPG and .*img1.png have the same stem 'img1': keep one of them"):
        FolderSegmentation(root, "train")


def test_a_glob_matches_image_extensions_in_any_case(tmp_path):
    """`--input "dir/*.jpg"` finds UPPER.JPG, as the folder walk does; the rest of the pattern keeps its case."""
    from datasets.image_files import find_images

    for name in ("a.jpg", "B.JPG", "c.Jpg", "d.png", "e.jpeg"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="JPEG" if "j" in name.lower() else "PNG")
    found = [rel for _, rel in find_images(str(tmp_path / "*.jpg"))]
    assert found == ["B.JPG", "a.jpg", "c.Jpg"]
    assert [rel for _, rel in find_images(str(tmp_path / "[aB].JPG"))] == ["B.JPG", "a.jpg"]
    assert [rel for _, rel in find_images(str(tmp_path / "*.jp*g"))] == ["a.jpg", "e.jpeg"]  # globbed: as given


def test_a_file_or_folder_whose_name_looks_like_a_glob_is_itself(tmp_path):
    """`--input "shots [1]"` is that folder when it exists, not a glob that matches nothing."""
    from datasets.image_files import find_images

    folder = tmp_path / "shots [1]"
    folder.mkdir()
    for name in ("a.png", "b*?.png"):
        Image.new("RGB", (4, 4)).save(folder / name)
    assert [rel for _, rel in find_images(str(folder))] == ["a.png", "b*?.png"]
    assert find_images(str(folder / "b*?.png")) == [(str(folder / "b*?.png"), "b*?.png")]
    assert [rel for _, rel in find_images(str(tmp_path / "shots*" / "a.png"))] == ["shots [1]/a.png"]  # a glob


def test_an_output_folder_is_left_out_of_a_search_only_below_its_root(tmp_path):
    from datasets.image_files import left_out_of_search

    (tmp_path / "data" / "results").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "data" / "a.png")
    (tmp_path / "link").symlink_to(tmp_path / "data" / "results")
    for spec, out, left_out in ((tmp_path / "data", tmp_path / "data" / "results", True),
                                (tmp_path / "data", tmp_path / "link", True),
                                (tmp_path / "data" / "**" / "*.png", tmp_path / "data" / "results", True),
                                (tmp_path / "data", tmp_path / "out", False),
                                (tmp_path / "data" / "a.png", tmp_path / "data" / "results", False)):
        assert left_out_of_search(str(spec), str(out)) == left_out, (spec, out)
