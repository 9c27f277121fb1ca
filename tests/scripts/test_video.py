"""predict.py on videos: frame count, size and frame rate kept, per-frame masks equal predict.py on the frames as
PNGs, odd sizes, bad files skipped in one line, a missing PyAV, and a stop signal that leaves a playable video."""
import errno
import os
import re
import signal
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

import network
import predict
from tests.conftest import ROOT
from tests.helpers import signal_group_when
from tests.scripts.test_predict import MODEL, NUM_CLASSES
from utils import outputs
from utils.inference import normalize
from utils.video import AV_PIP

av = pytest.importorskip("av")

FPS = Fraction(30000, 1001)  # NTSC's, which a float would round


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
               pixel_format: str = "bgr0") -> str:
    """A clip written with PyAV; FFV1 in RGB is lossless, so decoded frames equal the frames written."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for frame in _frames(count, width, height):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Random weights with BatchNorm statistics of the frames, so that more than one class wins somewhere."""
    torch.manual_seed(0)
    model = network.build_model(MODEL, NUM_CLASSES, 16, pretrained_backbone=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running statistics = the average over the batch seen
    frames = torch.from_numpy(np.stack(list(_frames(4, 96, 64)))).permute(0, 3, 1, 2)
    with torch.no_grad():
        model.train()(normalize(frames))
    path = tmp_path_factory.mktemp("ckpt") / "best.pth"
    torch.save({"model_state": model.state_dict()}, path)
    return (str(path),)


def _video_facts(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return frames, (stream.width, stream.height), stream.average_rate


def _predict(inputs, out, ckpt_path, *extra):
    return predict.main(["--input", str(inputs), "--ckpt", ckpt_path, "--model", MODEL, "--amp", "off",
                         "--num_workers", "0", "--save_val_results_to", str(out), *extra])


def test_a_video_keeps_frames_size_and_rate_and_its_masks_equal_the_frames_as_images(tmp_path, ckpt, capsys):
    clip = write_clip(tmp_path / "clip.mkv")
    out = tmp_path / "out"
    assert _predict(clip, out, ckpt[0], "--output", "color", "label", "--val_batch_size", "2") == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["clip_color.mp4", "clip_label", "clip_overlay.mp4"]
    for name in ("clip_color.mp4", "clip_overlay.mp4"):
        assert _video_facts(out / name) == (7, (96, 64), FPS)
        with av.open(str(out / name)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
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


def test_odd_sizes_are_kept_and_folders_mix_images_and_videos(tmp_path, ckpt, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "odd.mkv", count=3, width=97, height=65)
    Image.fromarray(next(_frames(1, 40, 30))).save(folder / "photo.png")
    out = tmp_path / "out"
    assert _predict(folder, out, ckpt[0]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["odd_color.mp4", "odd_overlay.mp4", "photo.png"]
    assert _video_facts(out / "odd_overlay.mp4") == (3, (97, 65), FPS)


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
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    (folder / "notes.mp4").write_text("not a video, whatever its name says")
    out = tmp_path / "out"
    assert _predict(folder, out, ckpt[0]) == 1
    printed = capsys.readouterr()
    assert "1 done, 4 skipped" in printed.out
    lines = printed.err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("skipped: ") for line in lines), lines
    cut = re.fullmatch(rf"skipped: {re.escape(str(folder / 'cut.mkv'))} ends after (\d+) of the 30 frames its header "
                       r"announces \(cut short\?\); its outputs hold those \1", lines[0])
    assert cut and _video_facts(out / "cut_overlay.mp4")[0] == int(cut.group(1))
    assert lines[1].startswith(f"skipped: cannot read video {folder / 'notes.mp4'}: ")
    assert lines[2] == f"skipped: {folder / 'sound.mkv'} has no video stream (audio only?)"
    assert lines[3].startswith(f"skipped: cannot read video {folder / 'truncated.mp4'}: ")
    assert sorted(os.listdir(out)) == ["cut_color.mp4", "cut_overlay.mp4", "good_color.mp4", "good_overlay.mp4"]


def test_a_soundtrack_longer_than_the_video_is_no_cut(tmp_path, ckpt, capsys):
    """Matroska with audio running on after the last frame: the container lasts longer than the video stream, which
    is whole: every frame is predicted and nothing is skipped."""
    folder = tmp_path / "in"
    folder.mkdir()
    with av.open(str(folder / "talk.mkv"), "w") as container:
        video = container.add_stream("ffv1", rate=FPS)
        video.width, video.height, video.pix_fmt = 96, 64, "bgr0"
        audio = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        for frame in _frames(6, 96, 64):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        sound.sample_rate = 8000  # one second of sound for a fifth of a second of video
        container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    assert _predict(folder, tmp_path / "out", ckpt[0]) == 0
    printed = capsys.readouterr()
    assert "1 done, 0 skipped" in printed.out and "skipped" not in printed.err
    assert _video_facts(tmp_path / "out" / "talk_overlay.mp4")[0] == 6


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
    assert not [name for name in os.listdir(tmp_path / "full") if name.startswith("clip")]


def test_without_pyav_a_video_is_one_line(tmp_path, ckpt, capsys, monkeypatch):
    clip = write_clip(tmp_path / "clip.mkv", count=1)
    monkeypatch.setitem(sys.modules, "av", None)  # as if not installed: importing it raises ImportError
    assert _predict(clip, tmp_path / "out", ckpt[0]) == 1
    assert capsys.readouterr().err.strip() == f"error: videos need PyAV, which is not installed: {AV_PIP}"


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
    frames, size, rate = _video_facts(out / "long_overlay.partial.mp4")
    assert 4 <= frames < 400 and size == (96, 64) and rate == FPS
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
    same_pid = re.sub(r"-\d+-(?=[0-9a-f]{8}$)", f"-{os.getpid()}-", left)
    os.rename(out / left, out / same_pid)
    assert _predict(write_clip(clip, count=2), out, ckpt[0], "--output", "label") == 0
    assert f"Removed 1 temporary file(s) that a killed run left in {out} (" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["long_label", "long_overlay.mp4"]


def test_frames_are_never_written_over_photos_in_a_folder_of_that_name(tmp_path, ckpt, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "walk.mkv", count=2)
    (clips / "walk_label").mkdir()
    Image.fromarray(next(_frames(1, 96, 64))).save(clips / "walk_label" / "000000.png")
    before = (clips / "walk_label" / "000000.png").read_bytes()
    assert _predict(clips, clips, ckpt[0], "--output", "label") == 1
    assert (f"would write {clips / 'walk_label' / '000000.png'} over the input {clips / 'walk_label' / '000000.png'}; "
            "nothing was written") in capsys.readouterr().err
    assert (clips / "walk_label" / "000000.png").read_bytes() == before
