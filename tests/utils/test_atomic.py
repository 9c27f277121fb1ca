"""Temporary files of atomic writes and staging folders: a live writer's are kept, a killed writer's are removed
whatever its process id; write errors say what is in the way."""
import errno
import os
import platform
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from utils.io.atomic import (STAGING_LOCK, atomic_folder, atomic_link, atomic_write, remove_orphaned_temporaries,
                             removed_if_left_empty, require_writable, write_advice)
from utils.io.checkpoint import CheckpointError, save_checkpoint

WRITER = ("import sys, time; from utils.io.atomic import atomic_write\n"
          "with atomic_write(sys.argv[1]) as f:\n"
          "    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(120)\n")


def _writer(target) -> subprocess.Popen:
    """A real process in the middle of an atomic write of ``target``."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    return child


def _temporaries(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith(".tmp-"))


def test_a_live_writer_s_temporary_is_kept_and_a_killed_one_s_removed_whatever_its_pid(tmp_path):
    target = tmp_path / "x.png"
    child = _writer(target)
    try:
        (live,) = _temporaries(tmp_path)
        assert remove_orphaned_temporaries(str(tmp_path)) == []  # another process is writing it
        assert _temporaries(tmp_path) == [live]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # In a container every run may be PID 1: the dead writer's file may carry the PID of the run now cleaning up.
    same_pid = live.replace(f"-{child.pid}-", f"-{os.getpid()}-")
    os.rename(tmp_path / live, tmp_path / same_pid)
    assert remove_orphaned_temporaries(str(tmp_path)) == [(str(tmp_path / same_pid), 4096)]
    assert os.listdir(tmp_path) == []


def test_this_process_s_own_write_in_progress_is_kept_and_then_completes(tmp_path):
    (tmp_path / ".tmp-notes.txt").write_text("a user's file that only looks like ours")
    with atomic_write(str(tmp_path / "x.bin")) as f:
        f.write(b"data")
        assert remove_orphaned_temporaries(str(tmp_path)) == []
    assert (tmp_path / "x.bin").read_bytes() == b"data"
    assert sorted(os.listdir(tmp_path)) == [".tmp-notes.txt", "x.bin"]


def test_names_limit_the_removal_to_those_targets(tmp_path):
    for target in ("a.pth", "b.pth"):
        child = _writer(tmp_path / target)
        child.send_signal(signal.SIGKILL)
        child.wait()
    (removed, _), = remove_orphaned_temporaries(str(tmp_path), ["a.pth"])
    assert os.path.basename(removed).startswith(".tmp-a.pth-")
    assert [name[:11] for name in _temporaries(tmp_path)] == [".tmp-b.pth-"]


def test_a_name_as_long_as_the_file_system_takes_is_written_and_its_killed_temporary_found(tmp_path):
    """A temporary's name adds about 20 characters to its target's: for a target of 250 (a photo's long name plus
    _overlay.png) it would pass the 255 a file name may have, and the write failed."""
    name = "ab" + "é" * 120 + "_overlay.png"  # 254 bytes in UTF-8: a cut at 233 bytes would split an é
    assert len(os.fsencode(name)) == 254
    with atomic_write(str(tmp_path / name)) as f:
        f.write(b"data")
    assert (tmp_path / name).read_bytes() == b"data" and _temporaries(tmp_path) == []
    child = _writer(tmp_path / name)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (left,) = _temporaries(tmp_path)
    assert len(os.fsencode(left)) <= 255 and left.encode("utf-8")  # whole characters: still UTF-8
    assert remove_orphaned_temporaries(str(tmp_path), ["other.png"]) == []
    assert [path for path, _ in remove_orphaned_temporaries(str(tmp_path), [name])] == [str(tmp_path / left)]


FOLDER_MAKER = ("import sys, time; from utils.io.atomic import atomic_folder\n"
                "with atomic_folder(sys.argv[1]) as staging:\n"
                "    open(staging + '/a.png', 'wb').write(b'x' * 1000)\n"
                "    print('filling', flush=True); time.sleep(120)\n")


def test_a_killed_atomic_folder_s_staging_folder_is_removed_and_a_live_one_kept(tmp_path):
    """Like the files: the staging folder's lock file is free once its maker is gone, whatever its pid; a folder
    that only looks like one (no lock file) and this process's own staging folder stay."""
    child = subprocess.Popen([sys.executable, "-c", FOLDER_MAKER, str(tmp_path / "out")], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "filling"
        (live,) = _temporaries(tmp_path)
        assert remove_orphaned_temporaries(str(tmp_path)) == []
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (tmp_path / ".tmp-out-1-0123abcd").mkdir()  # named like a staging folder, without the lock file
    with atomic_folder(str(tmp_path / "mine")) as staging:
        holder = f"process {child.pid} on {platform.node()}"  # what the lock file says, for people and cleaners
        assert remove_orphaned_temporaries(str(tmp_path)) == [(str(tmp_path / live), 1000 + len(holder))]
        assert os.path.isdir(staging)
    assert _temporaries(tmp_path) == [".tmp-out-1-0123abcd"]
    assert sorted(os.listdir(tmp_path / "mine")) == []  # the lock file does not come along


def test_a_dead_staging_folder_of_another_machine_is_left_alone(tmp_path):
    """On a network file system each machine may keep its own locks: a free lock there says nothing."""
    staging = tmp_path / ".tmp-out-7-0123abcd"
    staging.mkdir()
    (staging / STAGING_LOCK).write_text("process 7 on another-machine")
    assert remove_orphaned_temporaries(str(tmp_path)) == [] and staging.is_dir()
    here = f"process 7 on {platform.node()}"
    (staging / STAGING_LOCK).write_text(here)
    assert remove_orphaned_temporaries(str(tmp_path), ["out"]) == [(str(staging), len(here))]


def test_write_errors_name_their_cause(tmp_path):
    folder = str(tmp_path)
    in_the_way = tmp_path / "x.png"
    in_the_way.mkdir()
    with pytest.raises(OSError) as replaced:
        with atomic_write(str(in_the_way)) as f:
            f.write(b"png")
    assert replaced.value.errno == errno.EISDIR and _temporaries(tmp_path) == []
    assert write_advice(replaced.value, folder) == (f"a folder is in the way at {in_the_way}: move or rename it, or "
                                                    "choose another folder")
    (tmp_path / "sub").write_text("")
    with pytest.raises(OSError) as made:
        with atomic_write(str(tmp_path / "sub" / "y.png")):
            pass
    assert made.value.errno == errno.EEXIST
    assert write_advice(made.value, folder).startswith(f"a file is in the way at {tmp_path / 'sub'}, where a folder")
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "deeper")  # a link to a folder not made (or unmounted)
    with pytest.raises(OSError) as linked:
        with atomic_write(str(tmp_path / "link" / "y.png")):
            pass
    assert write_advice(linked.value, folder) == (f"{tmp_path / 'link'} is a link to {tmp_path / 'gone' / 'deeper'}, "
                                                  "which does not exist: create that folder, or choose another folder")
    with pytest.raises(OSError) as long_name:
        with atomic_write(str(tmp_path / ("n" * 300 + ".png"))):
            pass
    assert write_advice(long_name.value, folder).startswith("a name is too long for the file system")
    expected = {errno.ENOSPC: f"free space in {folder} or choose another folder",
                errno.EDQUOT: f"free space in {folder} (your disk quota is used up) or choose another folder",
                errno.EACCES: f"{folder} is not writable for you: fix its permissions or choose another folder",
                errno.EROFS: f"{folder} is on a read-only file system: choose another folder"}
    for code, advice in expected.items():  # disks and permissions a test cannot make: the errors they raise
        assert write_advice(OSError(code, os.strerror(code)), folder) == advice
    unknown = OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/proc/xx")  # /proc takes no new folder
    assert write_advice(unknown, "/proc/xx") == "check /proc/xx, or choose another folder"
    assert write_advice(unknown, "/proc") == "check /proc/xx and /proc, or choose another folder"
    with pytest.raises(ValueError, match=r"^--save_val_results_to is empty; give a folder \(\. for this one\)$"):
        require_writable("", "--save_val_results_to")


