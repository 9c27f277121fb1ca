"""Files and folders that appear whole or not at all: written beside their target, then renamed over it.

Every temporary file is locked (``flock``) by its writer for as long as it is open, and every staging folder
holds a lock file its maker keeps locked; the kernel drops a lock when its holder ends, however it ends (SIGKILL,
the OOM killer). A temporary whose lock can be taken therefore belongs to a dead run, whatever its process id
(every run may be PID 1 in its own container), and :func:`remove_orphaned_temporaries` removes it. Where a write
fails, :func:`write_advice` says what to do.
"""
import contextlib
import errno
import os
import re
import shutil
import tempfile
import uuid
from typing import BinaryIO, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from utils.io.locks import HAS_FLOCK, is_still_at, take_lock, this_process, written_on_this_machine
from utils.io.stop_signals import stop_signals_held

__all__ = ["atomic_write", "atomic_link", "atomic_folder", "check_writable", "require_writable", "require_file_name",
           "require_writable_file", "path_state", "folder_of", "removed_if_left_empty", "missing_file",
           "remove_orphaned_temporaries", "describe_removed", "write_advice", "NAME_MAX"]

COPY_CHUNK_BYTES = 16 << 20
# A synced write asks the kernel to start writing each such run of bytes to disk as soon as it is written. A 548 MiB
# HRNet-48 checkpoint took 0.83 instead of 0.95 s (median of 16, taking turns; ext4 on the AMX Xeon's virtual disk).
WRITEBACK_BYTES = 128 << 20
STAGING_LOCK = ".staging.lock"  # in an atomic_folder's staging folder, locked by its process until the rename
TEMPORARY_NAME = re.compile(r"^\.tmp-(?P<target>.+)-\d+-[0-9a-f]{8}$")  # what _temporary_name makes


