"""Files that appear whole or not at all: written beside their target, then renamed over it."""
import contextlib
import os
import re
import socket
import tempfile
import uuid
from typing import BinaryIO, Iterator, List, Optional, Tuple

__all__ = ["atomic_write", "check_writable", "require_writable", "require_writable_file", "missing_file",
           "remove_orphaned_temporaries"]

# ".tmp-{name}-{host}-{pid}-{8 hex}" (files written before the host was part of the name lack it); the name is
# the shortest that ends in the target's suffix, so a name or host with dashes in it still parses
_TEMPORARY = r"^\.tmp-(?P<name>.+?{suffix})-(?:(?P<host>[^/]+)-)?(?P<pid>\d+)-[0-9a-f]{{8}}$"


def _host() -> str:
    """This machine's name as it goes into temporary file names (no path separators)."""
    return socket.gethostname().replace(os.sep, "_") or "localhost"


@contextlib.contextmanager
def atomic_write(path: str, sync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; on success it replaces ``path`` in one rename.

    A crash, an exception or a kill while writing leaves the old file (or none), never half a file.
    ``sync`` also flushes the data to disk before the rename (checkpoints: survives a power cut).
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # the writer's machine and process: remove_orphaned_temporaries() tells a crashed writer's file from a live one
    tmp = os.path.join(folder, f".tmp-{name}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as f:  # not mkstemp: the file gets the usual permissions (umask), not 0600
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_writable(folder: str) -> None:
    """Create ``folder`` if needed and write (then delete) a file in it; OSError when that fails.

    Scripts call it before any work: a read-only output folder is then found in a second, not at the first save.
    """
    os.makedirs(folder, exist_ok=True)
    tempfile.TemporaryFile(dir=folder).close()


def require_writable(folder: str, flag: str) -> None:
    """:func:`check_writable` for the folder of option ``flag``: a ValueError that names both and what to do."""
    blocker = _existing_file_on(folder)
    if blocker:
        raise ValueError(f"{flag} {folder}: {blocker} is a file, not a folder; choose another folder")
    try:
        check_writable(folder)
    except OSError as exc:
        raise ValueError(f"{flag} {folder} cannot be written ({exc.strerror or exc}); fix its permissions or "
                         "choose another folder") from exc


def require_writable_file(path: str, flag: str, example_name: str) -> None:
    """The file of option ``flag`` can be written: a file name (not a folder) in a folder that can be written
    (made if needed); a ValueError naming the option and what to do otherwise."""
    if os.path.isdir(path) or path.endswith(os.sep):
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {os.path.join(path, example_name)}")
    require_writable(os.path.dirname(os.path.abspath(path)), flag)


def _existing_file_on(folder: str) -> str:
    """The first existing non-folder on the way to ``folder`` (a folder cannot be made there), or ''."""
    path = os.path.abspath(folder)
    while True:
        if os.path.exists(path):
            return "" if os.path.isdir(path) else path
        parent = os.path.dirname(path)
        if parent == path:
            return ""
        path = parent


def missing_file(path: str) -> Optional[str]:
    """Why no file can be read at ``path`` ("is a folder, not a file" or "does not exist"), or None."""
    if os.path.isfile(path):
        return None
    return "is a folder, not a file" if os.path.isdir(path) else "does not exist"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_temporaries(folder: str, suffix: str = "") -> List[Tuple[str, int]]:
    """Remove the temporary files of :func:`atomic_write` for ``*suffix`` targets in ``folder`` whose writer was
    killed (SIGKILL, the OOM killer, a power cut) before it could clean up; return their paths and sizes.

    Only files written on this machine by a process that no longer exists are removed: a live writer's file, or
    one from another machine sharing the folder, is left alone.
    """
    if not os.path.isdir(folder):
        return []
    removed = []
    pattern = re.compile(_TEMPORARY.format(suffix=re.escape(suffix)))
    for entry in sorted(os.listdir(folder)):
        match = pattern.match(entry)
        if not match:
            continue
        host, pid = match.group("host"), int(match.group("pid"))
        if (host is not None and host != _host()) or pid == os.getpid() or _process_exists(pid):
            continue
        path = os.path.join(folder, entry)
        with contextlib.suppress(FileNotFoundError):  # another process cleaned it up meanwhile
            size = os.path.getsize(path)
            os.remove(path)
            removed.append((path, size))
    return removed
