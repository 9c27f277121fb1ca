"""Outputs that never land on inputs: the mark inside every PNG and video this project writes, by which a later
run that walks the same folder knows them, and the check that no output path is one of the input files."""
import importlib
import os
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from PIL import Image, PngImagePlugin

from utils.io.atomic import atomic_write, folder_of

__all__ = ["OWN_MARK", "VIDEO_MARK_KEY", "TIFF_MARK_KEY", "save_png", "is_own_output", "same_path", "input_clashes",
           "refuse_writing_over"]

OWN_MARK = "DeepLabV3Plus-Pytorch segmentation output"
PNG_MARK_KEY = "Software"  # a PNG text chunk that PIL, exiftool and image viewers show
VIDEO_MARK_KEY = "comment"  # container metadata that MP4 keeps (ffprobe shows it)
TIFF_MARK_KEY = "TIFFTAG_SOFTWARE"  # GDAL's name of the TIFF Software tag (gdalinfo and exiftool show it)
TIFF_SOFTWARE_TAG = 305
PNG_COMPRESS_LEVEL = 1  # several times faster to write than the default 6, files a little larger


def save_png(image: Image.Image, path: str) -> None:
    """Write ``image`` as a PNG that appears whole or not at all (a run stopped mid-write leaves no stub), marked
    as this project's output."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_MARK_KEY, OWN_MARK)
    with atomic_write(path) as f:
        image.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL, pnginfo=info)


def is_own_output(path: str) -> bool:
    """Whether ``path`` is a PNG, label GeoTIFF or MP4 that this project wrote (it carries :data:`OWN_MARK`); False
    for any other file, and for one that cannot be read."""
    lower = path.lower()
    try:
        if lower.endswith(".png"):
            with Image.open(path) as image:  # reads the chunks before the pixels only
                return image.info.get(PNG_MARK_KEY) == OWN_MARK
        if lower.endswith((".tif", ".tiff")):
            with Image.open(path) as image:  # the header only
                return image.tag_v2.get(TIFF_SOFTWARE_TAG) == OWN_MARK
        if lower.endswith(".mp4"):
            with importlib.import_module("av").open(path) as container:
                return container.metadata.get(VIDEO_MARK_KEY) == OWN_MARK
    except Exception:  # PIL's and FFmpeg's many errors for a file that is not what it says: not ours
        return False
    return False


def _identities(path: str) -> List[object]:
    """What makes ``path`` one existing file: its device and inode (whatever the spelling: symlinks, case on a
    case-insensitive disk, a hard link) and its resolved, case-normalised path; nothing when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return []
    return [os.path.normcase(os.path.realpath(path))] + ([(stat.st_dev, stat.st_ino)] if stat.st_ino else [])


def same_path(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one existing file or folder, however each is spelled."""
    return not set(_identities(a)).isdisjoint(_identities(b))


def input_clashes(inputs: Sequence[str], outputs: Iterable[str], folders: Iterable[str] = ()) -> List[Tuple[str, str]]:
    """(output, input) for every output file that is one of the ``inputs`` on the file system, and for every input
    inside one of the output ``folders`` (folders of frames, whose files are replaced); sorted."""
    owner = {key: path for path in inputs for key in _identities(path)}
    clashes = {(output, owner[key]) for output in outputs for key in _identities(output) if key in owner}
    inside = {key: folder for folder in folders for key in _identities(folder)}
    for path in inputs:
        for key in _identities(folder_of(path)):
            if key in inside:
                clashes.add((os.path.join(inside[key], os.path.basename(path)), path))
    return sorted(clashes)


def refuse_writing_over(output: str, flag: str, inputs: Mapping[str, Optional[str]], example: str) -> None:
    """A ValueError when ``output``, the file of option ``flag``, is one of the ``inputs`` (option -> path, None
    when not given), however either is spelled; ``example`` is a name to suggest instead."""
    for input_flag, path in inputs.items():
        if path and same_path(output, path):
            raise ValueError(f"{flag} {output} is the same file as {input_flag} {path}: writing it would destroy "
                             f"that input; write to another file, e.g. {example}")
