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
from torch.utils import data

from utils.io.own_outputs import same_path
from utils.io.video import VideoError, VideoFormat, ffmpeg_reason, import_av, sound_is_copied

from .folder import IMAGE_EXTENSIONS
from .utils import DatasetError, decode_image

__all__ = ["find_images", "left_out_of_search", "ImageFiles", "VIDEO_EXTENSIONS", "is_video", "FrameBatch",
           "VideoFrames"]

# Containers FFmpeg reads, by the extensions they are usually saved with (any codec inside them).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv",
                    ".3gp", ".ogv")

GLOB_CHARS = "*?["


def find_images(spec: str, exclude: Optional[str] = None, what: str = "input") -> List[Tuple[str, str]]:
    """(path, path relative to the input root) for every image and video named by ``spec``, sorted.

    Extensions match case-insensitively (``.JPG`` counts), in globs too. A folder is searched recursively. A file
    or folder that exists is taken as it is, whatever characters its name holds; otherwise ``*``, ``?`` or ``[``
    make ``spec`` a glob. The folder ``exclude`` (where the results go), and all in it, is left out when it lies
    below the input root. ``what`` names ``spec`` in errors.
    """
    if os.path.isfile(spec):  # an existing path is itself, even with [, * or ? in its name
        return [(spec, os.path.basename(spec))]
    if not os.path.isdir(spec) and any(c in spec for c in GLOB_CHARS):
        paths = [p for p in glob.glob(_any_case_extension(spec), recursive=True) if os.path.isfile(p)]
        root = _glob_root(spec)
        if exclude:
            paths = [p for p in paths if not _below(os.path.dirname(p), root, exclude)]
    elif os.path.isdir(spec):
        root = spec
        paths = []
        for folder, subfolders, files in os.walk(spec):
            subfolders[:] = [sub for sub in subfolders if not (exclude and same_path(os.path.join(folder, sub),
                                                                                        exclude))]
            paths.extend(os.path.join(folder, name) for name in files)
    else:
        raise DatasetError(f"{what} {spec} does not exist (give a file, a folder or a glob)")
    images = sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
    if not images:
        raise DatasetError(f"{what} {spec} holds no images ({', '.join(IMAGE_EXTENSIONS)}) or videos "
                           f"({', '.join(VIDEO_EXTENSIONS)})")
    return [(p, os.path.relpath(p, root)) for p in images]


def _glob_root(pattern: str) -> str:
    """The folder a glob searches from: the part of ``pattern`` before its first wildcard, up to a separator."""
    return os.path.dirname(pattern.split("*")[0].split("?")[0].split("[")[0]) or "."


def left_out_of_search(spec: str, exclude: str) -> bool:
    """Whether :func:`find_images` of ``spec`` (a folder or a glob) leaves out the folder ``exclude``: it lies
    inside the folder searched, so the files in it are not taken as inputs."""
    if os.path.isfile(spec):
        return False
    root = spec if os.path.isdir(spec) else _glob_root(spec)
    for start in (os.path.abspath(exclude), os.path.realpath(exclude)):  # a link into --input is inside it too
        folder = os.path.dirname(start)
        while not same_path(folder, root) and folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)
        if same_path(folder, root):
            return True
    return False


def _below(folder: str, root: str, exclude: str) -> bool:
    """Whether ``folder`` is ``exclude`` or inside it, looking at the folders from ``folder`` up to ``root``
    (itself not included)."""
    while os.path.normpath(folder) != os.path.normpath(root) and folder != os.path.dirname(folder):
        if same_path(folder, exclude):
            return True
        folder = os.path.dirname(folder)
    return False


def _any_case_extension(pattern: str) -> str:
    """``pattern`` with a plain extension at its end matching in any case: ``*.jpg`` finds ``A.JPG`` too, as a
    folder's walk does, on case-sensitive file systems as well."""
    stem, extension = os.path.splitext(pattern)
    if not extension or any(c in extension for c in GLOB_CHARS):
        return pattern
    return stem + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in extension)