def test_a_folder_in_the_way_of_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "latest.pth"
    path.mkdir()
    with pytest.raises(CheckpointError, match=f"Is a directory; no file was left behind; a folder is in the way at "
                                              f"{path}"):
        save_checkpoint({"w": torch.zeros(2)}, str(path))


@pytest.mark.parametrize("links", [True, False])
def test_a_linked_file_is_a_second_name_until_its_source_is_written_again(tmp_path, monkeypatch, links):
    """atomic_link: a hard link renamed into place (no byte written again), or where links fail (FAT, some network
    shares) a copy; either way the target keeps those bytes when its source is later replaced by atomic_write."""
    source, target = tmp_path / "latest.pth", tmp_path / "best.pth"
    target.write_bytes(b"an older best")
    with atomic_write(str(source)) as f:
        f.write(b"weights of iteration 2")
    if not links:
        def no_links(*args):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_links)
    atomic_link(str(source), str(target))
    assert target.read_bytes() == b"weights of iteration 2" and os.path.samefile(source, target) == links
    atomic_link(str(source), str(target))  # already one file: nothing changes, nothing is left behind
    assert _temporaries(tmp_path) == [] and target.read_bytes() == b"weights of iteration 2"
    with atomic_write(str(source)) as f:
        f.write(b"weights of iteration 4")
    assert target.read_bytes() == b"weights of iteration 2" and not os.path.samefile(source, target)


