"""Writing predictions: one renderer per output kind, written as PNG files for images, and for videos as encoded
videos (``color``, ``overlay``) or folders of per-frame PNGs (``label``, ``labelids``).

Every PNG is written atomically (:func:`utils.atomic.atomic_write`), so a stopped run leaves no truncated file.
"""
import contextlib
import dataclasses
import itertools
import os
import re
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .atomic import atomic_write
from .results import OVERLAY_ALPHA, overlay
from .video import VideoFormat, open_encoder

__all__ = ["Drawing", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "OUTPUT_KINDS", "save_png", "render", "ImageWriter",
           "video_kinds", "VideoWriter", "output_files", "output_names"]

PNG_COMPRESS_LEVEL = 1  # several times faster to write than the default 6, files a little larger

# What each kind adds to an input's output stem (relative path without extension).
IMAGE_SUFFIXES = {"color": ".png", "label": "_label.png", "overlay": "_overlay.png", "labelids": "_labelIds.png"}
# For a video: encoded videos, or folders holding one PNG per frame.
VIDEO_SUFFIXES = {"color": "_color.mp4", "overlay": "_overlay.mp4", "label": "_label", "labelids": "_labelIds"}
ENCODED_KINDS = ("color", "overlay")
OUTPUT_KINDS = tuple(IMAGE_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class Drawing:
    """How labels become pictures: a 256x3 colour table, the overlay's opacity, and for ``labelids`` a 256-entry
    table from class index to the id written (Cityscapes' label ids, or a classes.yaml's ``ids``)."""

    palette: np.ndarray
    overlay_alpha: float = OVERLAY_ALPHA
    label_ids: Optional[np.ndarray] = None


def _color(drawing: Drawing, image: np.ndarray, labels: np.ndarray) -> Image.Image:
    return Image.fromarray(drawing.palette[labels])


def _label(drawing: Drawing, image: np.ndarray, labels: np.ndarray) -> Image.Image:
    mask = Image.fromarray(labels, mode="L").convert("P")
    mask.putpalette(drawing.palette.flatten().tolist())
    return mask


def _overlay(drawing: Drawing, image: np.ndarray, labels: np.ndarray) -> Image.Image:
    return Image.fromarray(overlay(image, drawing.palette[labels], drawing.overlay_alpha))


def _labelids(drawing: Drawing, image: np.ndarray, labels: np.ndarray) -> Image.Image:
    # single-channel 8-bit, as the Cityscapes evaluator and test server read it
    return Image.fromarray(drawing.label_ids[labels], mode="L")


Renderer = Callable[[Drawing, np.ndarray, np.ndarray], Image.Image]
RENDERERS: Dict[str, Renderer] = {"color": _color, "label": _label, "overlay": _overlay, "labelids": _labelids}


def render(kind: str, drawing: Drawing, image: np.ndarray, labels: np.ndarray) -> Image.Image:
    """Output ``kind`` of an (H, W, 3) uint8 RGB ``image`` and its (H, W) uint8 class indices ``labels``."""
    return RENDERERS[kind](drawing, image, labels)


def save_png(image: Image.Image, path: str) -> None:
    """Write ``image`` as a PNG that appears whole or not at all (a run stopped mid-write leaves no stub)."""
    with atomic_write(path) as f:
        image.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


class ImageWriter:
    """The PNG of each asked ``kinds`` for an image, at ``folder``/stem + the kind's suffix."""

    def __init__(self, folder: str, kinds: Sequence[str], drawing: Drawing):
        self.folder, self.kinds, self.drawing = folder, tuple(kinds), drawing

    def write(self, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
        """OSError when a file cannot be written (those written before it are whole)."""
        base = os.path.join(self.folder, stem)
        for kind in self.kinds:
            save_png(render(kind, self.drawing, image, labels), base + IMAGE_SUFFIXES[kind])


def video_kinds(kinds: Sequence[str]) -> Tuple[str, ...]:
    """What a video gets: always its overlay video (the one to watch), then the other kinds asked."""
    return ("overlay",) + tuple(kind for kind in kinds if kind != "overlay")


FRAME_NAME = re.compile(r"^\d{6}\.png$")


def _remove_frames(folder: str) -> None:
    """Delete the per-frame PNGs (``000000.png``...) in ``folder``, and the folder if nothing else is left in it."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if FRAME_NAME.match(name):
            os.remove(os.path.join(folder, name))
    with contextlib.suppress(OSError):  # something of the user's is in it: keep it
        os.rmdir(folder)


class VideoWriter:
    """The outputs of one video, frame by frame: encoded videos for ``color`` and ``overlay`` (same frame times and
    size, and sound), a folder of ``000000.png``... for ``label`` and ``labelids``. A context manager: the videos are
    finished, playable, when it ends, also early (a stop signal); nothing is held in memory but the encoders'.
    The frames of an earlier run are cleared from the frame folders first; if an error ends the video, its frame
    folders are cleared too, as its videos are never written (the outputs of a video are whole or absent)."""

    def __init__(self, folder: str, stem: str, kinds: Sequence[str], drawing: Drawing, video_format: VideoFormat):
        self.base, self.kinds, self.drawing = os.path.join(folder, stem), video_kinds(kinds), drawing
        self.format = video_format
        self.frames = 0
        self._encoders = {}
        self._stack = contextlib.ExitStack()

    def _frame_folders(self) -> List[str]:
        return [self.base + VIDEO_SUFFIXES[kind] for kind in self.kinds if kind not in ENCODED_KINDS]

    def __enter__(self) -> "VideoWriter":
        for folder in self._frame_folders():  # a shorter rerun must not keep the frames after its own
            _remove_frames(folder)
        with self._stack:  # an encoder that fails to open closes those opened before it
            for kind in self.kinds:
                if kind in ENCODED_KINDS:
                    path = self.base + VIDEO_SUFFIXES[kind]
                    self._encoders[kind] = self._stack.enter_context(open_encoder(path, self.format))
            self._stack = self._stack.pop_all()
        return self

    def __exit__(self, *exc) -> Optional[bool]:
        if exc[0] is not None:
            for folder in self._frame_folders():
                _remove_frames(folder)
        return self._stack.__exit__(*exc)

    def write(self, image: np.ndarray, labels: np.ndarray, pts: int) -> None:
        """Add the next frame: (H, W, 3) uint8 RGB and its (H, W) uint8 class indices, shown at ``pts`` (the input
        frame's timestamp, in the format's time base)."""
        for kind in self.kinds:
            picture = render(kind, self.drawing, image, labels)
            if kind in self._encoders:
                self._encoders[kind].write(np.asarray(picture), pts)
            else:
                save_png(picture, os.path.join(self.base + VIDEO_SUFFIXES[kind], f"{self.frames:06d}.png"))
        self.frames += 1

    def write_sound(self, sound: Sequence[Any]) -> None:
        """Add the input's sound that plays with the frames around it to each encoded video."""
        for encoder in self._encoders.values():
            encoder.write_sound(sound)


def output_files(stem: str) -> List[str]:
    """Every file or folder an input named ``stem`` may write, image or video, case-folded (case-insensitive
    disks merge a.png and A.png)."""
    suffixes = itertools.chain(IMAGE_SUFFIXES.values(), VIDEO_SUFFIXES.values())
    return [(stem + suffix).casefold() for suffix in suffixes]


def output_names(files: Sequence[Tuple[str, str]]) -> List[str]:
    """Output stem (relative path without extension) per ``(path, relative path)`` input; its files are the stem
    plus each kind's suffix.

    An input keeps its stem unless one of its files could also be another input's (``a.png`` and ``a.jpg``;
    ``x.jpg``'s label and ``x_label.jpg``'s colour image). Such inputs add their extension (``a_png``), then a
    number (``a_png_2``) until none of their files is taken, in input order: every file of every input is
    distinct, and the same inputs always get the same names.
    """
    stems = [os.path.splitext(rel)[0] for _, rel in files]
    owners = Counter(f for stem in stems for f in output_files(stem))
    clashing = [any(owners[f] > 1 for f in output_files(stem)) for stem in stems]
    taken = {f for stem, clash in zip(stems, clashing) if not clash for f in output_files(stem)}
    names = []
    for stem, clash, (_, rel) in zip(stems, clashing, files):
        if clash:
            base = f"{stem}_{os.path.splitext(rel)[1][1:]}"
            candidates = itertools.chain([base], (f"{base}_{n}" for n in itertools.count(2)))
            stem = next(c for c in candidates if taken.isdisjoint(output_files(c)))
            taken.update(output_files(stem))
        names.append(stem)
    return names
