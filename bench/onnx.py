"""predict.py through ONNX Runtime, fp32 and INT8 (--onnx), vs through PyTorch (--ckpt), on the same images.

Without --ckpt: writes --images JPEGs of 500x375 and a checkpoint of --model with random weights (BatchNorm
statistics measured on images, as training leaves them). With --ckpt and --data_root (a VOC-layout folder, e.g.
the demo's): the trained checkpoint, predicting the `val` split and scoring it against its masks, calibrated on
the `train` split. It exports the checkpoint with tools/export_onnx.py (which checks ONNX Runtime against
PyTorch) in fp32 and with --int8, then times
- the models alone in this process, ONNX Runtime fp32 vs INT8, image by image (decoded beforehand), taking turns;
- whole predict.py runs as a user starts them, start-up and model load included, taking turns, best of --rounds:
  --onnx fp32; --onnx INT8; --ckpt with predict.py's defaults here; --ckpt --amp off (fp32). All keep
  predict.py's other defaults (batch 4, 2 decoding workers) and write label PNGs.
Usage: python bench/onnx.py [--model deeplabv3plus_mobilenet] [--images 10] [--rounds 3]
       python bench/onnx.py --ckpt best_deeplabv3plus_mobilenet_demo_os16.pth --data_root datasets/data/demo
"""
import argparse
import os
import sys
import tempfile
import time
from typing import (
                    Dict)

# This file is named onnx: drop its folder from the path so that `import onnx` finds the package, not this file.
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != BENCH]
sys.path.insert(0, os.path.dirname(BENCH))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

import network  # noqa: E402
from bench.data import write_images  # noqa: E402
from bench.original import REPO, best_of_interleaved  # noqa: E402
from bench.predict import agreement  # noqa: E402
from datasets import VOCSegmentation  # noqa: E402
from datasets.image_files import ImageFiles, find_images  # noqa: E402
from metrics import StreamSegMetrics  # noqa: E402
from tools import export_onnx  # noqa: E402
from utils.runtime.device import hardware_name, resolve_amp, resolve_channels_last  # noqa: E402
from utils.inference.predictor import normalize  # noqa: E402
from utils.inference.onnx_model import OnnxSegmenter  # noqa: E402

