"""main.py against a hostile user: bad numbers, unusable folders, a second run, a disk that fills up."""
import errno
import os
import signal
import subprocess
import sys

import pytest
import torch

import main as train_script
import network
from tests.conftest import ROOT
from tests.scripts.test_main import MODEL, _args, _ckpt, _validation_scoring, voc  # noqa: F401 (voc is a fixture)
from utils.io import checkpoint
from utils.io.locks import file_lock


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("flag, value", [("batch_size", "0"), ("crop_size", "-1"), ("total_itrs", "0"),
                                         ("val_interval", "0"), ("print_interval", "-5"), ("lr", "0"),
                                         ("lr", "nan"), ("num_workers", "-1")])
def test_non_positive_numbers_fail_before_any_work(tmp_path, capsys, flag, value):
    assert train_script.main(["--data_root", str(tmp_path / "none"), f"--{flag}", value]) == 1
    assert f"--{flag} must be" in _one_error_line(capsys)
    assert not (tmp_path / "none").exists()


def test_unusable_checkpoint_dir_fails_before_training(voc, capsys):
    blocker = voc / "a_file"
    blocker.write_text("")
    assert train_script.main(_args(voc, "--total_itrs", "1", "--checkpoint_dir", str(blocker / "ck"))) == 1
    assert "--checkpoint_dir" in _one_error_line(capsys)


def test_a_run_that_fails_before_writing_leaves_no_folders(voc, capsys, monkeypatch):
    """The output folders are made (and the checkpoints' lock taken) before the data is read; a run that fails
    there removes the folders it made, here by default and nested ones, and a folder that was there stays without
    the run's lock file."""
    monkeypatch.chdir(voc)
    args = ["--data_root", str(voc / "missing"), "--dataset", "voc", "--model", MODEL, "--no-pretrained_backbone"]
    model = voc / "data" / "model.pth"  # for --test_only, which reads the architecture from it before any folder
    torch.save({"model_state": network.build_model(MODEL, 21, 16, pretrained_backbone=False).state_dict()}, model)
    for extra in ([], ["--checkpoint_dir", "runs/a/ck", "--results_dir", "runs/a/res", "--tensorboard", "runs/tb"],
                  ["--checkpoint_dir", "runs/ck", "--results_dir", "runs/ck/res", "--tensorboard", "runs/ck/tb"],
                  ["--test_only", "--ckpt", str(model), "--results_dir", "runs/../eval"]):
        assert train_script.main(args + extra) == 1
        assert "does not exist" in _one_error_line(capsys)
        assert os.listdir(voc) == ["data"]
    (voc / "ck").mkdir()
    assert train_script.main(args + ["--checkpoint_dir", "ck"]) == 1
    assert "does not exist" in _one_error_line(capsys)
    assert sorted(os.listdir(voc)) == ["ck", "data"] and os.listdir(voc / "ck") == []


@pytest.mark.parametrize("flag", ["--checkpoint_dir", "--results_dir"])
def test_an_empty_folder_name_is_refused(voc, capsys, flag):
    assert train_script.main(_args(voc, "--total_itrs", "1", flag, "")) == 1
    assert _one_error_line(capsys) == f"error: {flag} is empty; give a folder (. for this one)"


def test_training_from_a_checkpoint_that_it_would_overwrite_is_refused(voc, capsys):
    """--ckpt without --continue_training, or --init_from, naming the latest_* or best_* file of this run (in any
    spelling): its first save would replace the weights it started from."""
    (voc / "ck").mkdir()
    best = _ckpt(voc, "best")
    torch.save({"model_state": network.build_model(MODEL, 21, 16, pretrained_backbone=False).state_dict()}, best)
    before = open(best, "rb").read()
    assert train_script.main(_args(voc, "--total_itrs", "1", "--ckpt", best)) == 1
    assert _one_error_line(capsys) == (
        f"error: --ckpt {best} is the best_* checkpoint that this run saves ({best}), so training would overwrite the "
        "weights it starts from; add --continue_training to go on training it, or copy it elsewhere first, or give "
        "another --checkpoint_dir")
    spelled = os.path.join(str(voc), "ck", ".", os.path.basename(best))
    assert train_script.main(_args(voc, "--total_itrs", "1", "--init_from", spelled)) == 1
    assert f"error: --init_from {spelled} is the best_* checkpoint that this run saves" in _one_error_line(capsys)
    assert open(best, "rb").read() == before and sorted(os.listdir(voc / "ck")) == [os.path.basename(best)]


