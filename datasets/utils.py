"""Reading images and masks with errors that name the file, downloading with md5 and resume, safe extraction."""
import hashlib
import io
import math
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from typing import Callable, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from utils.config import read_utf8
from utils.constants import IGNORE_INDEX
from utils.io.atomic import write_advice
from utils.io.image_limit import ImageTooLargeError, check_image_pixels
from utils.io.stop_signals import stop_signals_held
from utils.runtime.interrupts import run_stoppable

__all__ = ["DatasetError", "error_message", "read_split", "scaled_size",
           "decode_image", "as_rgb8", "load_image", "load_mask", "check_mask_values", "check_integrity",
           "download_url", "extract_archive", "generate_once", "run_generating_tool"]

CHUNK_SIZE = 1 << 20


class DatasetError(RuntimeError):
    """Data that cannot be used as it is: missing, corrupt, or inconsistent. The message says what to do."""


WORKER_TRACEBACK = "\nOriginal Traceback"  # how PyTorch appends a DataLoader worker's traceback to its error


def error_message(exc: BaseException) -> str:
    """The message of ``exc`` as raised: an error of a DataLoader worker reaches the main process with the worker's
    traceback in its message, whose last line is ``module.Type: message``."""
    text = str(exc)
    if WORKER_TRACEBACK not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.partition(": ")[2] or last


def read_split(path: str, hint: str = "") -> List[str]:
    """Names listed one per line in a split file; an error naming the file if it is missing or empty."""
    if not os.path.isfile(path):
        raise DatasetError(f"split file {path} does not exist{'; ' + hint if hint else ''}")
    names = [line.strip() for line in read_utf8(path, "split file", DatasetError).splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"split file {path} lists no samples")
    return names


def scaled_size(size: Tuple[int, int], max_pixels: int) -> Tuple[int, int]:
    """``size`` (width, height), or the largest size of its aspect ratio with at most ``max_pixels`` pixels."""
    width, height = size
    if width * height <= max_pixels:
        return size
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def decode_image(source: Union[str, bytes], name: str, upright: bool = False, rgb: bool = False,
                 draft_pixels: int = 0) -> Image.Image:
    """The decoded image of ``source``, a file or the bytes of an image (embedded in an annotation export), refused
    before decoding when it has more pixels than --max_image_pixels. DatasetError when it is missing, too large or
    cannot be decoded, in one line naming ``name`` ("image PATH", "mask PATH"...).

    ``upright``: its EXIF orientation applied, as viewers show a photo (prediction, INT8 calibration); training
    reads the stored pixels, which its masks are drawn on. ``rgb``: any mode as 8-bit RGB (:func:`as_rgb8`).
    ``draft_pixels``: a JPEG may decode at 1/2, 1/4 or 1/8 of its size where that leaves this many pixels.
    """
    if isinstance(source, str) and not os.path.isfile(source):
        raise DatasetError(f"{name} does not exist")
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as img:  # closes the file only
            check_image_pixels(img.size, name)
            if draft_pixels:
                img.draft(None, scaled_size(img.size, draft_pixels))
            img.load()  # decode now, so a truncated file fails here and not deep inside a transform
            decoded = ImageOps.exif_transpose(img) if upright else img
            return as_rgb8(decoded) if rgb else decoded
    except ImageTooLargeError as exc:
        raise DatasetError(str(exc)) from None
    # ValueError: PIL's word for damage it finds in the structure (a PNG text chunk that inflates past its limit)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode {name}: {exc}") from exc


def as_rgb8(img: Image.Image) -> Image.Image:
    """Any mode (L, LA, P, RGBA, CMYK, I;16, I, F) as 8-bit RGB: 16-bit and integer images are scaled to
    0..255 (a plain convert would clip them to white), transparency is composited on black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(path: str) -> Image.Image:
    """An 8-bit RGB PIL image (see ``as_rgb8``); corrupt, truncated or non-image files raise DatasetError.

    EXIF orientation is not applied: masks carry none, and they are drawn on the stored pixels.
    """
    return decode_image(path, f"image {path}", rgb=True)


def load_mask(path: str, image: Optional[Image.Image] = None, image_path: str = "") -> Image.Image:
    """An index mask (mode P or L kept as indices); its size must equal ``image``'s when given."""
    mask = decode_image(path, f"mask {path}")
    if mask.mode not in ("P", "L"):
        raise DatasetError(f"mask {path} has mode {mask.mode}; expected an index PNG (mode P or L)")
    if image is not None and mask.size != image.size:
        raise DatasetError(f"mask {path} is {mask.size[0]}x{mask.size[1]} but image {image_path} is "
                           f"{image.size[0]}x{image.size[1]}; they must be the same size")
    return mask


def check_mask_values(mask: np.ndarray, num_classes: int, path: str, ignore_index: int = IGNORE_INDEX) -> None:
    """Every value must be a class index or the ignore index."""
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        values = sorted(int(v) for v in np.unique(mask[bad]))[:10]
        raise DatasetError(f"mask {path} has values {values} that are neither classes 0..{num_classes - 1} "
                           f"nor the ignore index {ignore_index}")