CALIBRATION_IMAGES = 4


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor, prepare=normalize) -> None:
    """Set every BatchNorm's running statistics to those of ``prepare(images)`` and leave ``model`` in eval mode.

    With the initial statistics (mean 0, variance 1) random weights shrink the activations layer by layer and
    one class wins every pixel: masks that compress to nothing would make saving them unrealistically cheap.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches seen
    with torch.no_grad():
        model.train()(prepare(images))
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


def link_split(voc_root: str, split: str, folder: str) -> Dict[str, str]:
    """Links in ``folder`` to the images of a VOC ``split`` (predict.py takes a folder); stem -> mask path."""
    dataset = VOCSegmentation(voc_root, "2012", split)
    os.makedirs(folder)
    for path in dataset.images:
        os.symlink(os.path.abspath(path), os.path.join(folder, os.path.basename(path)))
    return {os.path.splitext(os.path.basename(image))[0]: mask for image, mask in zip(dataset.images, dataset.masks)}


def mean_iou(labels: str, masks: Dict[str, str], num_classes: int) -> float:
    """The mean IoU of the label PNGs in ``labels`` against ``masks`` (stem -> path), as main.py scores."""
    metrics = StreamSegMetrics(num_classes)
    for stem, mask in masks.items():
        truth = np.array(Image.open(mask))
        metrics.update(truth, np.array(Image.open(os.path.join(labels, f"{stem}_label.png"))))
    return metrics.get_results()["Mean IoU"]


def models_alone(files: Dict[str, str], folder: str, rounds: int) -> Dict[str, float]:
    """Images/s of each ONNX file on the images of ``folder``, one at a time, best of ``rounds`` taking turns."""
    decoded = ImageFiles(find_images(folder))
    images = [normalize(decoded[index][1][None]) for index in range(len(decoded))]
    sessions = {label: OnnxSegmenter(path) for label, path in files.items()}
    best = {label: 0.0 for label in files}
    for session in sessions.values():
        session(images[0])  # ONNX Runtime prepares its kernels on the first run
    for _ in range(rounds):
        for label, session in sessions.items():
            start = time.perf_counter()
            for image in images:
                session(image)
            best[label] = max(best[label], len(images) / (time.perf_counter() - start))
    return best


def export(ckpt: str, model: str, output: str, *extra: str) -> None:
    if export_onnx.main(["--ckpt", ckpt, "--model", model, "--dataset", "voc", "--output", output, *extra]):
        sys.exit("tools/export_onnx.py failed (above); nothing was timed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus_mobilenet")
    parser.add_argument("--images", type=int, default=10, help="without --ckpt: how many JPEGs to write")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ckpt", help="a trained checkpoint of --model (with --data_root)")
    parser.add_argument("--data_root", help="with --ckpt: the VOC-layout folder it was trained on (e.g. the demo's)")
    args = parser.parse_args()
    if bool(args.ckpt) != bool(args.data_root):
        sys.exit("give --ckpt and --data_root together, or neither (random weights)")
    cpu = torch.device("cpu")
    amp, _ = resolve_amp("auto", cpu)
    layout = "channels_last" if resolve_channels_last("auto", cpu)[0] else "NCHW"
    onnx, int8, defaults, fp32 = ("ONNX Runtime --onnx (fp32, NCHW)", "ONNX Runtime --onnx INT8",
                                  f"PyTorch --ckpt, defaults ({amp}, {layout})",
                                  f"PyTorch --ckpt --amp off (fp32, {layout})")
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = os.path.join(tmp, "images"), None
        if args.ckpt:
            ckpt, calibration = args.ckpt, os.path.join(tmp, "calibration")
            masks = link_split(args.data_root, "val", images)
            link_split(args.data_root, "train", calibration)
            what = f"{len(masks)} validation images of {args.data_root}, trained weights"
        else:
            ckpt = write_inputs(tmp, args)
            calibration = images
            what = f"{args.images} JPEGs of 500x375, random weights"
        print(f"{hardware_name(cpu)}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
              f"{args.model}, {what}; predict.py's defaults here: --amp {amp}, {layout}")
        files = {onnx: os.path.join(tmp, "model.onnx"), int8: os.path.join(tmp, "model_int8.onnx")}
        export(ckpt, args.model, files[onnx])
        export(ckpt, args.model, files[int8], "--int8", "--calibration", calibration)
        alone = models_alone(files, images, args.rounds)
        print(f"the models alone, image by image, best of {args.rounds} taking turns: fp32 {alone[onnx]:.2f} "
              f"images/s, INT8 {alone[int8]:.2f} images/s ({alone[int8] / alone[onnx]:.2f}x)")
        predict = [os.path.join(REPO, "predict.py"), "--input", images, "--output", "label"]
        ckpt_args = ["--ckpt", ckpt, "--model", args.model]
        runs = {onnx: ["--onnx", files[onnx]], int8: ["--onnx", files[int8]], defaults: ckpt_args,
                fp32: [*ckpt_args, "--amp", "off"]}
        if amp == "off":
            print("predict.py's defaults are fp32 here: one PyTorch row")
            del runs[defaults]
        outputs = {label: os.path.join(tmp, f"out{index}") for index, label in enumerate(runs)}
        times = best_of_interleaved({label: ([*predict, *argv, "--save_val_results_to", outputs[label]], tmp)
                                     for label, argv in runs.items()}, args.rounds)
        count = len(masks) if masks else args.images
        width = max(map(len, times))
        score = "mean IoU" if masks else "labels = fp32's"
        print(f"whole predict.py runs, start-up and model load included, best of {args.rounds} taking turns:")
        print(f"{'setting':{width}s}  seconds  images/s  vs PyTorch fp32  {score}")
        for label, seconds in times.items():
            # with random weights, agreement with fp32 rather than a score; their small margins between the classes
            # are flipped by bf16 and INT8 rounding far more often than a trained model's
            quality = (mean_iou(outputs[label], masks, len(VOCSegmentation.class_names)) if masks
                       else agreement(outputs[label], outputs[fp32]))
            print(f"{label:{width}s}  {seconds:7.1f}  {count / seconds:8.2f}  {times[fp32] / seconds:14.2f}x  "
                  f"{quality:.4f}")


if __name__ == "__main__":
    main()
