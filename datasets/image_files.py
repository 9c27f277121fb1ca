"""Inputs to predict on: a file, a folder (recursive) or a glob of images and videos. Images are decoded robustly to
RGB in DataLoader workers; videos frame by frame in a thread, in batches (:class:`VideoFrames`)."""
import contextlib
import dataclasses
import glob
import itertools
import os
import queue
import threading
from fractions import Fraction
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils import data

from utils.video import VideoError, import_av

from .folder import IMAGE_EXTENSIONS
from .utils import DatasetError, as_rgb8, open_within_limit

__all__ = ["find_images", "ImageFiles", "to_rgb", "VIDEO_EXTENSIONS", "is_video", "VideoFrames"]

# Containers FFmpeg reads, by the extensions they are usually saved with (any codec inside them).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv",
                    ".3gp", ".ogv")

GLOB_CHARS = "*?["


def find_images(spec: str, what: str = "input") -> List[Tuple[str, str]]:
    """(path, path relative to the input root) for every image and video named by ``spec``, sorted.

    Extensions match case-insensitively (``.JPG`` counts), in globs too. A folder is searched recursively. ``what``
    names ``spec`` in errors.
    """
    if any(c in spec for c in GLOB_CHARS):
        paths = [p for p in glob.glob(_any_case_extension(spec), recursive=True) if os.path.isfile(p)]
        root = os.path.dirname(spec.split("*")[0].split("?")[0].split("[")[0]) or "."
    elif os.path.isfile(spec):
        return [(spec, os.path.basename(spec))]
    elif os.path.isdir(spec):
        root = spec
        paths = [os.path.join(d, f) for d, _, files in os.walk(spec) for f in files]
    else:
        raise DatasetError(f"{what} {spec} does not exist (give a file, a folder or a glob)")
    images = sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
    if not images:
        raise DatasetError(f"{what} {spec} holds no images ({', '.join(IMAGE_EXTENSIONS)}) or videos "
                           f"({', '.join(VIDEO_EXTENSIONS)})")
    return [(p, os.path.relpath(p, root)) for p in images]


def _any_case_extension(pattern: str) -> str:
    """``pattern`` with a plain extension at its end matching in any case: ``*.jpg`` finds ``A.JPG`` too, as a
    folder's walk does, on case-sensitive file systems as well."""
    stem, extension = os.path.splitext(pattern)
    if not extension or any(c in extension for c in GLOB_CHARS):
        return pattern
    return stem + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in extension)


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation (a phone photo shows upright) and convert any mode to 8-bit RGB."""
    return as_rgb8(ImageOps.exif_transpose(img))


class ImageFiles(data.Dataset):
    """Item ``i`` is ``(i, uint8 tensor (3, H, W))``, or ``(i, error message)`` when the file cannot be decoded or is
    over ``--max_image_pixels`` (predict.py bounds the memory of large images with sliding windows)."""

    def __init__(self, files: List[Tuple[str, str]]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[int, object]:
        path = self.files[index][0]
        try:
            with open_within_limit(path, f"image {path}") as img:
                img.load()
                rgb = to_rgb(img)
        except DatasetError as exc:
            return index, str(exc)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
            return index, f"cannot decode {path}: {exc}"
        return index, torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()


def is_video(path: str) -> bool:
    """Whether ``path`` is read as a video (by its extension)."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _reason(exc: Exception) -> str:
    """FFmpeg's own words for an error (av's message adds the errno and the path), on one line."""
    text = getattr(exc, "strerror", None) or str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


AV_TIME_BASE = 1_000_000  # a container's duration is in microseconds