def check_integrity(path: str, md5: Optional[str] = None) -> bool:
    """The file exists and, when ``md5`` is given, has that checksum."""
    if not os.path.isfile(path):
        return False
    if md5 is None:
        return True
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest() == md5


def download_url(url: str, root: str, filename: Optional[str] = None, md5: Optional[str] = None,
                 timeout: float = 60.0) -> str:
    """Download ``url`` into ``root`` with a progress bar, resuming a partial ``.part`` file when the server
    supports ranges, and check its md5. Returns the file's path; raises DatasetError with what to do."""
    filename = filename or os.path.basename(url)
    path = os.path.join(root, filename)
    if check_integrity(path, md5):
        return path
    os.makedirs(root, exist_ok=True)
    partial = path + ".part"
    start = os.path.getsize(partial) if os.path.isfile(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = start and response.status == 206
            total = response.length + (start if resumed else 0) if response.length else None
            with open(partial, "ab" if resumed else "wb") as out, \
                    tqdm(total=total, initial=start if resumed else 0, unit="B", unit_scale=True,
                         desc=filename) as bar:
                for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(f"cannot download {url} ({exc}); check the network, or download it by hand to {path}"
                           + (" and run again (a partial download resumes)" if os.path.isfile(partial) else "")) from exc
    if not check_integrity(partial, md5):
        os.remove(partial)
        raise DatasetError(f"{url} downloaded with a wrong md5 (expected {md5}); the partial file was removed, "
                           "run again to download it anew")
    os.replace(partial, path)
    return path


def _safe_target(root: str, name: str) -> str:
    target = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([target, os.path.realpath(root)]) != os.path.realpath(root):
        raise DatasetError(f"archive member {name!r} would be written outside {root}; refusing to extract")
    return target


def _check_tar_members(members: Iterable[tarfile.TarInfo], root: str, archive: str) -> None:
    for member in members:
        _safe_target(root, member.name)
        if member.issym() or member.islnk():
            raise DatasetError(f"archive {archive} holds a link {member.name!r}; refusing to extract it")
        if not (member.isfile() or member.isdir()):
            raise DatasetError(f"archive {archive} holds a special file {member.name!r}; refusing to extract it")


def extract_archive(archive: str, root: str) -> None:
    """Extract a tar (any compression) or zip archive into ``root``; nothing may land outside it."""
    os.makedirs(root, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _safe_target(root, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DatasetError(f"archive {archive} holds a link {info.filename!r}; refusing to extract it")
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            _check_tar_members(members, root, archive)
            tf.extractall(root, members=members, filter="data")
    except tarfile.TarError as exc:
        raise DatasetError(f"cannot extract {archive}: {exc} (corrupt or not an archive; delete it and download again)") from exc


# The caches that datasets keep inside their root (per-class pixel counts, per-band statistics): data of ours, which
# a generator's rebuild may remove with the rest.
CLASS_STATS_DIR, BAND_STATS_DIR = ".class_stats", ".band_stats"


def _files_below(root: str) -> List[str]:
    """Every file below ``root``, as relative paths with ``/``, sorted."""
    return sorted(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                  for folder, _, names in os.walk(root) for name in names)


def _read_stamp(root: str, stamp_file: str) -> Optional[Tuple[str, Optional[Set[str]]]]:
    """(what generated ``root``, the files it wrote) from its stamp; the files are None in a stamp written before
    they were listed there, and the whole is None without a stamp."""
    stamp = os.path.join(root, stamp_file)
    if not os.path.isfile(stamp):
        return None
    with open(stamp) as f:
        lines = f.read().splitlines()
    return (lines[0].strip() if lines else ""), (set(lines[1:]) if len(lines) > 1 else None)


def _generated(root: str, stamp: Tuple[str, Optional[Set[str]]], expected: str, counts: Iterable[tuple]) -> bool:
    """Whether ``root`` holds the dataset ``expected`` describes, whole: every file it wrote is there (files the
    user added beside them are theirs to keep)."""
    if stamp[0] != expected:
        return False
    if stamp[1] is not None:
        return all(os.path.isfile(os.path.join(root, name)) for name in stamp[1])
    return all(os.path.isdir(os.path.join(root, sub)) and len(os.listdir(os.path.join(root, sub))) == total
               for sub, total in counts)


def _not_generated(root: str, stamp: Tuple[str, Optional[Set[str]]], stamp_file: str, counts: Iterable[tuple],
                   written: Sequence[str]) -> List[str]:
    """The files below ``root`` that its generator did not write, by the stamp's list. A stamp without one vouches
    for the files in the ``counts`` subfolders and for the names this version writes (``written``)."""
    ours = {stamp_file} | (stamp[1] if stamp[1] is not None else set(written))
    folders = {CLASS_STATS_DIR, BAND_STATS_DIR} | ({sub for sub, _ in counts} if stamp[1] is None else set())
    others = [name for name in _files_below(root) if name not in ours and name.split("/")[0] not in folders]
    if stamp[1] is None:  # more files in a counted folder than the generator wrote: some are the user's
        others += [f"{sub}/" for sub, total in counts if len(_files_below(os.path.join(root, sub))) > total]
    return others


def _write_stamp(root: str, stamp_file: str, expected: str) -> None:
    """The stamp of a generated ``root``: what generated it, then every file in it (caches aside)."""
    files = [name for name in _files_below(root) if name != stamp_file
             and name.split("/")[0] not in (CLASS_STATS_DIR, BAND_STATS_DIR)]
    with open(os.path.join(root, stamp_file), "w") as f:
        f.write("\n".join([expected, *files]) + "\n")


def _stopped_generating(root: str, stamp_file: str, started: float) -> str:
    """What a stop while a tool ran :func:`generate_once` for ``root`` (from time ``started`` on) leaves, by what is
    on disk: the part written so far in ROOT.partial, the new dataset in place (its stamp written since
    ``started``), or the folder as it was."""
    if os.path.isdir(f"{root}.partial"):
        return f"{root} is as it was, and the part written so far is in {root}.partial, which the next run " \
               "replaces: run the same command again to finish it"
    stamp = os.path.join(root, stamp_file)
    if os.path.isfile(stamp) and os.path.getmtime(stamp) >= started:
        return f"{root} is complete"
    return f"{root} is as it was: run the same command again to finish it"


def run_generating_tool(write: Callable[[], int], root: str, stamp_file: str) -> int:
    """The exit status of ``write()``, a tool's run of :func:`generate_once` for ``root``: an OSError is one line
    that says what to do, and a Ctrl-C or SIGTERM one line that says what is on disk."""
    started = time.time()

    def attempt() -> int:
        try:
            return write()
        except OSError as exc:
            print(f"error: cannot write {root}: {write_advice(exc, os.path.dirname(os.path.abspath(root)))}",
                  file=sys.stderr)
            return 1

    return run_stoppable(attempt, lambda stop: stop.say(_stopped_generating(root, stamp_file, started)))


def _remove_generated(root: str, stamp_file: str) -> None:
    """Delete ``root``, which holds only a generator's files, its stamp last: a copy cut short (a SIGKILL, a power
    cut) still says whose files it holds, and the next run replaces it."""
    for entry in os.scandir(root):
        if entry.name == stamp_file:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)
    shutil.rmtree(root)


def generate_once(root: str, stamp_file: str, expected: str, counts: Iterable[tuple],
                  write: Callable[[str], None]) -> str:
    """Write a generated dataset to ``root`` with ``write(folder)`` unless the same one is already there; return
    ``root``. The same one: ``stamp_file`` says ``expected`` (the generator's version and settings) and every file
    it lists is there; files added beside them are kept. (A stamp from before the list: each (subfolder, count) of
    ``counts`` holds that many files.)

    The data is written to ``ROOT.partial`` and renamed into place, so an interrupted run leaves no ``root`` that
    looks complete; the next run rebuilds it. The old copy goes and the new one takes its place with Ctrl-C and
    SIGTERM held back, so a stop never leaves half of either. A ``root`` that holds a file the generator did not
    write is refused, never deleted, and so is a mount point (it cannot be renamed into place).
    """
    root = os.path.realpath(os.path.expanduser(root))  # a link to the folder: the folder is what is replaced
    counts = list(counts)
    if os.path.exists(root) and not os.path.isdir(root):
        raise DatasetError(f"{root} is a file, not a folder; choose another root")
    stamp = _read_stamp(root, stamp_file)
    if stamp is not None and _generated(root, stamp, expected, counts):
        if stamp[1] is None:  # from before the stamp listed its files: list them now (all are the generator's)
            _write_stamp(root, stamp_file, expected)
        return root
    if os.path.isdir(root) and os.listdir(root) and stamp is None:
        raise DatasetError(f"{root} holds files this generator did not write; choose another root or empty it")
    if os.path.ismount(root):
        raise DatasetError(f"{root} is a mount point: the dataset is written beside its folder and renamed into "
                           f"place, which a mount point cannot be; give a folder inside it, such as "
                           f"{os.path.join(root, 'data')}")
    partial = root + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
    write(partial)
    written = _files_below(partial)
    others = _not_generated(root, stamp, stamp_file, counts, written) if stamp is not None else []
    if others:
        shutil.rmtree(partial)
        raise DatasetError(f"{root} holds files this generator did not write ({len(others)}, such as "
                           f"{os.path.join(root, others[0])}); it would replace the folder: move them out, or "
                           "choose another root")
    _write_stamp(partial, stamp_file, expected)
    with stop_signals_held():  # a stop waits until the new copy is in place: never half of the old one
        if os.path.isdir(root):
            _remove_generated(root, stamp_file)  # another version or size, or a damaged copy: only files it wrote
        os.replace(partial, root)
    return root
