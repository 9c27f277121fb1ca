"""File locks (``flock``, advisory): one primitive for open files, and a lock file held for a block.

The kernel drops a ``flock`` when its open file closes, and so when its process ends however it ends (SIGKILL,
the OOM killer): a crashed run never leaves a stale lock. Windows has no ``flock``: nothing is locked there.
Network file systems need lock support (NFS does with its lock daemon).
"""
import contextlib
import os
import platform
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["HAS_FLOCK", "LockHeldError", "take_lock", "is_still_at", "this_process", "written_on_this_machine",
           "file_lock"]

HAS_FLOCK = fcntl is not None


class LockHeldError(RuntimeError):
    """Another process holds a lock that was not to be waited for; the message names it and what to do."""


def take_lock(fd: int, wait: bool = True) -> Optional[bool]:
    """Take the exclusive lock of the open file ``fd``: True once held; False when another open file holds it (only
    with ``wait`` False); None where there are no locks (Windows; file systems that refuse them): nothing is known
    of other holders then."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP...: no locks here
        return None
    return True


def is_still_at(fd: int, path: str) -> bool:
    """Whether the open file ``fd`` is still the file at ``path`` (not removed or replaced since it was opened)."""
    try:
        opened, named = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def this_process() -> str:
    """What a lock holder writes into its lock file for others to name: its process id and machine."""
    return f"process {os.getpid()} on {platform.node()}"


def written_on_this_machine(holder: str) -> bool:
    """Whether ``holder``, what :func:`this_process` wrote, names this machine."""
    return holder.endswith(f" on {platform.node()}")


@contextlib.contextmanager
def file_lock(path: str, held_by: Optional[str] = None) -> Iterator[None]:
    """Hold the exclusive lock of the file ``path`` (made, with its folder, if needed) while the block runs, with
    this process written into it for others to name.

    Without ``held_by``, wait until the processes before are done (machines that share a data folder then prepare
    it in turn, and the later ones find it complete). With it, a LockHeldError at once whose message is ``held_by``
    (what to do then) formatted with ``owner`` (what the holder wrote) and ``path``. A file that cannot be made (a
    read-only folder) runs the block unlocked: nothing can be written there, so there is nothing to take turns on.
    A holder may remove the file while it holds the lock (a run that wrote nothing beside it); a process that had
    opened it then locks the file made after it instead.
    """
    while True:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            handle = open(path, "a+")
        except OSError:
            yield
            return
        with handle:
            held = take_lock(handle.fileno(), wait=held_by is None)
            if held is False:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                raise LockHeldError(held_by.format(owner=owner, path=path))
            if held and not is_still_at(handle.fileno(), path):
                continue  # its holder removed it (holders remove it only while they hold it): lock the new one
            handle.truncate(0)
            handle.write(this_process())
            handle.flush()
            yield
            return
