"""Videos through PyAV (FFmpeg's libraries, as torchvision uses them): the optional import, what an output keeps of
its input (:class:`VideoFormat`), and an encoder that turns RGB frames into a playable file as they come, with the
input's sound.

PyAV is optional: it is imported only when an input is a video (:func:`import_av`).
"""
import contextlib
import dataclasses
from fractions import Fraction
from types import ModuleType
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from utils.io.atomic import atomic_write
from utils.io.optional_packages import import_optional, pip_install
from utils.io.own_outputs import OWN_MARK, VIDEO_MARK_KEY

__all__ = ["VideoError", "import_av", "ffmpeg_reason", "pick_codec", "sound_is_copied", "VideoFormat",
           "VideoEncoder", "open_encoder"]

# H.264 plays everywhere; MPEG-4 Part 2 is in every FFmpeg build, for those without libx264.
PREFERRED_CODECS = ("libx264", "mpeg4")
# 4:2:0 chroma, the only layout browsers and most players decode; it needs even sides.
PIXEL_FORMAT = "yuv420p"
# Sound that MP4 holds and browsers play is copied packet for packet; any other is re-encoded to AAC.
COPIED_SOUND_CODECS = ("aac", "mp3", "opus", "flac")
SOUND_CODEC = "aac"
SOUND_RATE = 48000  # for sound at a sample rate AAC does not have


class VideoError(ValueError):
    """A video that cannot be read or written (or PyAV missing); the message names the file and what to do."""