def _announced_frames(container, stream, fps: Fraction) -> int:
    """How many frames the file says its video stream has: the stream's count, else its own duration (or the
    Matroska DURATION tag) times the frame rate, else the container's duration when the video is its only stream
    (with audio, the container lasts as long as the longest stream); 0 when unknown."""
    if stream.frames:
        return stream.frames
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * fps)
    tag = stream.metadata.get("DURATION", "")  # "HH:MM:SS.fraction", what FFmpeg's Matroska muxer writes
    if tag.count(":") == 2:
        hours, minutes, seconds = tag.split(":")
        with contextlib.suppress(ValueError):
            return round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * fps)
    if container.duration and len(container.streams) == 1:
        return round(container.duration * fps / AV_TIME_BASE)
    return 0


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the writers need to keep: frame rate and size; ``frames`` is how many the file announces: the
    stream's count, else its duration times the frame rate (0: unknown, then nothing is checked)."""

    fps: Fraction
    width: int
    height: int
    frames: int


class VideoFrames:
    """The frames of a video as uint8 (N, 3, H, W) batches of up to ``batch_size``, decoded by FFmpeg in a thread.

    At most ``queued`` batches wait, so memory stays flat whatever the length. Opening checks that the file is a
    video with a video stream (VideoError otherwise); a frame that cannot be decoded later raises VideoError from
    the iteration. Use it as a context manager: leaving stops the thread and closes the file.
    """

    def __init__(self, path: str, batch_size: int, queued: int = 2):
        av = import_av()
        self.path, self.batch_size = path, batch_size
        try:
            self._container = av.open(path)
        except Exception as exc:  # av raises FFmpeg's errors (InvalidDataError, ...) for what it cannot read
            raise VideoError(f"cannot read video {path}: {_reason(exc)} (a damaged or cut-short file, or not a "
                             "video?)") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{path} has no video stream (audio only?)")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's own frame and slice threads
        fps = stream.average_rate or stream.guessed_rate
        if not fps or not stream.width or not stream.height:
            self._container.close()
            raise VideoError(f"cannot read video {path}: no frame rate or size in its video stream")
        frames = _announced_frames(self._container, stream, Fraction(fps))
        # The first frame says how the video is to be shown: phones store portrait clips sideways, with a
        # rotation for players to apply. Frames are turned upright, so masks and outputs show as the input plays.
        self._decoded = self._container.decode(video=0)
        try:
            self._first = next(self._decoded, None)
        except Exception as exc:  # FFmpeg's decoding errors
            self._container.close()
            raise VideoError(f"cannot decode video {path}: {_reason(exc)}") from None
        if self._first is None:
            self._container.close()
            raise VideoError(f"{path} holds no video frame")
        self._stored_size = (stream.width, stream.height)
        self._turns = round((self._first.rotation or 0) / 90) % 4  # counterclockwise quarter turns, as np.rot90
        width, height = (stream.height, stream.width) if self._turns % 2 else (stream.width, stream.height)
        self.info = VideoInfo(Fraction(fps), width, height, frames)
        self._queue: "queue.Queue[object]" = queue.Queue(maxsize=queued)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _put(self, item: object) -> bool:
        """Hand ``item`` to the reader; False once it has stopped listening."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        batch: List[torch.Tensor] = []
        width, height = self._stored_size
        try:
            for frame in itertools.chain([self._first], self._decoded):
                # a stream may change size midway: every frame is scaled to the first one's, as the writers need
                rgb = np.rot90(frame.to_ndarray(format="rgb24", width=width, height=height), self._turns)
                batch.append(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
                if len(batch) == self.batch_size:
                    if not self._put(torch.stack(batch)):
                        return
                    batch = []
            if batch:
                self._put(torch.stack(batch))
            self._put(None)
        except Exception as exc:  # FFmpeg's decoding errors: a truncated or damaged stream
            if batch:
                self._put(torch.stack(batch))
            self._put(VideoError(f"cannot decode video {self.path} after its first frames: {_reason(exc)}"))

    def __iter__(self) -> Iterator[torch.Tensor]:
        self._thread = threading.Thread(target=self._decode, name="video decoder", daemon=True)
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._container.close()
