"""A Ctrl-C or SIGTERM in the middle of the small tools (convert_weights, make_crack_dataset, make_geo_dataset,
check_precision) ends each in one line that says what was written, with 128 + the signal number, and never leaves
a half-written output in place of a complete one. The signals are real, sent by the process to itself at a chosen
point of the work."""
import os
import signal
import sys

import pytest
import torch

import datasets.cracks
import datasets.geo_demo
import datasets.utils
from tools import check_precision, convert_weights, make_crack_dataset, make_geo_dataset


def _signal_self(signum: int):
    """A stand-in for a step of the work that receives ``signum`` as it runs."""
    def step(*args, **kwargs):
        os.kill(os.getpid(), signum)
    return step


@pytest.fixture
def weights_file(tmp_path) -> str:
    path = str(tmp_path / "resnet50_imagenet.pth")
    torch.save(torch.nn.Conv2d(3, 4, 1).state_dict(), path)
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_converting_writes_nothing(weights_file, tmp_path, monkeypatch, capsys, signum):
    monkeypatch.setattr(convert_weights, "convert_state_dict", _signal_self(signum))
    out = tmp_path / "converted.pth"
    assert convert_weights.main([weights_file, str(out), "--format", "torchvision"]) == 128 + signum
    name = signal.Signals(signum).name
    assert capsys.readouterr().err == f"{name} received: stopped; nothing was written to {out}\n"
    assert sorted(os.listdir(tmp_path)) == ["resnet50_imagenet.pth"]


def test_a_stop_right_after_the_write_says_the_file_is_whole(weights_file, tmp_path, monkeypatch, capsys):
    real_save = convert_weights.save_checkpoint

    def save_then_stop(*args):
        real_save(*args)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(convert_weights, "save_checkpoint", save_then_stop)
    out = tmp_path / "converted.pth"
    assert convert_weights.main([weights_file, str(out), "--format", "torchvision"]) == 130
    assert capsys.readouterr().err == f"SIGINT received: stopped; {out} had been written in full\n"
    assert set(torch.load(out, weights_only=True)["state_dict"]) == {"weight", "bias"}


@pytest.mark.parametrize("tool, generator", [(make_crack_dataset, datasets.cracks),
                                             (make_geo_dataset, datasets.geo_demo)])
def test_a_stop_while_generating_keeps_the_complete_dataset_and_a_rerun_finishes(tool, generator, tmp_path,
                                                                                 monkeypatch, capsys):
    root = tmp_path / "data"
    small = ["--root", str(root), "--num_train", "2", "--num_val", "1", "--size", "32" if tool is make_crack_dataset
             else "64", *(["--scene_size", "64"] if tool is make_geo_dataset else [])]
    assert tool.main(small) == 0
    before = sorted(os.listdir(root))
    real_write = generator._write

    def write_some_then_stop(folder, *args):
        real_write(folder, *args)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(generator, "_write", write_some_then_stop)
    capsys.readouterr()
    bigger = [*small[:3], "3", *small[4:]]  # another dataset: it would replace the first
    assert tool.main(bigger) == 143
    assert capsys.readouterr().err == (f"SIGTERM received: stopped; {root} is as it was, and the part written so far "
                                       f"is in {root}.partial, which the next run replaces: run the same command "
                                       "again to finish it\n")
    assert sorted(os.listdir(root)) == before  # the complete first dataset, untouched
    monkeypatch.setattr(generator, "_write", real_write)
    assert tool.main(bigger) == 0 and "3 train" in capsys.readouterr().out
    assert not os.path.exists(f"{root}.partial")


@pytest.mark.parametrize("json_flag", [False, True])
def test_a_stop_while_checking_precision_is_one_line(tmp_path, monkeypatch, capsys, json_flag):
    out = tmp_path / "check.json"
    monkeypatch.setattr(check_precision, "make_demo_dataset", _signal_self(signal.SIGINT))
    monkeypatch.setattr(sys, "argv", ["check_precision.py", "--device", "cpu", "--settings", "fp32",
                                      *(["--json", str(out)] if json_flag else [])])
    assert check_precision.main() == 130
    said = f"nothing was written to {out}" if json_flag else "nothing more is measured"
    assert capsys.readouterr().err == f"SIGINT received: stopped; {said}\n"
    assert not out.exists()


def test_a_stop_while_the_new_dataset_replaces_the_old_waits_until_it_is_in_place(tmp_path, monkeypatch, capsys):
    """The old copy goes and the new one takes its place with the stop held back: never half of the old one."""
    root = tmp_path / "cracks"
    small = ["--root", str(root), "--num_train", "2", "--num_val", "1", "--size", "32"]
    assert make_crack_dataset.main(small) == 0
    real_remove = datasets.utils._remove_generated

    def stopped_while_removing(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        real_remove(*args)

    monkeypatch.setattr(datasets.utils, "_remove_generated", stopped_while_removing)
    capsys.readouterr()
    assert make_crack_dataset.main([*small[:3], "3", *small[4:]]) == 143
    assert capsys.readouterr().err == f"SIGTERM received: stopped; {root} is complete\n"
    assert len(os.listdir(root / "images")) == 4 and not os.path.exists(f"{root}.partial")


def test_a_mount_point_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    root = tmp_path / "mnt"
    small = ["--root", str(root), "--num_train", "2", "--num_val", "1", "--size", "32"]
    assert make_crack_dataset.main(small) == 0
    before = sorted(os.listdir(root))
    monkeypatch.setattr(datasets.utils.os.path, "ismount", lambda path: path == str(root))
    assert make_crack_dataset.main([*small[:5], "2"]) == 1  # another dataset would replace the folder's
    assert capsys.readouterr().err == (f"error: {root} is a mount point: the dataset is written beside its folder "
                                       "and renamed into place, which a mount point cannot be; give a folder inside "
                                       f"it, such as {root / 'data'}\n")
    assert sorted(os.listdir(root)) == before and not os.path.exists(f"{root}.partial")