def import_av() -> ModuleType:
    """The ``av`` package; a VideoError with the pip command when it is not installed."""
    return import_optional("av", "videos", VideoError)


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error (av's message adds the errno and the path), on one line."""
    text = getattr(exc, "strerror", None) or str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def _has_encoder(av: ModuleType, name: str) -> bool:
    try:
        av.Codec(name, "w")
    except Exception:  # av raises its own error types for an unknown codec
        return False
    return True


def pick_codec() -> str:
    """The first of :data:`PREFERRED_CODECS` that this FFmpeg build can encode (H.264 with PyAV's wheels)."""
    av = import_av()
    codec = next((name for name in PREFERRED_CODECS if _has_encoder(av, name)), None)
    if codec is None:
        raise VideoError(f"this FFmpeg build has none of the encoders {', '.join(PREFERRED_CODECS)}: install PyAV's "
                         f"wheels ({pip_install('av')})")
    return codec


def sound_is_copied(stream) -> bool:
    """Whether the sound of PyAV's audio ``stream`` goes into the outputs as it is (else it is decoded and
    re-encoded to AAC)."""
    return stream.codec_context.codec.canonical_name in COPIED_SOUND_CODECS  # "mp3", where the decoder is "mp3float"


@dataclasses.dataclass(frozen=True)
class VideoFormat:
    """What an output video keeps of its input: the size it plays at, the time base of its frames' timestamps, the
    average frame rate (for the encoder's rate control; the timestamps say when each frame shows), the input's
    audio stream (PyAV's), whose sound the outputs carry (None: silent), and the shape of a pixel (width over
    height: not 1 in anamorphic video, which players stretch)."""

    width: int
    height: int
    time_base: Fraction
    fps: Fraction
    sound: Optional[Any] = None
    pixel_aspect: Fraction = Fraction(1)


class VideoEncoder:
    """Frames and sound in, packets out to an open container; :meth:`close` flushes the encoders and closes it.

    H.264 in yuv420p, which needs even sides: an odd width or height gets one more column or row, a copy of the
    last one. Each frame keeps the timestamp it is given, so a variable frame rate stays as it was.
    """

    def __init__(self, container, video_format: VideoFormat):
        self._av, self.container, self.format = import_av(), container, video_format
        self.stream = container.add_stream(pick_codec(), rate=video_format.fps)
        width, height = video_format.width, video_format.height
        self.stream.width, self.stream.height = width + width % 2, height + height % 2  # see write()
        self.stream.pix_fmt = PIXEL_FORMAT
        # PyAV turns RGB into BT.601 YUV in the TV range; saying so keeps players from guessing BT.709 (shifted hues)
        self.stream.codec_context.colorspace = self._av.video.reformatter.Colorspace.ITU601
        self.stream.codec_context.color_range = self._av.video.reformatter.ColorRange.MPEG
        self.stream.codec_context.sample_aspect_ratio = video_format.pixel_aspect
        # the input's time base for the encoder too: PyAV would round every timestamp to 1/fps otherwise
        self.stream.time_base = self.stream.codec_context.time_base = video_format.time_base
        self._last_pts: Optional[int] = None
        self.sound, self._copy = None, False
        if video_format.sound is not None:
            self._copy = sound_is_copied(video_format.sound)
            self.sound = container.add_stream_from_template(video_format.sound) if self._copy else self._aac_stream()

    def _aac_stream(self):
        rate = self.format.sound.rate
        rate = rate if rate in self._av.Codec(SOUND_CODEC, "w").audio_rates else SOUND_RATE
        # "<n>c": FFmpeg's usual layout for that many channels (PCM in Matroska often states none)
        return self.container.add_stream(SOUND_CODEC, rate=rate, layout=f"{len(self.format.sound.layout.channels)}c")

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one (H, W, 3) uint8 RGB frame shown at ``pts`` (in the format's time base)."""
        rows, columns = self.stream.height - rgb.shape[0], self.stream.width - rgb.shape[1]
        if rows or columns:
            rgb = np.pad(rgb, ((0, rows), (0, columns), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        # the muxer needs timestamps that increase: a damaged input may repeat one
        self._last_pts = pts if self._last_pts is None or pts > self._last_pts else self._last_pts + 1
        frame.pts, frame.time_base = self._last_pts, self.format.time_base
        self.container.mux(self.stream.encode(frame))

    def write_sound(self, sound: Sequence[Any]) -> None:
        """Add the input's sound: its packets (copied), or its decoded frames (re-encoded)."""
        for item in sound:
            if self._copy:
                item.stream = self.sound
                self.container.mux(item)
                continue
            if item.pts is not None:  # in samples, as AAC counts (AVI's ticks of 1152-sample MP3 frames collide)
                samples = round(item.pts * item.time_base * item.sample_rate)
                item.pts, item.time_base = samples, Fraction(1, item.sample_rate)
            self.container.mux(self.sound.encode(item))

    def close(self) -> None:
        try:  # the frames the encoders still hold (B-frames, lookahead, AAC's last block)
            self.container.mux(self.stream.encode(None))
            if self.sound is not None and not self._copy:
                self.container.mux(self.sound.encode(None))
        finally:
            self.container.close()


@contextlib.contextmanager
def open_encoder(path: str, video_format: VideoFormat) -> Iterator[VideoEncoder]:
    """A :class:`VideoEncoder` writing ``path`` (MP4), which appears, playable, when the block ends, also when it
    ends early (a stop signal); an exception leaves no file."""
    av = import_av()
    # MP4 states where the first frame starts in its movie time scale (1/1000 s by default): the input's keeps it
    timescale = {"movie_timescale": str(video_format.time_base.denominator)}
    with atomic_write(path) as f, _as_video_error(av, path):
        container = av.open(f, "w", format="mp4", options=timescale)
        container.metadata[VIDEO_MARK_KEY] = OWN_MARK  # a later run that walks this folder knows it as an output
        try:
            encoder = VideoEncoder(container, video_format)
        except BaseException:
            container.close()
            raise
        try:
            yield encoder
        finally:
            encoder.close()


@contextlib.contextmanager
def _as_video_error(av: ModuleType, path: str) -> Iterator[None]:
    """FFmpeg's refusals while writing ``path`` become a VideoError naming it; its OSErrors (a full disk) stay."""
    try:
        yield
    except av.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        raise VideoError(f"cannot write {path}: {ffmpeg_reason(exc)}") from None