class ImageFiles(data.Dataset):
    """Item ``i`` is ``(i, uint8 tensor (3, H, W))``, upright (EXIF orientation applied: a phone photo shows as it was
    taken) and 8-bit RGB whatever the file's mode; or ``(i, error message)`` when the file cannot be decoded or is
    over ``--max_image_pixels`` (predict.py bounds the memory of large images with sliding windows)."""

    def __init__(self, files: List[Tuple[str, str]]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[int, object]:
        path = self.files[index][0]
        try:
            rgb = decode_image(path, f"image {path}", upright=True, rgb=True)
        except DatasetError as exc:
            return index, str(exc)
        return index, torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()


def is_video(path: str) -> bool:
    """Whether ``path`` is read as a video (by its extension)."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


AV_TIME_BASE = 1_000_000  # a container's duration is in microseconds


def _announced_end(container, stream) -> Optional[Fraction]:
    """When the file says its video stream ends, in seconds (None: it does not say): the stream's start plus its
    duration, else the Matroska DURATION tag (an end time, as FFmpeg's muxer writes it), else the container's
    duration when the video is its only stream (with audio, the container lasts as long as the longest stream)."""
    if stream.duration and stream.time_base:
        return ((stream.start_time or 0) + stream.duration) * stream.time_base
    tag = stream.metadata.get("DURATION", "")  # "HH:MM:SS.fraction"
    if tag.count(":") == 2:
        hours, minutes, seconds = tag.split(":")
        with contextlib.suppress(ValueError):
            return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)
    if container.duration and len(container.streams) == 1:
        return Fraction(container.duration, AV_TIME_BASE)
    return None


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the writers keep (:class:`VideoFormat`: size, time base, frame rate, sound), and ``frames``, how many the
    file announces: the stream's count, else its duration times the frame rate (0: unknown; for a progress bar)."""

    format: VideoFormat
    frames: int


@dataclasses.dataclass(frozen=True)
class FrameBatch:
    """Consecutive frames of a video: uint8 ``images`` (N, 3, H, W), upright RGB; ``times``, each frame's timestamp
    in the video's time base; ``sound``, what of the soundtrack the file holds among them (PyAV packets to copy, or
    decoded frames to re-encode). N is 0 for sound alone (a soundtrack that runs on after the last frame)."""

    images: torch.Tensor
    times: List[int]
    sound: List[object]


SOUND_HELD = 256  # sound items (5 s of AAC at 48 kHz) that wait for a frame before they are handed on alone
LIVENESS_CHECK_S = 1.0  # how often the reader checks, while it waits, that the decoder thread is alive


class VideoFrames:
    """The frames of a video as :class:`FrameBatch` es of up to ``batch_size``, decoded by FFmpeg in a thread, with
    the sound of its main audio stream, in the form the outputs carry it (see :func:`utils.video.sound_is_copied`).

    At most ``queued`` batches wait, so memory stays flat whatever the length. Opening checks that the file is a
    video with a video stream (VideoError otherwise); a frame that cannot be decoded later raises VideoError from
    the iteration, as does a decoder thread that dies. Use it as a context manager: leaving stops the thread and
    closes the file (a VideoError from opening leaves nothing open).
    """

    def __init__(self, path: str, batch_size: int, queued: int = 2):
        self._av = import_av()
        self.path, self.batch_size = path, batch_size
        try:
            self._container = self._av.open(path)
        except Exception as exc:  # av raises FFmpeg's errors (InvalidDataError, ...) for what it cannot read
            raise VideoError(f"cannot read video {path}: {ffmpeg_reason(exc)} (a damaged or cut-short file, or not "
                             "a video?)") from None
        try:
            self._open()
        except BaseException:
            self._container.close()
            raise
        self._queue: "queue.Queue[object]" = queue.Queue(maxsize=queued)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.decoded = 0  # frames handed on so far

    def _open(self) -> None:
        """Check the streams, read up to the first frame, and learn what the writers need (:attr:`info`)."""
        if not self._container.streams.video:
            raise VideoError(f"{self.path} has no video stream (audio only?)")
        self._video = stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's own frame and slice threads
        fps = stream.average_rate or stream.guessed_rate
        if not fps or not stream.width or not stream.height or not stream.time_base:
            raise VideoError(f"cannot read video {self.path}: no frame rate, size or time base in its video stream")
        self._sound = self._container.streams.best("audio")
        if self._sound is not None and self._sound.codec_context is None:  # a codec FFmpeg does not know
            self._sound = None
        self._copy_sound = self._sound is not None and sound_is_copied(self._sound)
        self._hidden = 0  # frames an MP4 edit list hides (a clip trimmed without re-encoding)
        self._items = self._demuxed()
        self._early = self._up_to_first_frame()
        # The first frame says how the video is to be shown: phones store portrait clips sideways, with a
        # rotation for players to apply. Frames are turned upright, so masks and outputs show as the input plays.
        first = self._early[-1]
        self._stored_size = (stream.width, stream.height)
        self._turns = round((first.rotation or 0) / 90) % 4  # counterclockwise quarter turns, as np.rot90
        width, height = (stream.height, stream.width) if self._turns % 2 else (stream.width, stream.height)
        self._time_base, self._step = stream.time_base, max(1, round(1 / (Fraction(fps) * stream.time_base)))
        self._start = first.pts if first.pts is not None else 0
        self._end: Optional[int] = None  # when the last frame handed on ends, in the time base
        self._announced_frames, self._announced_end = stream.frames, _announced_end(self._container, stream)
        frames = stream.frames or (round((self._announced_end - self._start * stream.time_base) * fps)
                                   if self._announced_end is not None else 0)
        pixel_aspect = Fraction(stream.sample_aspect_ratio or 1)
        pixel_aspect = 1 / pixel_aspect if self._turns % 2 else pixel_aspect
        self.info = VideoInfo(VideoFormat(width, height, stream.time_base, Fraction(fps), self._sound, pixel_aspect),
                              max(frames, 0))

    def _up_to_first_frame(self) -> List[object]:
        """The sound that the file holds before its first frame, and that frame (VideoError if it has none)."""
        early: List[object] = []
        try:
            for item in self._items:
                early.append(item)
                if isinstance(item, self._av.VideoFrame):
                    return early
        except Exception as exc:  # FFmpeg's decoding errors
            raise VideoError(f"cannot decode video {self.path}: {ffmpeg_reason(exc)}") from None
        raise VideoError(f"{self.path} holds no video frame")

    def _demuxed(self) -> Iterator[object]:
        """The video's frames and its sound (packets to copy, else decoded frames), in the order the file holds them."""
        streams = [self._video] + ([self._sound] if self._sound is not None else [])
        for packet in self._container.demux(*streams):
            # by its stream, not its stream_index: PyAV leaves that 0 in the empty packets that flush the decoders
            if packet.stream.index == self._video.index:
                self._hidden += packet.is_discard and packet.size > 0
                yield from packet.decode()
            elif not self._copy_sound:
                yield from packet.decode()
            elif packet.dts is not None:  # not the empty packet that ends a stream
                yield packet

    def _time_of(self, frame) -> int:
        """``frame``'s timestamp (when the one before it ends, if the file gives none); notes when it ends."""
        pts = frame.pts if frame.pts is not None else (self._end or 0)
        self._end = pts + (frame.duration or self._step)
        return pts

    def _upright(self, frame) -> torch.Tensor:
        # a stream may change size midway: every frame is scaled to the first one's, as the writers need
        width, height = self._stored_size
        rgb = np.rot90(frame.to_ndarray(format="rgb24", width=width, height=height), self._turns)
        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)

    def _batch(self, images: List[torch.Tensor], times: List[int], sound: List[object]) -> FrameBatch:
        if not images:
            return FrameBatch(torch.empty((0, 3, self.info.format.height, self.info.format.width), dtype=torch.uint8),
                              [], sound)
        return FrameBatch(torch.stack(images), times, sound)

    def _put(self, item: object) -> bool:
        """Hand ``item`` to the reader; False once it has stopped listening."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill_queue(self) -> None:
        """Put the batches in the queue, until the end or until the reader stops listening."""
        images, times, sound = [], [], []
        for item in itertools.chain(self._early, self._items):
            if isinstance(item, self._av.VideoFrame):
                images.append(self._upright(item))
                times.append(self._time_of(item))
                self.decoded += 1
            else:
                sound.append(item)
            if len(images) == self.batch_size or len(sound) >= SOUND_HELD:
                if not self._put(self._batch(images, times, sound)):
                    return
                images, times, sound = [], [], []
        if images or sound:
            self._put(self._batch(images, times, sound))

    def _decode(self) -> None:
        """The thread: batches into the queue, then None at the end, or a VideoError when anything fails (the last
        item it puts, whatever happens)."""
        end: object = None
        try:
            self._fill_queue()
        except BaseException as exc:  # FFmpeg's decoding errors: a truncated or damaged stream
            end = VideoError(f"cannot decode video {self.path} after its first {self.decoded} frames: "
                             f"{ffmpeg_reason(exc)}")
        finally:
            self._put(end)

    def _next(self) -> object:
        """The decoder's next batch, None at its end, or its error; a decoder thread that died is an error too."""
        while True:
            try:
                return self._queue.get(timeout=LIVENESS_CHECK_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return VideoError(f"cannot decode video {self.path}: the decoder stopped after "
                                      f"{self.decoded} frames without saying why")

    def __iter__(self) -> Iterator[FrameBatch]:
        self._thread = threading.Thread(target=self._decode, name="video decoder", daemon=True)
        self._thread.start()
        while True:
            item = self._next()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def shortfall(self) -> str:
        """After the last batch: '' when the file held what its header announces, else how much it held of it
        ("14 of the 30 frames", "0.50 s of the 1.00 s"). Headers are rough: a few frames, or 5%, may lack."""
        if self._announced_frames:
            announced = self._announced_frames - self._hidden
            if announced - self.decoded > max(2, announced // 20):
                return f"{self.decoded} of the {announced} frames"
        elif self._announced_end is not None and self._end is not None:
            start = self._start * self._time_base
            announced, held = self._announced_end - start, self._end * self._time_base - start
            if announced - held > max(2 / self.info.format.fps, announced / 20):
                return f"{float(held):.2f} s of the {float(announced):.2f} s"
        return ""

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join()
        finally:
            self._container.close()
