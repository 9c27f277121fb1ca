"""predict.py through ONNX Runtime (--onnx) vs through PyTorch (--ckpt), whole runs on the same 500x375 JPEGs.

Writes --images JPEGs and a checkpoint of --model with random weights (BatchNorm statistics measured on
images, as training leaves them), exports it with tools/export_onnx.py (which checks ONNX Runtime against
PyTorch), then times whole predict.py runs as a user starts them, start-up and model load included, taking turns,
best of --rounds: --onnx; --ckpt with predict.py's defaults here; --ckpt --amp off (fp32). All keep predict.py's
other defaults (batch 4, 2 decoding workers, colour PNGs).
Usage: python bench/onnx.py [--model deeplabv3plus_mobilenet] [--images 10] [--rounds 3]
"""
import argparse
import os
import sys
import tempfile

# This file is named onnx: drop its folder from the path so that `import onnx` finds the package, not this file.
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != BENCH]
sys.path.insert(0, os.path.dirname(BENCH))

import onnxruntime  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import network  # noqa: E402
from bench.data import write_images  # noqa: E402
from bench.original import REPO, best_of_interleaved  # noqa: E402
from bench.predict import agreement  # noqa: E402
from datasets.image_files import ImageFiles, find_images  # noqa: E402
from tools import export_onnx  # noqa: E402
from utils.device import hardware_name, resolve_amp, resolve_channels_last  # noqa: E402
from utils.inference import normalize  # noqa: E402

CALIBRATION_IMAGES = 4


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` and leave ``model`` in eval mode.

    With the initial statistics (mean 0, variance 1) random weights shrink the activations layer by layer and
    one class wins every pixel: masks that compress to nothing would make saving them unrealistically cheap.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches seen
    with torch.no_grad():
        model.train()(normalize(images))
    model.eval()


def write_inputs(folder: str, args) -> str:
    """--images JPEGs in ``folder``/images and a checkpoint of --model beside them; returns the checkpoint."""
    images = os.path.join(folder, "images")
    os.makedirs(images)
    for _, mask in write_images(images, args.images):
        os.remove(mask)  # predict.py would take the masks for images
    torch.manual_seed(0)
    model = network.build_model(args.model, 21, 16, pretrained_backbone=False)
    files = ImageFiles(find_images(images))
    photos = torch.stack([files[i][1] for i in range(min(CALIBRATION_IMAGES, len(files)))])
    # and random pixels, which the export checks on: with statistics from photos alone their logits reach 70, where
    # fp32 rounding alone exceeds the export's absolute limit (1e-3) and nothing is written
    noise = torch.randint(0, 256, photos.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    calibrate_batchnorm(model, torch.cat([photos, noise]))
    ckpt = os.path.join(folder, "model.pth")
    torch.save({"model_state": model.state_dict()}, ckpt)
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus_mobilenet")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    amp, _ = resolve_amp("auto", cpu)
    layout = "channels_last" if resolve_channels_last("auto", cpu)[0] else "NCHW"
    print(f"{hardware_name(cpu)}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; {args.model}, "
          f"{args.images} JPEGs of 500x375; predict.py's defaults here: --amp {amp}, {layout}")
    onnx, defaults, fp32 = ("ONNX Runtime --onnx (fp32, NCHW)", f"PyTorch --ckpt, defaults ({amp}, {layout})",
                            f"PyTorch --ckpt --amp off (fp32, {layout})")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_inputs(tmp, args)
        onnx_file = os.path.join(tmp, "model.onnx")
        if export_onnx.main(["--ckpt", ckpt, "--model", args.model, "--dataset", "voc", "--output", onnx_file]):
            sys.exit("tools/export_onnx.py failed (above); nothing was timed")
        predict = [os.path.join(REPO, "predict.py"), "--input", os.path.join(tmp, "images")]
        ckpt_args = ["--ckpt", ckpt, "--model", args.model]
        runs = {onnx: ["--onnx", onnx_file], defaults: ckpt_args, fp32: [*ckpt_args, "--amp", "off"]}
        if amp == "off":
            print("predict.py's defaults are fp32 here: one PyTorch row")
            del runs[defaults]
        outputs = {label: os.path.join(tmp, f"out{index}") for index, label in enumerate(runs)}
        times = best_of_interleaved({label: ([*predict, *argv, "--save_val_results_to", outputs[label]], tmp)
                                     for label, argv in runs.items()}, args.rounds)
        width = max(map(len, times))
        print(f"whole predict.py runs, start-up and model load included, best of {args.rounds} taking turns:")
        print(f"{'setting':{width}s}  seconds  images/s  vs PyTorch fp32")
        for label, seconds in times.items():
            print(f"{label:{width}s}  {seconds:7.1f}  {args.images / seconds:8.2f}  {times[fp32] / seconds:14.2f}x")
        # not bf16's: random weights leave small margins between the classes, which bf16 rounding flips far more
        # often than on a trained model (tools/check_precision.py checks bf16)
        print(f"pixels with the same colour in ONNX Runtime's masks and PyTorch fp32's: "
              f"{agreement(outputs[onnx], outputs[fp32]):.4%}")


if __name__ == "__main__":
    main()