def test_a_second_run_on_the_same_checkpoints_is_refused(voc, capsys):
    (voc / "ck").mkdir()
    with file_lock(str(voc / "ck" / ".lock_deeplabv3plus_mobilenet_voc_os16")):
        assert train_script.main(_args(voc, "--total_itrs", "1")) == 1
    assert "is already writing these checkpoints" in _one_error_line(capsys)


def test_a_folder_as_ckpt_is_named(voc, capsys):
    assert train_script.main(_args(voc, "--ckpt", str(voc), "--total_itrs", "1")) == 1
    assert "is a folder, not a file" in _one_error_line(capsys)


@pytest.mark.parametrize("second_score, written", [(0.25, "latest"), (0.75, "best")])
def test_disk_full_mid_run_keeps_the_last_checkpoint(voc, capsys, monkeypatch, second_score, written):
    """The save that fails is latest_* (no new best) or best_* (a new best is written there first); either way the
    line names it, and the checkpoints already on disk are unchanged."""
    _validation_scoring(monkeypatch, 0.5)
    assert train_script.main(_args(voc, "--total_itrs", "2", "--val_interval", "2")) == 0
    saved = {kind: torch.load(_ckpt(voc, kind), weights_only=True)["cur_itrs"] for kind in ("latest", "best")}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    _validation_scoring(monkeypatch, second_score)
    monkeypatch.setattr(checkpoint.torch, "save", full)
    capsys.readouterr()
    assert train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "2", "--ckpt", _ckpt(voc),
                                   "--continue_training")) == 1
    err = _one_error_line(capsys)
    assert f"cannot write checkpoint {_ckpt(voc, written)}: No space left on device; the previous {written}_" in err
    assert "is unchanged" in err
    monkeypatch.undo()
    assert {kind: torch.load(_ckpt(voc, kind), weights_only=True)["cur_itrs"] for kind in saved} == saved


def test_total_itrs_below_the_resumed_iteration_is_an_error(voc, capsys):
    assert train_script.main(_args(voc, "--total_itrs", "2", "--val_interval", "2")) == 0
    capsys.readouterr()
    assert train_script.main(_args(voc, "--total_itrs", "1", "--ckpt", _ckpt(voc), "--continue_training")) == 1
    assert "is at iteration 2, beyond --total_itrs 1" in _one_error_line(capsys)


def _killed_during_a_save(folder) -> str:
    """A process that dies by SIGKILL in the middle of writing a checkpoint (as the OOM killer ends one)."""
    code = ("import sys, time; from utils.io.atomic import atomic_write\n"
            "with atomic_write(sys.argv[1], sync=True) as f:\n"
            "    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder / "latest_deeplabv3plus_mobilenet_voc_os16.pth")],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    (left,) = [name for name in os.listdir(folder) if name.startswith(".tmp-")]
    return left


def test_temporaries_of_a_killed_save_are_removed_at_start_and_nothing_else(voc, capsys):
    """Under the checkpoints' lock no other process writes this run's checkpoints: what a killed save of them left
    is removed, with one line; another model's temporaries in the same folder are left alone."""
    folder = voc / "ck"
    folder.mkdir()
    orphan = _killed_during_a_save(folder)
    others = [".tmp-latest_deeplabv3plus_resnet50_voc_os16.pth-4242-0123abcd",  # another run's, maybe live
              ".tmp-notes.txt-1-0123abcd"]
    for name in others:
        (folder / name).write_bytes(b"")
    assert train_script.main(_args(voc, "--total_itrs", "1")) == 0
    out = capsys.readouterr().out
    assert f"Removed 1 temporary checkpoint file(s) that a killed save left in {folder} (0.0 MiB): {orphan}" in out
    assert not (folder / orphan).exists() and all((folder / name).exists() for name in others)
    assert not [name for name in os.listdir(folder) if name.startswith(".tmp-latest_deeplabv3plus_mobilenet")]