def test_folders_made_for_a_run_go_when_it_leaves_them_empty(tmp_path):
    """Of the folders on the way to each output folder, those made during the block and left empty go (the deepest
    first, even when the block fails); those written in, and those that were there, stay."""
    (tmp_path / "there").mkdir()
    outputs = [tmp_path / "a" / "b" / "empty", tmp_path / "a" / "written", tmp_path / "there" / "x" / "y"]
    with pytest.raises(KeyError):
        with removed_if_left_empty(str(path) for path in outputs):
            for path in outputs:
                require_writable(str(path), "--flag")
            (outputs[1] / "metrics.json").write_text("{}")
            raise KeyError("a failure after the folders were checked")
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "a", "a/written", "a/written/metrics.json", "there"]


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise is Unix-only (the write is plain there)")
def test_a_synced_write_hands_its_bytes_to_the_disk_while_it_goes(tmp_path, monkeypatch):
    """A synced write (a checkpoint) asks the kernel to start writing every run of WRITEBACK_BYTES as soon as it is in
    the file, in order and without gaps, so that the final fsync waits for the tail only; the file is the same, and a
    file system that refuses the advice still gets the whole file."""
    import utils.io.atomic as atomic
    monkeypatch.setattr(atomic, "WRITEBACK_BYTES", 1000)
    advised = []

    def advise(fd, offset, length, advice):
        advised.append((offset, length, os.fstat(fd).st_size))  # the size the file had when it was asked
        raise OSError(errno.ESPIPE, "refused")

    monkeypatch.setattr(os, "posix_fadvise", advise)
    chunks = [bytes([i]) * 700 for i in range(10)]
    with atomic_write(str(tmp_path / "out.bin"), sync=True) as f:
        for chunk in chunks:
            assert f.write(chunk) == 700
        assert f.tell() == 7000 and f.name.startswith(str(tmp_path))
    assert (tmp_path / "out.bin").read_bytes() == b"".join(chunks)
    assert [(offset, length) for offset, length, _ in advised] == [(0, 1400), (1400, 1400), (2800, 1400),
                                                                   (4200, 1400), (5600, 1400)]
    assert all(size >= offset + length for offset, length, size in advised)  # flushed before it was asked
    advised.clear()
    with atomic_write(str(tmp_path / "plain.bin")) as f:  # not synced: no advice
        f.write(b"x" * 5000)
    assert not advised
