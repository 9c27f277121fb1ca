"""The synthetic crack dataset: your-own-data layout, a few per cent crack, deterministic, safe re-runs."""
import os

import numpy as np
import pytest

from datasets import DatasetError, FolderSegmentation
from datasets.cracks import STAMP_FILE, crack_statistics, make_crack_dataset
from tools.make_crack_dataset import main as cli

TINY = dict(num_train=10, num_val=4, size=96, seed=5)


def _files(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                found[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return found


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_crack_dataset(str(tmp_path_factory.mktemp("cracks") / "data"), **TINY)


def test_folder_layout_loads_as_binary_train_and_val(tiny):
    train, val = FolderSegmentation(tiny, "train"), FolderSegmentation(tiny, "val")
    assert (len(train), len(val)) == (10, 4) and train.class_names == ("background", "crack")
    image, mask = val[0]
    assert image.size == mask.size == (96, 96)
    masks = np.concatenate([np.asarray(train[i][1]).ravel() for i in range(len(train))])
    assert set(np.unique(masks)) == {0, 1}


def test_cracks_are_a_few_per_cent_and_most_images_have_one(tiny):
    share, empty, images = crack_statistics(tiny)
    assert 0.005 < share < 0.05
    assert images == 14 and empty < images // 2


def test_same_seed_same_bytes_other_seed_other_images(tiny, tmp_path):
    again = make_crack_dataset(str(tmp_path / "again"), **TINY)
    assert _files(again) == _files(tiny)
    other = make_crack_dataset(str(tmp_path / "other"), **{**TINY, "seed": 6})
    assert _files(other)["images/crack_00000.jpg"] != _files(tiny)["images/crack_00000.jpg"]


def test_a_complete_dataset_is_kept_and_a_changed_request_rebuilds_it(tmp_path):
    root = make_crack_dataset(str(tmp_path / "data"), **TINY)
    image = os.path.join(root, "images", "crack_00000.jpg")
    os.utime(image, (0, 0))
    make_crack_dataset(root, **TINY)
    assert os.stat(image).st_mtime == 0
    make_crack_dataset(root, **{**TINY, "num_val": 2})
    assert len(os.listdir(os.path.join(root, "images"))) == 12 and len(FolderSegmentation(root, "val")) == 2


def test_an_interrupted_run_is_rebuilt_and_never_looks_complete(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    root = str(tmp_path / "data")
    monkeypatch.setattr("datasets.cracks._sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_crack_dataset(root, **TINY)
    assert not os.path.exists(root) and os.path.isdir(root + ".partial")
    monkeypatch.undo()
    make_crack_dataset(root, **TINY)
    assert os.path.isfile(os.path.join(root, STAMP_FILE)) and not os.path.exists(root + ".partial")
    os.remove(os.path.join(root, "masks", "crack_00003.png"))  # a damaged copy is rebuilt too
    make_crack_dataset(root, **TINY)
    assert len(os.listdir(os.path.join(root, "masks"))) == 14


def test_a_folder_of_other_files_is_refused_not_deleted(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="did not write"):
        make_crack_dataset(str(tmp_path), **TINY)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_cli_prints_the_crack_share_and_one_line_errors(tmp_path, capsys):
    assert cli(["--root", str(tmp_path / "data"), "--num_train", "3", "--num_val", "1", "--size", "64"]) == 0
    assert "% of pixels crack" in capsys.readouterr().out
    assert cli(["--root", str(tmp_path / "data2"), "--num_val", "0"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_files_a_user_added_are_kept_and_never_deleted_by_a_rebuild(tmp_path):
    """The stamp lists what the generator wrote: a complete dataset keeps the user's additions beside it, and a
    rebuild (other settings) that would replace the folder refuses while a file of the user's is in it."""
    root = make_crack_dataset(str(tmp_path / "data"), **TINY)
    mine = os.path.join(root, "images", "my_photo.jpg")
    with open(mine, "w") as f:
        f.write("mine")
    make_crack_dataset(root, **TINY)  # complete: every listed file is there
    assert open(mine).read() == "mine"
    with pytest.raises(DatasetError, match=r"did not write \(1, such as .*my_photo.jpg\); .*move them out"):
        make_crack_dataset(root, **{**TINY, "num_val": 2})
    assert open(mine).read() == "mine" and len(os.listdir(os.path.join(root, "images"))) == 15
    os.remove(mine)
    make_crack_dataset(root, **{**TINY, "num_val": 2})
    assert len(os.listdir(os.path.join(root, "images"))) == 12


def test_a_stamp_without_a_file_list_is_rebuilt_unless_other_files_are_beside_it(tmp_path):
    """Data generated before the stamp listed its files: its image and mask folders are the generator's."""
    root = make_crack_dataset(str(tmp_path / "data"), **TINY)
    stamp = os.path.join(root, STAMP_FILE)
    with open(stamp) as f:
        first = f.readline()
    with open(stamp, "w") as f:
        f.write(first.replace(first.split()[0], "0"))  # an older version, without the list
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="notes.txt"):
        make_crack_dataset(root, **TINY)
    os.remove(tmp_path / "data" / "notes.txt")
    (tmp_path / "data" / "images" / "mine.jpg").write_text("mine")  # more files than it wrote: one is the user's
    with pytest.raises(DatasetError, match="images/"):
        make_crack_dataset(root, **TINY)
    os.remove(tmp_path / "data" / "images" / "mine.jpg")
    make_crack_dataset(root, **TINY)
    with open(stamp) as f:
        listed = f.read().splitlines()[1:]  # after the settings: every file written, the stamp aside
    assert len(listed) == 14 + 14 + 3 and {"classes.yaml", "splits/val.txt", "images/crack_00013.jpg"} <= set(listed)


def test_the_datasets_own_caches_do_not_block_a_rebuild(tmp_path):
    root = make_crack_dataset(str(tmp_path / "data"), **TINY)
    for cache in (".class_stats", ".band_stats"):
        os.makedirs(os.path.join(root, cache))
        (tmp_path / "data" / cache / "stats.json").write_text("{}")
    make_crack_dataset(root, **{**TINY, "num_val": 2})
    assert len(os.listdir(os.path.join(root, "images"))) == 12 and not os.path.exists(os.path.join(root, ".band_stats"))
