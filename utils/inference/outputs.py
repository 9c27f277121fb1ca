"""Writing predictions: one renderer per output kind, written as PNG files for images, and for videos as encoded
videos (``color``, ``overlay``) or folders of per-frame PNGs (``label``, ``labelids``). main.py's
``--save_val_results`` pictures are drawn by the same renderers.

Every PNG is written atomically (:func:`utils.atomic.atomic_write`), so a stopped run leaves no truncated file.
A video's outputs are written under names that say they are partial (``clip_overlay.partial.mp4``,
``clip_label.partial/``) and take their final names when the video is complete, so a stopped rerun never replaces
a complete output.
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

from utils.io.own_outputs import save_png
from utils.io.video import VideoFormat, open_encoder

__all__ = ["OVERLAY_ALPHA", "overlay", "Drawing", "IMAGE_SUFFIXES", "VAL_RESULT_SUFFIXES", "SCENE_LABEL_SUFFIX",
           "VIDEO_SUFFIXES", "OUTPUT_KINDS", "save_png", "render", "ImageWriter", "save_val_result", "video_kinds",
           "video_outputs", "VideoWriter", "planned_outputs", "output_files", "output_names"]

# What each kind adds to an input's output stem (relative path without extension).
IMAGE_SUFFIXES = {"color": ".png", "label": "_label.png", "overlay": "_overlay.png", "labelids": "_labelIds.png"}
SCENE_LABEL_SUFFIX = "_label.tif"  # a multi-band model's label map of a scene, a GeoTIFF (utils.geotiff)
# For a video: encoded videos, or folders holding one PNG per frame.
VIDEO_SUFFIXES = {"color": "_color.mp4", "overlay": "_overlay.mp4", "label": "_label", "labelids": "_labelIds"}
# main.py --save_val_results: the original's names, {index} + each suffix
VAL_RESULT_SUFFIXES = ("_image.png", "_target.png", "_pred.png", "_overlay.png")
PARTIAL = ".partial"  # what a video's outputs add to their names until the video is complete
ENCODED_KINDS = ("color", "overlay")
OUTPUT_KINDS = tuple(IMAGE_SUFFIXES)
OVERLAY_ALPHA = 0.7


def overlay(image: np.ndarray, colour_mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend an (H, W, 3) uint8 colour mask over an (H, W, 3) uint8 image."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colour_mask.astype(np.float32)
    return blended.round().astype(np.uint8)


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
RENDERERS: Dict[str, Renderer] = {"color": _color, "label": _label, "overlay": _overlay,
                                  "labelids": _labelids}


def render(kind: str, drawing: Drawing, image: np.ndarray, labels: np.ndarray) -> Image.Image:
    """Output ``kind`` of an (H, W, 3) uint8 RGB ``image`` and its (H, W) class indices ``labels`` (uint8, or any
    integers 0..255)."""
    return RENDERERS[kind](drawing, image, labels)


class ImageWriter:
    """The PNG of each asked ``kinds`` for an image, at ``folder``/stem + the kind's suffix, each written
    atomically."""

    def __init__(self, folder: str, kinds: Sequence[str], drawing: Drawing):
        self.folder, self.kinds, self.drawing = folder, tuple(kinds), drawing

    def write(self, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
        """OSError when a file cannot be written (those written before it are whole)."""
        base = os.path.join(self.folder, stem)
        for kind in self.kinds:
            save_png(render(kind, self.drawing, image, labels), base + IMAGE_SUFFIXES[kind])


def save_val_result(folder: str, index: int, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                    palette: np.ndarray) -> None:
    """``{index}_image.png``, ``_target.png``, ``_pred.png`` and ``_overlay.png`` in ``folder``, as the original's
    --save_val_results names them: the (H, W, 3) uint8 ``image``, and the class indices of ``target`` and ``pred``
    drawn with the 256x3 ``palette`` (the dataset's)."""
    drawing = Drawing(palette)
    pictures = (Image.fromarray(image), render("color", drawing, image, target), render("color", drawing, image, pred),
                render("overlay", drawing, image, pred))
    for suffix, picture in zip(VAL_RESULT_SUFFIXES, pictures, strict=True):
        save_png(picture, os.path.join(folder, str(index) + suffix))


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


def _promote_frames(partial: str, final: str) -> None:
    """Put the frames of folder ``partial`` at ``final``, in place of an earlier run's frames there."""
    _remove_frames(final)
    if not os.path.isdir(final):
        os.replace(partial, final)
        return
    for name in sorted(os.listdir(partial)):  # the folder stayed: it holds files of the user's too
        os.replace(os.path.join(partial, name), os.path.join(final, name))
    os.rmdir(partial)


def video_outputs(folder: str, stem: str, kinds: Sequence[str]) -> Dict[str, Tuple[str, str]]:
    """(final, partial) path of each output of the video named ``stem``, by kind: an MP4 file or a folder of
    frames (``clip_overlay.mp4`` and ``clip_overlay.partial.mp4``, ``clip_label`` and ``clip_label.partial``)."""
    paths = {}
    for kind in video_kinds(kinds):
        final = os.path.join(folder, stem + VIDEO_SUFFIXES[kind])
        name, extension = (final[:-len(".mp4")], ".mp4") if kind in ENCODED_KINDS else (final, "")
        paths[kind] = (final, name + PARTIAL + extension)
    return paths


class VideoWriter:
    """The outputs of one video, frame by frame: encoded videos for ``color`` and ``overlay`` (same frame times and
    size, and sound), a folder of ``000000.png``... for ``label`` and ``labelids``. A context manager: the videos are
    finished, playable, when it ends, also early; nothing is held in memory but the encoders'.

    Everything is written under partial names (:func:`video_outputs`) and renamed to the final names when the
    block ends normally, replacing an earlier run's outputs then. After :meth:`stop` (a stop signal) the partial
    outputs stay as they are, so a complete output is never replaced by a partial one; after an error the video
    leaves no partial output (its videos are never written, its frames are cleared)."""

    def __init__(self, folder: str, stem: str, kinds: Sequence[str], drawing: Drawing, video_format: VideoFormat):
        self.paths, self.drawing = video_outputs(folder, stem, kinds), drawing
        self.format = video_format
        self.frames = 0
        self.stopped = False
        self._encoders = {}
        self._stack = contextlib.ExitStack()

    def _partial_frame_folders(self) -> List[str]:
        return [partial for kind, (_, partial) in self.paths.items() if kind not in ENCODED_KINDS]

    def __enter__(self) -> "VideoWriter":
        for folder in self._partial_frame_folders():  # a stopped run's: this run's frames only
            _remove_frames(folder)
        with self._stack:  # an encoder that fails to open closes those opened before it
            for kind, (_, partial) in self.paths.items():
                if kind in ENCODED_KINDS:
                    self._encoders[kind] = self._stack.enter_context(open_encoder(partial, self.format))
            self._stack = self._stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stack.__exit__(*exc)  # flushes the encoders: their partial videos appear (none after an error)
        except BaseException:
            self._clear_frames()
            raise
        if exc[0] is not None:
            self._clear_frames()
        elif not self.stopped:
            for kind, (final, partial) in self.paths.items():
                if kind in ENCODED_KINDS:
                    os.replace(partial, final)
                else:
                    _promote_frames(partial, final)

    def _clear_frames(self) -> None:
        for folder in self._partial_frame_folders():
            _remove_frames(folder)

    def stop(self) -> None:
        """Keep the outputs under their partial names when the block ends (the run is stopping early)."""
        self.stopped = True

    def write(self, image: np.ndarray, labels: np.ndarray, pts: int) -> None:
        """Add the next frame: (H, W, 3) uint8 RGB and its (H, W) uint8 class indices, shown at ``pts`` (the input
        frame's timestamp, in the format's time base)."""
        for kind, (_, partial) in self.paths.items():
            picture = render(kind, self.drawing, image, labels)
            if kind in self._encoders:
                self._encoders[kind].write(np.asarray(picture), pts)
            else:
                save_png(picture, os.path.join(partial, f"{self.frames:06d}.png"))
        self.frames += 1

    def write_sound(self, sound: Sequence[Any]) -> None:
        """Add the input's sound that plays with the frames around it to each encoded video."""
        for encoder in self._encoders.values():
            encoder.write_sound(sound)


def planned_outputs(folder: str, image_stems: Sequence[str], video_stems: Sequence[str],
                    kinds: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(files, folders of frames) that predicting images and videos with these output stems (:func:`output_names`)
    writes in ``folder``, partial ones included, and the label GeoTIFFs of a multi-band model's scenes (the model is
    not known yet when this is asked)."""
    suffixes = [IMAGE_SUFFIXES[kind] for kind in kinds] + ([SCENE_LABEL_SUFFIX] if "label" in kinds else [])
    files = [os.path.join(folder, stem + suffix) for stem in image_stems for suffix in suffixes]
    folders = []
    for stem in video_stems:
        for kind, pair in video_outputs(folder, stem, kinds).items():
            (files if kind in ENCODED_KINDS else folders).extend(pair)
    return files, folders


def output_files(stem: str) -> List[str]:
    """Every file or folder an input named ``stem`` may write, image or video (partial ones too), case-folded
    (case-insensitive disks merge a.png and A.png)."""
    video = [path for pair in video_outputs("", stem, OUTPUT_KINDS).values() for path in pair]
    return [(stem + suffix).casefold() for suffix in IMAGE_SUFFIXES.values()] + [path.casefold() for path in video]


def output_names(files: Sequence[Tuple[str, str]]) -> List[str]:
    """Output stem (relative path without extension) per ``(path, relative path)`` input; its files are the stem
    plus each kind's suffix.

    An input keeps its stem unless one of its files could also be another input's (``a.png`` and ``a.jpg``;
    ``x.jpg``'s label and ``x_label.jpg``'s colour image), or a folder of outputs (``x.jpg`` and ``x.png/y.jpg``).
    Such inputs add their extension (``a_png``), then a number (``a_png_2``) until none of their files is taken,
    in input order: every file of every input is distinct, and the same inputs always get the same names.
    """
    stems = [os.path.splitext(rel)[0] for _, rel in files]
    owners = Counter(f for stem in stems for f in output_files(stem))
    folders = {folder.casefold() for stem in stems for folder in _folders_of(stem)}  # x.png/y.jpg: x.png is one
    clashing = [any(owners[f] > 1 or f in folders for f in output_files(stem)) for stem in stems]
    taken = folders | {f for stem, clash in zip(stems, clashing) if not clash for f in output_files(stem)}
    names = []
    for stem, clash, (_, rel) in zip(stems, clashing, files):
        if clash:
            base = f"{stem}_{os.path.splitext(rel)[1][1:]}"
            candidates = itertools.chain([base], (f"{base}_{n}" for n in itertools.count(2)))
            stem = next(c for c in candidates if taken.isdisjoint(output_files(c)))
            taken.update(output_files(stem))
        names.append(stem)
    return names


def _folders_of(stem: str) -> List[str]:
    """The folders above an output stem, each as a relative path (``a/b/c`` -> ``a``, ``a/b``)."""
    folders = []
    folder = os.path.dirname(stem)
    while folder:
        folders.append(folder)
        folder = os.path.dirname(folder)
    return folders
