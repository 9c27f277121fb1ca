"""predict.py on a video: frames/s on this machine and peak memory for a clip and one --scale times longer.

Writes an H.264 clip (a moving square over photo-like texture; 640x360 by default) and a checkpoint of --model with
random weights (BatchNorm statistics of the frames, as training leaves them), then runs predict.py as a user would
(its defaults: colour and overlay videos) on --frames frames and on --scale times as many, taking turns, best of
--rounds. The steady rate is the extra frames over the extra seconds (start-up cancels out); the peak resident
memory of each whole run shows whether it grows with the video's length.
Usage: python bench/video.py [--model deeplabv3plus_mobilenet] [--size 640x360] [--frames 24] [--scale 4]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import network  # noqa: E402
from bench.onnx import calibrate_batchnorm  # noqa: E402
from bench.original import REPO  # noqa: E402
from tools.export_onnx import image_size  # noqa: E402
from utils.runtime.device import hardware_name, resolve_amp, resolve_channels_last  # noqa: E402

FPS = Fraction(25)
KIB = 1024


def frames(count: int, width: int, height: int):
    """RGB frames: smooth texture with noise, and a square moving across it."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 23), 128 + 100 * np.cos(y / 17), 128 + 60 * np.sin((x + y) / 31)], -1)
    for index in range(count):
        frame = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        left = (index * 9) % (width - height // 4)
        frame[height // 3: height // 3 + height // 4, left:left + height // 4] = (220, 40, 40)
        yield frame


def write_clip(path: str, count: int, width: int, height: int) -> None:
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames(count, width, height):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def write_checkpoint(path: str, model_name: str, width: int, height: int) -> None:
    torch.manual_seed(0)
    model = network.build_model(model_name, 21, 16, pretrained_backbone=False)
    calibrate_batchnorm(model, torch.from_numpy(np.stack(list(frames(4, width, height)))).permute(0, 3, 1, 2))
    torch.save({"model_state": model.state_dict(), "model_name": model_name}, path)


def measured_run(argv: List[str]) -> Tuple[float, float]:
    """(wall seconds, peak resident MiB) of ``python argv...``; stops the benchmark with its output if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory, not the largest child's so far
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"predict.py failed (exit {proc.returncode}):\n{output.decode(errors='replace')[-3000:]}")
    return seconds, usage.ru_maxrss / KIB  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus_mobilenet")
    parser.add_argument("--size", type=image_size, default=(640, 360), metavar="WxH")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    width, height = args.size
    cpu = torch.device("cpu")
    amp, _ = resolve_amp("auto", cpu)
    layout = "channels_last" if resolve_channels_last("auto", cpu)[0] else "NCHW"
    print(f"{hardware_name(cpu)}, torch {torch.__version__}, PyAV {av.__version__}; {args.model}, {width}x{height} "
          f"H.264 at {FPS} frames/s; predict.py's defaults here: --amp {amp}, {layout}, batches of 4 frames")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pth")
        write_checkpoint(ckpt, args.model, width, height)
        counts = {"short": args.frames, "long": args.frames * args.scale}
        best = {label: (float("inf"), 0.0) for label in counts}
        for _ in range(args.rounds):
            for label, count in counts.items():
                clip = os.path.join(tmp, f"{label}.mp4")
                if not os.path.exists(clip):
                    write_clip(clip, count, width, height)
                seconds, peak = measured_run([os.path.join(REPO, "predict.py"), "--input", clip, "--ckpt", ckpt,
                                              "--save_val_results_to", os.path.join(tmp, "out")])
                best[label] = (min(best[label][0], seconds), max(best[label][1], peak))
    print(f"whole predict.py runs (start-up included), best of {args.rounds} taking turns:")
    for label, count in counts.items():
        seconds, peak = best[label]
        print(f"{count:5d} frames: {seconds:6.1f} s, {count / seconds:5.2f} frames/s, peak resident memory "
              f"{peak:6.0f} MiB")
    extra_frames = counts["long"] - counts["short"]
    extra_seconds = best["long"][0] - best["short"][0]
    print(f"steady rate (the {extra_frames} extra frames over the extra {extra_seconds:.1f} s): "
          f"{extra_frames / extra_seconds:.2f} frames/s; peak memory long / short: "
          f"{best['long'][1] / best['short'][1]:.3f}")


if __name__ == "__main__":
    main()
