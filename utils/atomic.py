"""Files and folders that appear whole or not at all: written beside their target, then renamed over it."""
import contextlib
import os
import re
import shutil
import tempfile
import uuid
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple

__all__ = ["atomic_write", "atomic_folder", "check_writable", "require_writable", "require_writable_file",
           "missing_file", "remove_orphaned_temporaries"]

@contextlib.contextmanager
def atomic_write(path: str, sync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; on success it replaces ``path`` in one rename.

    A crash, an exception or a kill while writing leaves the old file (or none), never half a file.
    ``sync`` also flushes the data to disk before the rename (checkpoints: survives a power cut).
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{_temporary_prefix(name)}{os.getpid()}-{uuid.uuid4().hex[:8]}")
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


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """A new folder to fill in place of ``path``, which must be absent or empty; on success it is renamed to ``path``
    (it is made beside it, on the same file system), on an exception (Ctrl-C included) it is removed, so ``path`` is
    never left half-filled. An existing empty ``path`` is kept and the entries move into it, one rename each. A kill
    (SIGKILL, power loss) leaves the hidden folder beside ``path``, named ``.tmp-NAME-PID-...``."""
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f"{_temporary_prefix(name)}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(staging)  # not mkdtemp: the folder gets the usual permissions (umask), not 0700
    try:
        yield staging
        if os.path.isdir(path):  # kept (a mount point, a shell's current folder): what was made moves into it
            for entry in sorted(os.listdir(staging)):
                os.rename(os.path.join(staging, entry), os.path.join(path, entry))
            os.rmdir(staging)
        else:
            os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
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


def _temporary_prefix(name: str) -> str:
    """The start of the name of every temporary file :func:`atomic_write` writes for a target named ``name``."""
    return f".tmp-{name}-"


def remove_orphaned_temporaries(folder: str, names: Sequence[str]) -> List[Tuple[str, int]]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` for targets called ``names`` when its
    process was killed (SIGKILL, the OOM killer, a power cut) before it could clean up; return their paths and
    sizes. Call it while holding the lock that every writer of those targets holds (``writer_lock``): then no
    other process is writing them, and only this process's own temporaries are spared.
    """
    if not os.path.isdir(folder):
        return []
    prefixes = tuple(_temporary_prefix(name) for name in names)
    own = re.compile(rf"-{os.getpid()}-[0-9a-f]{{8}}$")
    removed = []
    for entry in sorted(os.listdir(folder)):
        if not entry.startswith(prefixes) or own.search(entry):
            continue
        path = os.path.join(folder, entry)
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile
            size = os.path.getsize(path)
            os.remove(path)
            removed.append((path, size))
    return removed
