"""Videos through PyAV (FFmpeg's libraries, as torchvision uses them): the optional import, and an encoder that
turns RGB frames into a playable file as they come.

PyAV is optional: it is imported only when an input is a video (:func:`import_av`).
"""
import contextlib
import importlib
from fractions import Fraction
from types import ModuleType
from typing import Iterator, Tuple

import numpy as np

from .atomic import atomic_write
from .own_outputs import OWN_MARK, VIDEO_MARK_KEY

__all__ = ["AV_PIP", "VideoError", "import_av", "pick_encoding", "VideoEncoder", "open_encoder"]

AV_PIP = "pip install av==18.1.0"  # as pinned in requirements-dev.txt
# H.264 plays everywhere; MPEG-4 Part 2 is in every FFmpeg build, for those without libx264.
PREFERRED_CODECS = ("libx264", "mpeg4")


class VideoError(ValueError):
    """A video that cannot be read or written (or PyAV missing); the message names the file and what to do."""


def import_av() -> ModuleType:
    """The ``av`` package; a VideoError with the pip command when it is not installed."""
    try:
        return importlib.import_module("av")
    except ImportError:
        raise VideoError(f"videos need PyAV, which is not installed: {AV_PIP}") from None


def _has_encoder(av: ModuleType, name: str) -> bool:
    try:
        av.Codec(name, "w")
    except Exception:  # av raises its own error types for an unknown codec
        return False
    return True


def pick_encoding(width: int, height: int) -> Tuple[str, str]:
    """(codec, pixel format) for a ``width`` x ``height`` video: H.264 in yuv420p where available.

    yuv420p stores colour at half resolution, so it needs even sizes; odd ones keep their size with H.264 in
    yuv444p (full-resolution colour). A build without libx264 has MPEG-4 only, in yuv420p: odd sizes are a
    VideoError there.
    """
    av = import_av()
    codec = next((name for name in PREFERRED_CODECS if _has_encoder(av, name)), None)
    if codec is None:
        raise VideoError(f"this FFmpeg build has none of the encoders {', '.join(PREFERRED_CODECS)}: install PyAV's "
                         f"wheels ({AV_PIP})")
    even = width % 2 == 0 and height % 2 == 0
    if even:
        return codec, "yuv420p"
    if codec == "libx264":
        return codec, "yuv444p"
    raise VideoError(f"a {width}x{height} video needs libx264 for its odd size, and this FFmpeg build has only "
                     f"mpeg4: install PyAV's wheels ({AV_PIP})")


class VideoEncoder:
    """Frames in, packets out to an open container; :meth:`close` flushes the encoder so the file plays."""

    def __init__(self, container, fps: Fraction, width: int, height: int):
        av = import_av()
        codec, pixel_format = pick_encoding(width, height)
        self._av, self.container = av, container
        self.stream = container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pixel_format

    def write(self, rgb: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 RGB frame."""
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # the frames the encoder still holds (B-frames, lookahead)
        self.container.close()


@contextlib.contextmanager
def open_encoder(path: str, fps: Fraction, width: int, height: int) -> Iterator[VideoEncoder]:
    """A :class:`VideoEncoder` writing ``path`` (MP4), which appears, playable, when the block ends, also when it
    ends early (a stop signal); an exception leaves no file."""
    av = import_av()
    with atomic_write(path) as f:
        container = av.open(f, "w", format="mp4")
        container.metadata[VIDEO_MARK_KEY] = OWN_MARK  # a later run that walks this folder knows it as an output
        encoder = VideoEncoder(container, fps, width, height)
        try:
            yield encoder
        finally:
            encoder.close()
