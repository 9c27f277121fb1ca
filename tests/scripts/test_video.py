"""predict.py on videos: frame count, size and every frame's time kept (variable frame rates, time bases, start
offsets, B-frames), per-frame masks equal predict.py on the frames as PNGs, yuv420p H.264 with even sides, the
input's sound copied or re-encoded, bad files skipped in one line (a decoder error midway too, never a hang), a
missing PyAV, and a stop signal that leaves a playable video."""
import errno
import os
import re
import signal
import subprocess
import sys
from fractions import Fraction
from typing import List, Optional, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

import network
import predict
from tests.conftest import ROOT
from tests.helpers import signal_group_when
from tests.scripts.test_predict import MODEL, NUM_CLASSES
from utils.inference import outputs
from utils.inference.predictor import normalize
from utils.io.optional_packages import pip_install

av = pytest.importorskip("av")
from av.video.reformatter import ColorRange, Colorspace  # noqa: E402

FPS = Fraction(30000, 1001)  # NTSC's, which a float would round
MS = Fraction(1, 1000)  # Matroska's and WebM's time base
VFR_MS = (0, 33, 67, 100, 300)  # a phone's variable frame rate: a pause after the fourth frame


def _frames(count: int, width: int, height: int):
    """Frames with a square moving across a textured background, so the masks change from frame to frame."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for index in range(count):
        frame = background.copy()
        left = (index * 7) % max(1, width - 16)
        frame[height // 4: height // 4 + 16, left:left + 16] = (255, 40, 40)
        yield frame


def write_clip(path, count: int = 7, width: int = 96, height: int = 64, codec: str = "ffv1",
               pixel_format: str = "bgr0", times: Optional[Sequence[int]] = None, time_base: Optional[Fraction] = None,
               sound: Optional[str] = None, pixel_aspect: Optional[Fraction] = None) -> str:
    """A clip written with PyAV; FFV1 in RGB is lossless, so decoded frames equal the frames written. ``times``:
    the frames' timestamps in ``time_base`` (default: ``count`` frames at NTSC's rate); ``sound``: an audio codec
    for a second of tone in a stream before the video's, so that the file's first packets are sound;
    ``pixel_aspect``: the pixels' width over height (H.264 stores it)."""
    with av.open(str(path), "w") as container:
        audio = container.add_stream(sound, rate=TONE_RATE, layout="stereo") if sound else None
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        if times is not None:
            stream.time_base = stream.codec_context.time_base = time_base
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        if audio is not None:
            container.mux(audio.encode(tone(TONE_RATE)))
            container.mux(audio.encode(None))
        for index, frame in enumerate(_frames(len(times) if times is not None else count, width, height)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if times is not None:
                picture.pts, picture.time_base = times[index], time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return str(path)


TONE_RATE = 48000


def tone(rate: int, seconds: float = 1.0):
    """``seconds`` of a 440 Hz tone in stereo, one frame from time 0 (PyAV cuts it to the encoder's frame size)."""
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = rate, 0
    return frame


SEEDS_TO_TRY = 10


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Random weights with BatchNorm statistics of the frames, from the first seed whose model lets more than one
    class win in every frame: the masks then tell frames apart on every CPU's kernels, not only on this one's."""
    frames = normalize(torch.from_numpy(np.stack(list(_frames(4, 96, 64)))).permute(0, 3, 1, 2))
    for seed in range(SEEDS_TO_TRY):
        torch.manual_seed(seed)
        model = network.build_model(MODEL, NUM_CLASSES, 16, pretrained_backbone=False)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # running statistics = the average over the batch seen
        with torch.no_grad():
            model.train()(frames)
            labels = model.eval()(frames).argmax(1)
        if all(len(frame_labels.unique()) > 1 for frame_labels in labels):
            path = tmp_path_factory.mktemp("ckpt") / "best.pth"
            torch.save({"model_state": model.state_dict()}, path)
            return (str(path),)
    raise AssertionError(f"no seed of {SEEDS_TO_TRY} gave a model that predicts more than one class per frame")


def _video_facts(path):
    """(frame count, (width, height), codec, pixel format) of the video stream of ``path``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return frames, (stream.width, stream.height), stream.codec_context.name, stream.codec_context.pix_fmt


def frame_times(path) -> List[Fraction]:
    """When each frame of ``path`` shows, in seconds, as a player reads them."""
    with av.open(str(path)) as container:
        return [frame.pts * frame.time_base for frame in container.decode(video=0)]


def sound_packets(path) -> list:
    """(time in seconds, bytes) of each packet of the first audio stream of ``path``."""
    with av.open(str(path)) as container:
        return [(packet.pts * packet.time_base, bytes(packet)) for packet in container.demux(audio=0) if packet.size]


def _predict(inputs, out, ckpt_path, *extra):
    return predict.main(["--input", str(inputs), "--ckpt", ckpt_path, "--model", MODEL, "--amp", "off",
                         "--num_workers", "0", "--save_val_results_to", str(out), *extra])


def test_a_video_keeps_frames_size_and_times_and_its_masks_equal_the_frames_as_images(tmp_path, ckpt, capsys):
    clip = write_clip(tmp_path / "clip.mkv")
    out = tmp_path / "out"
    assert _predict(clip, out, ckpt[0], "--output", "color", "label", "--val_batch_size", "2") == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["clip_color.mp4", "clip_label", "clip_overlay.mp4"]
    for name in ("clip_color.mp4", "clip_overlay.mp4"):
        assert _video_facts(out / name) == (7, (96, 64), "h264", "yuv420p")
        assert frame_times(out / name) == frame_times(clip)
    assert sorted(os.listdir(out / "clip_label")) == [f"{i:06d}.png" for i in range(7)]

    # frames 2 and 3 as PNGs: the same batch of two as in the video (batches 0-1, 2-3, 4-5, 6)
    stills = tmp_path / "stills"
    stills.mkdir()
    with av.open(clip) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in (2, 3):
                frame.to_image().save(stills / f"{index:06d}.png")
    assert _predict(stills, tmp_path / "still_out", ckpt[0], "--output", "label", "--val_batch_size", "2") == 0
    for index in (2, 3):
        video_mask = np.asarray(Image.open(out / "clip_label" / f"{index:06d}.png"))
        still_mask = np.asarray(Image.open(tmp_path / "still_out" / f"{index:06d}_label.png"))
        assert np.array_equal(video_mask, still_mask)
    assert len(np.unique(video_mask)) > 1  # the masks are not trivially equal


def test_every_frame_keeps_its_time_whatever_the_rate_time_base_and_start(tmp_path, ckpt, capsys):
    """Variable frame rates as phones record them (0, 33, 67, 100, 300 ms) in WebM's and Matroska's 1/1000 time
    base and in MP4 with B-frames, a stream that starts at 1.0334 s (MPEG-TS, 1/90000), NTSC in MP4 (1/30000), an MP4
    trimmed by an edit list (as phones trim without re-encoding): every output frame shows when its input frame
    does, each complete file is done (never "cut short"), and NTSC's rate stays exactly 30000/1001."""
    folder = tmp_path / "in"
    folder.mkdir()
    ms_90k = Fraction(1, 90000)
    clips = [write_clip(folder / "web.webm", codec="libvpx-vp9", pixel_format="yuv420p", times=VFR_MS,
                        time_base=MS),
             write_clip(folder / "matroska.mkv", times=VFR_MS, time_base=MS),
             write_clip(folder / "phone.mp4", codec="libx264", pixel_format="yuv420p", times=VFR_MS, time_base=MS),
             write_clip(folder / "late.ts", codec="libx264", pixel_format="yuv420p", time_base=ms_90k,
                        times=[93003 + t * 90 for t in VFR_MS]),
             write_clip(folder / "ntsc.mp4", codec="libx264", pixel_format="yuv420p", times=range(0, 7 * 1001, 1001),
                        time_base=Fraction(1, 30000)),
             write_clip(folder / "trimmed.mp4", codec="libx264", pixel_format="yuv420p", times=range(-5, 7),
                        time_base=Fraction(1, 25))]
    with av.open(clips[2]) as container:  # the MP4's packets are stored out of order: B-frames
        stored = [packet.pts for packet in container.demux(video=0) if packet.size]
    assert stored != sorted(stored)
    with av.open(clips[-1]) as container:  # 12 frames stored, the first 5 hidden by an edit list
        assert container.streams.video[0].frames == 12 and len(frame_times(clips[-1])) == 7
    out = tmp_path / "out"
    assert _predict(folder, out, ckpt[0], "--output", "overlay") == 0
    printed = capsys.readouterr()
    assert "6 done, 0 skipped" in printed.out and "cut short" not in printed.err
    for clip in clips:
        output = out / (os.path.splitext(os.path.basename(clip))[0] + "_overlay.mp4")
        assert frame_times(output) == frame_times(clip), clip
    assert [float(t) for t in frame_times(out / "web_overlay.mp4")] == [t / 1000 for t in VFR_MS]
    assert frame_times(out / "late_overlay.mp4")[0] == Fraction(93003, 90000)  # no whole millisecond
    with av.open(str(out / "ntsc_overlay.mp4")) as container:
        assert container.streams.video[0].average_rate == FPS


def test_outputs_are_yuv420p_h264_with_even_sides_and_the_input_s_sound(tmp_path, ckpt, capsys):
    """Browsers play yuv420p H.264 only: odd sides get a copy of the last column or row, yuv444p and 10-bit inputs
    are converted, the colour matrix is stated (BT.601), and pixels keep their shape (anamorphic video). AAC, Opus
    and MP3 (in AVI) sound is copied packet for packet, also when the file starts with it; PCM (which MP4 players
    do not take) is re-encoded to AAC of the same length."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "odd.mkv", count=3, width=97, height=65)
    write_clip(folder / "full_colour.mp4", count=3, codec="libx264", pixel_format="yuv444p")
    write_clip(folder / "ten_bit.mp4", count=3, codec="libx264", pixel_format="yuv420p10le")
    write_clip(folder / "phone.mp4", codec="libx264", pixel_format="yuv420p", sound="aac")
    write_clip(folder / "web.webm", codec="libvpx-vp9", pixel_format="yuv420p", sound="libopus")
    write_clip(folder / "camera.mkv", sound="pcm_s16le")
    write_clip(folder / "camcorder.avi", codec="mjpeg", pixel_format="yuvj420p", sound="libmp3lame")
    write_clip(folder / "anamorphic.mp4", count=2, codec="libx264", pixel_format="yuv420p", pixel_aspect=Fraction(2))
    with av.open(str(folder / "camera.mkv")) as container:
        assert next(container.demux()).stream.type == "audio"  # sound before the first frame
    Image.fromarray(next(_frames(1, 40, 30))).save(folder / "photo.png")
    out = tmp_path / "out"
    assert _predict(folder, out, ckpt[0], "--output", "overlay") == 0
    assert "9 done, 0 skipped" in capsys.readouterr().out
    assert _video_facts(out / "odd_overlay.mp4") == (3, (98, 66), "h264", "yuv420p")
    with av.open(str(out / "odd_overlay.mp4")) as container:
        picture = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(picture[:, 97] - picture[:, 96]).mean() < 8 and np.abs(picture[65] - picture[64]).mean() < 8
    for name in ("full_colour", "ten_bit", "phone", "web", "camera", "anamorphic", "camcorder"):
        assert _video_facts(out / f"{name}_overlay.mp4")[1:] == ((96, 64), "h264", "yuv420p"), name
    with av.open(str(out / "phone_overlay.mp4")) as container:  # what players read to turn it back into RGB
        stated = container.streams.video[0].codec_context
        assert (stated.colorspace, stated.color_range) == (Colorspace.ITU601, ColorRange.MPEG)
    with av.open(str(out / "anamorphic_overlay.mp4")) as container:  # plays 192 wide, as its input does
        assert container.streams.video[0].sample_aspect_ratio == 2
    assert sound_packets(out / "phone_overlay.mp4") == sound_packets(folder / "phone.mp4")
    assert sound_packets(out / "web_overlay.mp4") == sound_packets(folder / "web.webm")
    assert sound_packets(out / "camcorder_overlay.mp4") == sound_packets(folder / "camcorder.avi")  # MP3
    with av.open(str(out / "camera_overlay.mp4")) as container:
        sound = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(sound))
        assert (sound.codec_context.name, sound.rate) == ("aac", TONE_RATE)
    assert abs(samples - TONE_RATE) < 2048  # a second, give or take AAC's padding


def test_bad_videos_are_skipped_in_one_line_and_the_rest_goes_on(tmp_path, ckpt, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "good.mkv", count=2)
    whole = write_clip(tmp_path / "whole.mp4", count=20, codec="libx264", pixel_format="yuv420p")
    data = open(whole, "rb").read()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])  # a copy cut short: no index at the end
    data = open(write_clip(tmp_path / "whole.mkv", count=30), "rb").read()
    (folder / "cut.mkv").write_bytes(data[: len(data) // 2])  # Matroska: decodes up to the cut
    with av.open(str(folder / "sound.mkv"), "w") as container:  # audio only
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        container.mux(stream.encode(tone(8000, 0.1)))
        container.mux(stream.encode(None))
    with av.open(str(folder / "empty.mkv"), "w") as container:  # a video stream without a frame, and sound
        video = container.add_stream("ffv1", rate=FPS)
        video.width, video.height, video.pix_fmt = 96, 64, "bgr0"
        audio = container.add_stream("pcm_s16le", rate=8000, layout="stereo")
        container.mux(audio.encode(tone(8000, 0.1)))
        container.mux(audio.encode(None))
    (folder / "notes.mp4").write_text("not a video, whatever its name says")
    with av.open(str(folder / "recorder.mkv"), "w") as container:  # 10 channels of PCM, more than AAC holds
        audio = container.add_stream("pcm_s16le", rate=8000, layout="10c")
        video = container.add_stream("ffv1", rate=FPS)
        video.width, video.height, video.pix_fmt = 96, 64, "bgr0"
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout=audio.layout)
        sound.sample_rate = 8000
        container.mux(audio.encode(sound))
        container.mux(video.encode(av.VideoFrame.from_ndarray(next(_frames(1, 96, 64)), format="rgb24")))
        container.mux(video.encode(None))
    out = tmp_path / "out"
    open_files = len(os.listdir("/proc/self/fd"))
    assert _predict(folder, out, ckpt[0]) == 1
    assert len(os.listdir("/proc/self/fd")) == open_files  # no file left open by an error path
    printed = capsys.readouterr()
    assert "1 done, 6 skipped" in printed.out
    lines = printed.err.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("skipped: ") for line in lines), lines
    cut = re.fullmatch(rf"skipped: {re.escape(str(folder / 'cut.mkv'))} ends after (\d\.\d\d) s of the 1\.00 s its "
                       r"header announces \(cut short\?\); its outputs hold the (\d+) frames it has", lines[0])
    assert cut and _video_facts(out / "cut_overlay.mp4")[0] == int(cut.group(2)) < 30
    assert float(cut.group(1)) == pytest.approx(int(cut.group(2)) / FPS, abs=0.01)
    assert lines[1] == f"skipped: {folder / 'empty.mkv'} holds no video frame"
    assert lines[2].startswith(f"skipped: cannot read video {folder / 'notes.mp4'}: ")
    assert lines[3] == f"skipped: cannot write {out / 'recorder_overlay.partial.mp4'}: Invalid argument"  # FFmpeg refused
    assert lines[4] == f"skipped: {folder / 'sound.mkv'} has no video stream (audio only?)"
    assert lines[5].startswith(f"skipped: cannot read video {folder / 'truncated.mp4'}: ")
    assert sorted(os.listdir(out)) == ["cut_color.mp4", "cut_overlay.mp4", "good_color.mp4", "good_overlay.mp4"]


def test_a_video_that_fails_to_decode_midway_ends_in_one_line_and_never_hangs(tmp_path, ckpt):
    """H.264 whose 16th frame is zeroed on disk: FFmpeg's decoder fails there, in the decoder thread. The video is
    one line naming the file and the frames it got through, and the run goes on; a hang fails by the timeout."""
    folder = tmp_path / "in"
    folder.mkdir()
    whole = write_clip(tmp_path / "whole.mp4", count=30, codec="libx264", pixel_format="yuv420p")
    with av.open(whole) as container:
        stored = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    data = bytearray(open(whole, "rb").read())
    start, size = stored[15]
    data[start:start + size] = bytes(size)
    (folder / "damaged.mp4").write_bytes(data)
    write_clip(folder / "fine.mkv", count=2)
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), "--input", str(folder), "--ckpt", ckpt[0], "--model",
           MODEL, "--amp", "off", "--num_workers", "0", "--save_val_results_to", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert "1 done, 1 skipped" in done.stdout
    assert re.fullmatch(rf"skipped: cannot decode video {re.escape(str(folder / 'damaged.mp4'))} after its first "
                        r"([1-9]|1\d|2[0-8]) frames: Invalid data found when processing input\n", done.stderr)


def test_a_soundtrack_longer_than_the_video_is_no_cut_and_is_copied_whole(tmp_path, ckpt, capsys):
    """Matroska with 40 s of AAC running on after 6 frames: the container lasts longer than the video stream, which
    is whole: every frame is predicted, nothing is skipped, and every packet of sound is in the outputs."""
    folder = tmp_path / "in"
    folder.mkdir()
    with av.open(str(folder / "talk.mkv"), "w") as container:
        video = container.add_stream("ffv1", rate=FPS)
        video.width, video.height, video.pix_fmt = 96, 64, "bgr0"
        audio = container.add_stream("aac", rate=8000, layout="stereo")
        for frame in _frames(6, 96, 64):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        container.mux(audio.encode(tone(8000, 40.0)))
        container.mux(audio.encode(None))
    assert _predict(folder, tmp_path / "out", ckpt[0]) == 0
    printed = capsys.readouterr()
    assert "1 done, 0 skipped" in printed.out and "skipped" not in printed.err
    assert _video_facts(tmp_path / "out" / "talk_overlay.mp4")[0] == 6
    sound = sound_packets(folder / "talk.mkv")
    assert len(sound) > 300 and sound_packets(tmp_path / "out" / "talk_overlay.mp4") == sound


def test_a_phone_clip_stored_sideways_is_predicted_and_written_upright(tmp_path, ckpt):
    """A portrait clip that phones store as landscape frames with a rotation for players: its outputs have the
    size it plays at, and the masks are those of the upright frames."""
    with av.open(str(tmp_path / "phone.mp4"), "w") as container:
        stream = container.add_stream("libx264rgb", rate=FPS, options={"crf": "0"})  # lossless
        stream.width, stream.height, stream.pix_fmt = 96, 64, "bgr24"
        stream.set_display_rotation(90)  # shown turned a quarter counterclockwise: 64 wide, 96 high
        for frame in _frames(2, 96, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    assert _predict(tmp_path / "phone.mp4", tmp_path / "out", ckpt[0], "--output", "color", "label") == 0
    assert _video_facts(tmp_path / "out" / "phone_overlay.mp4")[:2] == (2, (64, 96))
    upright = np.ascontiguousarray(np.rot90(next(_frames(1, 96, 64))))
    Image.fromarray(upright).save(tmp_path / "upright.png")
    assert _predict(tmp_path / "upright.png", tmp_path / "still", ckpt[0], "--output", "label") == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "phone_label" / "000000.png")),
                          np.asarray(Image.open(tmp_path / "still" / "upright_label.png")))


def test_frame_folders_hold_this_run_s_frames_whole_or_not_at_all(tmp_path, ckpt, capsys, monkeypatch):
    """A shorter clip of the same name leaves no frames of the longer one; a video that fails midway (a full disk
    here) leaves neither its videos nor its frames."""
    out = tmp_path / "out"
    assert _predict(write_clip(tmp_path / "clip.mkv", count=5), out, ckpt[0], "--output", "label") == 0
    assert len(os.listdir(out / "clip_label")) == 5
    assert _predict(write_clip(tmp_path / "clip.mkv", count=2), out, ckpt[0], "--output", "label") == 0
    assert sorted(os.listdir(out / "clip_label")) == ["000000.png", "000001.png"]
    capsys.readouterr()

    written = []
    real_save = outputs.save_png

    def fills_the_disk(image, path):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real_save(image, path)

    monkeypatch.setattr(outputs, "save_png", fills_the_disk)
    assert _predict(write_clip(tmp_path / "clip.mkv", count=5), tmp_path / "full", ckpt[0], "--output", "label") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "full").exists()  # no videos, no frames, and not the folder made for them


def test_without_pyav_a_video_is_one_line(tmp_path, ckpt, capsys, monkeypatch):
    clip = write_clip(tmp_path / "clip.mkv", count=1)
    monkeypatch.setitem(sys.modules, "av", None)  # as if not installed: importing it raises ImportError
    assert _predict(clip, tmp_path / "out", ckpt[0]) == 1
    assert capsys.readouterr().err.strip() == ("error: av is not installed; it is needed for videos: "
                                                    f"{pip_install('av')}")


def _long_run(clip, out, ckpt_path):
    return [sys.executable, os.path.join(ROOT, "predict.py"), "--input", str(clip), "--ckpt", ckpt_path, "--model",
            MODEL, "--save_val_results_to", str(out), "--output", "label", "--val_batch_size", "2"]


def test_a_stopped_rerun_keeps_the_complete_outputs_and_leaves_its_own_as_partial(tmp_path, ckpt, capsys):
    """Ctrl-C during a rerun: the complete outputs of the first run stay as they were; the frames done are in
    playable outputs whose names say they are partial; a complete run then takes the final names."""
    out, clip = tmp_path / "out", tmp_path / "long.mkv"
    assert _predict(write_clip(clip, count=3), out, ckpt[0], "--output", "label") == 0
    write_clip(clip, count=400)  # the same clip, longer (exported again)
    code, printed = signal_group_when(_long_run(clip, out, ckpt[0]),
                                      lambda _: os.path.exists(out / "long_label.partial" / "000003.png"),
                                      signal.SIGINT, cwd=ROOT)
    assert code == 128 + signal.SIGINT, printed
    frames, size, codec, _ = _video_facts(out / "long_overlay.partial.mp4")
    assert 4 <= frames < 400 and size == (96, 64) and codec == "h264"
    assert frame_times(out / "long_overlay.partial.mp4") == frame_times(clip)[:frames]
    assert frames == len(os.listdir(out / "long_label.partial"))
    assert (f"SIGINT received: stopped after {frames} frames of {clip}; they are in "
            f"{out / 'long_overlay.partial.mp4'}, {out / 'long_label.partial'}{os.sep} (playable); the complete "
            f"outputs of an earlier run are kept: {out / 'long_overlay.mp4'}, {out / 'long_label'}") in printed
    assert "Traceback" not in printed
    assert _video_facts(out / "long_overlay.mp4")[0] == 3 and len(os.listdir(out / "long_label")) == 3
    assert not [name for name in os.listdir(out) if name.startswith(".tmp")]
    assert _predict(write_clip(clip, count=5), out, ckpt[0], "--output", "label") == 0
    assert sorted(os.listdir(out)) == ["long_label", "long_overlay.mp4"]
    assert _video_facts(out / "long_overlay.mp4")[0] == 5 and len(os.listdir(out / "long_label")) == 5


def test_a_killed_run_s_temporary_files_go_with_the_next_run(tmp_path, ckpt, capsys):
    """SIGKILL (the OOM killer) leaves the video being encoded as a temporary file; the next run into the folder
    removes it, also when it runs under the killed run's process id (in containers every run may be PID 1)."""
    out, clip = tmp_path / "out", write_clip(tmp_path / "long.mkv", count=400)
    code, _ = signal_group_when(_long_run(clip, out, ckpt[0]),
                                lambda _: os.path.exists(out / "long_label.partial" / "000003.png"), signal.SIGKILL,
                                cwd=ROOT)
    assert code == -signal.SIGKILL
    (left,) = [name for name in os.listdir(out) if name.startswith(".tmp-")]
    assert left.startswith(".tmp-long_overlay.partial.mp4-")
    # the kill may also land while a frame is being written: that frame's temporary goes too
    frames_left = [name for name in os.listdir(out / "long_label.partial") if name.startswith(".tmp-")]
    assert len(frames_left) <= 1
    same_pid = re.sub(r"-\d+-(?=[0-9a-f]{8}$)", f"-{os.getpid()}-", left)
    os.rename(out / left, out / same_pid)
    assert _predict(write_clip(clip, count=2), out, ckpt[0], "--output", "label") == 0
    printed = capsys.readouterr().out
    assert f"Removed {1 + len(frames_left)} temporary file(s) that a killed run left in {out} (" in printed
    assert same_pid in printed and all(os.path.join("long_label.partial", name) in printed for name in frames_left)
    assert sorted(os.listdir(out)) == ["long_label", "long_overlay.mp4"]


def test_frames_are_never_written_over_photos_in_a_folder_of_that_name(tmp_path, ckpt, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "walk.mkv", count=2)
    (clips / "walk_label").mkdir()
    Image.fromarray(next(_frames(1, 96, 64))).save(clips / "walk_label" / "000000.png")
    before = (clips / "walk_label" / "000000.png").read_bytes()
    assert _predict(clips, clips, ckpt[0], "--output", "label") == 0  # the video's outputs take its extension
    assert "2 done, 0 skipped" in capsys.readouterr().out
    assert (clips / "walk_label" / "000000.png").read_bytes() == before
    assert sorted(os.listdir(clips / "walk_mkv_label")) == ["000000.png", "000001.png"]
