"""Checkpoint files that are not what they claim, disks that fill up mid-write, config values of the wrong type."""
import errno
import os
import pickle
import re
import threading
import time
import zipfile

import pytest
import torch

import main as train_script
import predict as predict_script
from network.weights import PretrainedWeightsError, read_state_dict
from utils.io import atomic
from utils.io.atomic import check_writable
from utils.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.io.locks import LockHeldError, file_lock

FOREIGN_FILES = {
    "text.pth": (lambda p: p.write_text("hello\n"), "is not a PyTorch file"),
    "empty.pth": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    "foreign.zip": (lambda p: zipfile.ZipFile(p, "w").writestr("x.txt", "hi"), "a zip archive but not a PyTorch file"),
    "list.pkl": (lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=4)), "is a plain pickle"),
    "truncated.pth": (lambda p: p.write_bytes(_torch_bytes(p)[:200]), "truncated or damaged zip"),
    "folder.pth": (lambda p: p.mkdir(), "is a folder, not a file"),
}


def _torch_bytes(path) -> bytes:
    torch.save({"w": torch.zeros(100)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("name", sorted(FOREIGN_FILES))
def test_foreign_checkpoint_files_are_named_in_one_line(tmp_path, name):
    write, expected = FOREIGN_FILES[name]
    path = tmp_path / name
    write(path)
    for read, error in ((load_checkpoint, CheckpointError), (read_state_dict, PretrainedWeightsError)):
        with pytest.raises(error, match=re.escape(expected)) as info:
            read(str(path))
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_legacy_torch_files_still_load(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert load_checkpoint(str(path))["w"].sum() == 2
    assert load_checkpoint(str(path), mmap=True)["w"].sum() == 2  # cannot be mapped: read whole


def test_main_evaluates_a_legacy_format_checkpoint(tmp_path, capsys):
    """main.py peeks at --ckpt's record memory-mapped; a file in the format before PyTorch 1.6 is read instead."""
    import main as train_script
    import network
    from tests.helpers import write_voc

    write_voc(tmp_path / "data")
    model = network.build_model("deeplabv3plus_mobilenet", 21, 16, pretrained_backbone=False)
    path = tmp_path / "legacy.pth"
    torch.save({"model_state": model.state_dict(), "model_name": "deeplabv3plus_mobilenet"}, path,
               _use_new_zipfile_serialization=False)
    assert train_script.main(["--data_root", str(tmp_path / "data"), "--test_only", "--ckpt", str(path),
                              "--num_workers", "0", "--results_dir", str(tmp_path / "res")]) == 0
    assert "Mean IoU" in capsys.readouterr().out


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_disk_that_fills_up_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    save_checkpoint({"cur_itrs": 1, "w": torch.zeros(10)}, str(path))
    monkeypatch.setattr(atomic, "open", lambda *a, **k: _FullDisk(open(*a, **k), room=1000), raising=False)
    with pytest.raises(CheckpointError, match="No space left on device; the previous latest.pth is unchanged; "
                                              "free space in"):
        save_checkpoint({"cur_itrs": 2, "w": torch.zeros(100000)}, str(path))
    assert load_checkpoint(str(path))["cur_itrs"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]  # no temporary file left


def test_writable_check_and_writer_lock(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError):  # even root cannot create a folder inside a file
        check_writable(str(blocker / "ck"))
    check_writable(str(tmp_path / "new" / "ck"))
    lock = str(tmp_path / "run.lock")
    held_by = "{owner} holds the lock {path}; wait for it"
    with file_lock(lock, held_by):
        with pytest.raises(LockHeldError, match=f"^process {os.getpid()} on .* holds the lock {lock}; wait for it$"):
            with file_lock(lock, held_by):
                pass
    with file_lock(lock, held_by):  # released when the first run ends
        pass


def _opened_by_this_process(path: str) -> int:
    """How many of this process's open files are the file at ``path``."""
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == path for fd in os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc to see the waiter's open file")
def test_a_lock_file_its_holder_removes_is_made_again_for_the_waiting_process(tmp_path):
    """main.py removes its checkpoints' lock file, while it holds it, when the run wrote nothing beside it: a
    process already waiting on that file then locks a new file at the same path, not the removed one (which a
    third process could never see, and so would not wait for)."""
    lock = str(tmp_path / "run.lock")
    found = []

    def waiter():
        with file_lock(lock):
            found.append(os.path.exists(lock))

    with file_lock(lock):
        thread = threading.Thread(target=waiter)
        thread.start()
        while _opened_by_this_process(lock) < 2:  # until the waiter has the file open and waits for its lock
            time.sleep(0.001)
        os.remove(lock)
    thread.join(timeout=30)
    assert found == [True]


@pytest.mark.parametrize("text, expected", [
    ("lr: fast", "lr: 'fast' is not a valid float"),
    ("batch_size: [1]", "batch_size: [1] must be a single value"),
    ("crop_size: 12.5", "crop_size: 12.5 is not a valid int"),
    ("batch_size: true", "batch_size: True is not a valid int"),
    ("continue_training: 'yes'", "continue_training: 'yes' is not true or false"),
    ("lrr: 1", "unknown options ['lrr']"),
    ("lr: null", "lr: null has no value; give one or leave the line out (default: 0.01)"),
    ("results_dir:", "results_dir: null has no value; give one or leave the line out (default: results)"),
    ("amp: on", "amp=True is not one of ['auto', 'off', 'bf16', 'fp16']"),
])
def test_config_values_of_the_wrong_type_are_one_line(tmp_path, capsys, text, expected):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text + "\n")
    with pytest.raises(SystemExit):
        train_script.parse_with_config(train_script.get_argparser(), ["--config", str(cfg)])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"config file {cfg}: {expected}")


def test_config_values_are_converted_as_flags_are(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("total_itrs: '5'\nvis_port: 8097\npretrained_backbone: false\nchannels_last: auto\n")
    opts = train_script.parse_with_config(train_script.get_argparser(), ["--config", str(cfg)])
    assert (opts.total_itrs, opts.vis_port, opts.pretrained_backbone, opts.channels_last) == (5, "8097", False, "auto")
    cfg.write_text("amp: off\nchannels_last: off\nnum_classes: null\nckpt:\nmax_image_pixels: null\n")  # YAML: off
    opts = train_script.parse_with_config(train_script.get_argparser(), ["--config", str(cfg)])  # is false
    got = (opts.amp, opts.channels_last, opts.num_classes, opts.ckpt, opts.max_image_pixels)
    assert got == ("off", False, None, None, 0)  # max_image_pixels: null is none, no limit
    cfg.write_text("output: [color, label]\ntta_scales: [1, 1.5]\n")
    opts = predict_script.parse_with_config(predict_script.get_argparser(),
                                            ["--config", str(cfg), "--input", "x", "--ckpt", "y"])
    assert opts.output == ["color", "label"] and opts.tta_scales == [1.0, 1.5]