@contextlib.contextmanager
def atomic_write(path: str, sync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; on success it replaces ``path`` in one rename.

    A crash, an exception or a kill while writing leaves the old file (or none), never half a file; what a
    kill leaves is a locked-while-alive temporary that the next run removes (:func:`remove_orphaned_temporaries`).
    ``sync`` also flushes the data to disk before the rename (checkpoints: survives a power cut).
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp, f = _locked_temporary(folder, name)
    try:
        with f:
            yield _WrittenBack(f) if sync and hasattr(os, "posix_fadvise") else f
            with stop_signals_held():  # a stop signal from here on comes after the rename: the file is whole
                f.flush()
                if sync:
                    os.fsync(f.fileno())
                if not HAS_FLOCK:
                    f.close()  # Windows renames no open file (and holds no lock to keep)
                os.replace(tmp, path)  # before the file closes: the lock covers the temporary until it is gone
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


class _WrittenBack:
    """A file written front to back whose bytes the kernel starts writing to disk every WRITEBACK_BYTES, while the
    rest is still being produced, so that the fsync at the end mostly waits for the last run. On Linux,
    POSIX_FADV_DONTNEED starts the writeback of the range's dirty pages without waiting for it (older kernels skip it
    on a busy disk) and drops its clean pages from the cache; it never drops data. Elsewhere it is only advice."""

    def __init__(self, file: BinaryIO):
        self._file = file
        self._written = self._handed = 0  # bytes written; bytes handed to the kernel's writeback

    def write(self, data) -> int:
        count = self._file.write(data)
        self._written += count
        if self._written - self._handed >= WRITEBACK_BYTES:
            self._file.flush()
            with contextlib.suppress(OSError):  # only advice: a file system that refuses it still gets its fsync
                os.posix_fadvise(self._file.fileno(), self._handed, self._written - self._handed,
                                 os.POSIX_FADV_DONTNEED)
            self._handed = self._written
        return count

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def atomic_link(source: str, path: str, sync: bool = False) -> None:
    """Make ``path`` a second name of the complete file ``source`` without writing its bytes again: a hard link made
    beside ``path``, then renamed over it. Where the file system has no hard links (FAT, some network shares), a
    copy through :func:`atomic_write` (``sync`` as there). Either way ``path`` is its old file or the new one, never
    half of one; a later :func:`atomic_write` of ``source`` gives ``source`` a new file and leaves ``path`` as it is.
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, _temporary_name(name))
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as original, atomic_write(path, sync) as f:
            shutil.copyfileobj(original, f, COPY_CHUNK_BYTES)
        return
    try:
        os.replace(tmp, path)
    finally:  # rename leaves both names when they already were one file
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _locked_temporary(folder: str, name: str) -> Tuple[str, BinaryIO]:
    """A new temporary file for target ``name`` in ``folder``, open for writing and locked by this process."""
    return _open_locked(lambda: os.path.join(folder, _temporary_name(name)))


def _open_locked(new_path: Callable[[], str]) -> Tuple[str, BinaryIO]:
    """A new file at ``new_path()`` (a new name at each call), open for writing and locked by this process."""
    while True:
        path = new_path()
        f = open(path, "xb")  # not mkstemp: the file gets the usual permissions (umask), not 0600
        if not take_lock(f.fileno()) or is_still_at(f.fileno(), path):
            return path, f
        f.close()  # a cleaner took it between its creation and the lock, and removed it: take a new name


def _temporary_name(name: str) -> str:
    return f"{_temporary_prefix(name)}{os.getpid()}-{uuid.uuid4().hex[:8]}"  # the PID is for people only


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """A new folder to fill in place of ``path``, which must be absent or empty; on success it is renamed to ``path``
    (it is made beside it, on the same file system), on an exception (Ctrl-C included) it is removed, so ``path`` is
    never left half-filled. An existing empty ``path`` is kept and the entries move into it, one rename each. A kill
    (SIGKILL, power loss) leaves the hidden folder beside ``path``, named ``.tmp-NAME-PID-...``, with its lock file
    (``STAGING_LOCK``) free: :func:`remove_orphaned_temporaries` removes it then."""
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging, lock = _locked_staging_folder(parent, name)
    try:
        with lock:
            yield staging
            with stop_signals_held():  # the renames run whole: a stop signal comes after them
                if not HAS_FLOCK:
                    lock.close()  # Windows deletes no open file (and holds no lock to keep)
                # still held: a cleaner that opened it finds it gone (is_still_at). A kill from here to the rename
                # leaves a folder without the file, which no cleaner touches (it cannot tell it from a user's)
                os.remove(os.path.join(staging, STAGING_LOCK))
                if os.path.isdir(path):  # kept (a mount point, a shell's current folder): what was made moves in
                    for entry in sorted(os.listdir(staging)):
                        os.rename(os.path.join(staging, entry), os.path.join(path, entry))
                    os.rmdir(staging)
                else:
                    os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _locked_staging_folder(parent: str, name: str) -> Tuple[str, BinaryIO]:
    """A new staging folder for target ``name`` in ``parent`` and its lock file, open and locked by this process,
    which the file names (:func:`this_process`: cleaners leave other machines' folders alone)."""
    def new_lock_file() -> str:
        staging = os.path.join(parent, _temporary_name(name))
        os.mkdir(staging)  # not mkdtemp: the folder gets the usual permissions (umask), not 0700
        return os.path.join(staging, STAGING_LOCK)

    lock_path, lock = _open_locked(new_lock_file)
    lock.write(this_process().encode())
    lock.flush()
    return os.path.dirname(lock_path), lock


def check_writable(folder: str) -> None:
    """Create ``folder`` if needed and write (then delete) a file in it; OSError when that fails.

    Scripts call it before any work: a read-only output folder is then found in a second, not at the first save.
    """
    os.makedirs(folder, exist_ok=True)
    tempfile.TemporaryFile(dir=folder).close()


def require_writable(folder: str, flag: str) -> None:
    """:func:`check_writable` for the folder of option ``flag``: a ValueError that names both and what to do."""
    if not folder:
        raise ValueError(f"{flag} is empty; give a folder (. for this one)")
    blocker = _existing_file_on(folder)
    if blocker:
        raise ValueError(f"{flag} {folder}: {blocker} is a file, not a folder; choose another folder")
    try:
        check_writable(folder)
    except OSError as exc:
        raise ValueError(f"{flag} {folder} cannot be written ({exc.strerror or exc}); "
                         f"{write_advice(exc, folder)}") from exc


def require_file_name(path: str, flag: str, example_name: str) -> None:
    """A ValueError naming option ``flag`` when ``path`` is a folder, or ends with a separator as a folder does."""
    if os.path.isdir(path) or path.endswith(os.sep):
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {os.path.join(path, example_name)}")


def require_writable_file(path: str, flag: str, example_name: str) -> None:
    """The file of option ``flag`` can be written: a file name (not a folder) in a folder that can be written
    (made if needed); a ValueError naming the option and what to do otherwise."""
    require_file_name(path, flag, example_name)
    require_writable(folder_of(path), flag)


def _nearest_existing(folder: str) -> Tuple[str, List[str]]:
    """The nearest existing path at or above ``folder`` ('' when none), and the missing folders on the way to it,
    deepest first: those that ``os.makedirs(folder)`` makes. The path is not normalised: makedirs also makes the
    ``a`` of ``a/../b``."""
    path, missing = os.path.join(os.getcwd(), folder), []
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            return "", missing
        path = parent
    return path, missing


def _existing_file_on(folder: str) -> str:
    """The first existing non-folder on the way to ``folder`` (a folder cannot be made there), or ''."""
    existing = _nearest_existing(folder)[0]
    return "" if not existing or os.path.isdir(existing) else existing


def path_state(path: str) -> Optional[Tuple[int, int, int]]:
    """What tells the file or folder at ``path`` now (device, inode, modification time); None when there is none.
    It changes when a write replaces or fills it."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def folder_of(path: str) -> str:
    """The folder that holds the file ``path`` (the current one for a bare name)."""
    return os.path.dirname(os.path.abspath(path))


@contextlib.contextmanager
def removed_if_left_empty(folders: Iterable[str]) -> Iterator[None]:
    """Run the block, then remove the folders on the way to each of ``folders`` that did not exist before it and
    are empty after it: a run that stops before it writes anything leaves no empty output folders behind. Only
    empty folders go (``os.rmdir``), so nothing written there by this or another process is lost."""
    made = {path for folder in folders for path in _nearest_existing(folder)[1]}
    try:
        yield
    finally:
        for path in sorted(made, key=lambda path: path.count(os.sep), reverse=True):  # the deepest first
            with contextlib.suppress(OSError, ValueError):  # not empty, already gone, or no path (a NUL in it)
                os.rmdir(path)


def missing_file(path: str) -> Optional[str]:
    """Why no file can be read at ``path`` ("is a folder, not a file" or "does not exist"), or None."""
    if os.path.isfile(path):
        return None
    return "is a folder, not a file" if os.path.isdir(path) else "does not exist"


NAME_MAX = 255  # bytes in one file name on Linux's, macOS's and Windows' usual file systems
_TEMPORARY_EXTRA = len(".tmp-") + len("-4194304-") + 8  # around the target's name: the longest PID and the hex


def _temporary_prefix(name: str) -> str:
    """The start of the name of every temporary file :func:`atomic_write` writes for a target named ``name``; a
    name too long to take the rest is cut (any name the file system takes can be written)."""
    while len(os.fsencode(name)) > NAME_MAX - _TEMPORARY_EXTRA:
        name = name[:-1]  # whole characters: a cut inside one makes a name that is not UTF-8 (APFS refuses it)
    return f".tmp-{name}-"


def remove_orphaned_temporaries(folder: str, names: Optional[Sequence[str]] = None) -> List[Tuple[str, int]]:
    """Remove the temporary files that :func:`atomic_write` and the staging folders that :func:`atomic_folder` left
    in ``folder`` (for targets called ``names``, or any) when their process died before it could clean up (SIGKILL,
    the OOM killer, a power cut); return their paths and sizes. A temporary is its dead writer's when its lock can be
    taken: those being written, by this process or any other, are left alone. Where the file system has no locks
    nothing is removed.
    """
    if not os.path.isdir(folder):
        return []
    removed = []
    prefixes = {_temporary_prefix(name) for name in names or ()}
    for entry in sorted(os.listdir(folder)):
        match = TEMPORARY_NAME.match(entry)
        if match and (names is None or _temporary_prefix(match["target"]) in prefixes):
            size = _remove_if_unlocked(os.path.join(folder, entry))
            if size is not None:
                removed.append((os.path.join(folder, entry), size))
    return removed


def describe_removed(removed: Sequence[Tuple[str, int]], what: str, folder: str) -> str:
    """One line saying which temporary files (:func:`remove_orphaned_temporaries`) were removed from ``folder``."""
    return (f"Removed {len(removed)} {what} in {folder} ({sum(size for _, size in removed) / 2 ** 20:.1f} MiB): "
            f"{', '.join(os.path.relpath(path, folder) for path, _ in removed)}")


def _remove_if_unlocked(path: str) -> Optional[int]:
    """Delete the temporary file or staging folder ``path`` if no open file holds its lock (a folder's lock file,
    which must name this machine: a network file system may keep locks per machine); its size in bytes, or None
    when it is in use, gone, or not known to be ours (a folder without the lock file is being made or renamed, or
    is the user's; one that could not be removed whole is left as it is)."""
    is_folder = os.path.isdir(path)
    lock_path = os.path.join(path, STAGING_LOCK) if is_folder else path
    if not HAS_FLOCK:  # Windows: an open file cannot be deleted there, which tells the same (folders: unknown)
        try:
            size = os.path.getsize(path)
            os.remove(path)  # refused while its writer has it open; a folder is refused
        except OSError:
            return None
        return size
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:  # gone meanwhile, or not ours to read
        return None
    try:
        if not take_lock(fd, wait=False) or not is_still_at(fd, lock_path):
            return None
        if not is_folder:
            os.remove(path)  # still holding the lock: a writer that created it a moment ago waits, then sees it gone
            return os.fstat(fd).st_size
        if not written_on_this_machine(os.read(fd, 4096).decode(errors="replace")):
            return None
        size = sum(_size_of(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
        shutil.rmtree(path, ignore_errors=True)
        return None if os.path.lexists(path) else size
    finally:
        os.close(fd)


def _size_of(path: str) -> int:
    """The size of the file or link ``path`` itself, 0 when it is gone."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def write_advice(exc: OSError, folder: str) -> str:
    """What to do about ``exc``, an error while writing into ``folder``, by its cause: the end of every "cannot
    write" message (a full disk is told to free space; a folder in the way, to move it; and so on)."""
    where = exc.filename2 or exc.filename or folder  # os.replace(src, dst) names dst second: the one in the way
    if exc.errno == errno.EEXIST and os.path.islink(where) and not os.path.exists(where):
        return f"{where} is a link to {os.readlink(where)}, which does not exist: create that folder, or choose " \
               "another folder"
    in_the_way = "move or rename it, or choose another folder"
    advice = {
        errno.ENOSPC: f"free space in {folder} or choose another folder",
        errno.EDQUOT: f"free space in {folder} (your disk quota is used up) or choose another folder",
        errno.EISDIR: f"a folder is in the way at {where}: {in_the_way}",
        errno.EEXIST: f"a file is in the way at {where}, where a folder goes: {in_the_way}",
        errno.ENOTDIR: f"a file is in the way on the path {where}, where a folder goes: {in_the_way}",
        errno.ENOTEMPTY: f"a folder that is not empty is in the way at {where}: {in_the_way}",
        errno.EACCES: f"{folder} is not writable for you: fix its permissions or choose another folder",
        errno.EPERM: f"{folder} is not writable for you: fix its permissions or choose another folder",
        errno.EROFS: f"{folder} is on a read-only file system: choose another folder",
        errno.ENAMETOOLONG: f"a name is too long for the file system at {where}: shorten the input's name or "
                            "choose a folder with a shorter path",
        errno.EIO: f"the disk of {folder} reported an input/output error: check the disk or choose another folder",
    }
    check = where if os.path.normpath(where) == os.path.normpath(folder) else f"{where} and {folder}"
    return advice.get(exc.errno, f"check {check}, or choose another folder")
