"""Export a checkpoint to ONNX with batch, height and width dynamic, and check it against PyTorch before writing it.

Usage: python tools/export_onnx.py --ckpt best.pth --output model.onnx [--dataset voc | --classes classes.yaml]
       [--model M --output_stride 16 --separable_conv --num_classes N] [--check_sizes 512x512 513x385 385x641]

- The model is read as predict.py reads it (options left unset come from the checkpoint) and its BatchNorms are
  folded into the convolutions. The exporter is torch.export's (``dynamo=True``), opset 18: it traces sizes as
  symbols, so the ASPP image-pooling branch, the decoder's and the final resize follow the input's size.
- Input ``image``: float32 NCHW RGB, ``(pixel / 255 - mean) / std`` with the ImageNet mean and std (a multi-band
  checkpoint: its bands, ``(value - mean) / std`` with its band statistics, recorded as ``input_bands``); output
  ``logits``: (N, classes, H, W). Metadata (``metadata_props``): model_name, num_classes, class_names and palette
  (JSON; from --classes, else --dataset, else the checkpoint, else the indices in VOC's colours), output_stride,
  mean, std, precision, input, output.
- ONNX Runtime (CPU) then runs the file at each --check_sizes (the first with a batch of 2) against PyTorch:
  max |logit difference| below 1e-3 and argmax agreement of 99.9 % or more. The file is written (atomically) only
  when every size passes; otherwise nothing is written and the exit status is 1.
- --int8 --calibration DIR: the checked fp32 model is then quantised to INT8 (static, QDQ format, per-channel
  weights) with activation ranges measured on up to --calibration_images images of DIR, read as predict.py reads
  them, scaled down to the pixels of the first --check_sizes and normalised, one at a time; the metadata says
  ``precision: int8``, and how far its labels are from fp32's on those images is printed (a warning under 98 %, and
  with fewer than 8 calibration images).
"""
import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Iterable, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    stop_quietly_while_starting()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from datasets import DatasetError  # noqa: E402
from datasets.calibration import CalibrationImages, choose_calibration_images  # noqa: E402
from datasets.class_info import NAMED_DATASETS, ClassInfo, resolve_classes  # noqa: E402
from utils.io.atomic import (atomic_write, folder_of, path_state, removed_if_left_empty,  # noqa: E402
                             require_writable_file)
from utils.io.checkpoint import CheckpointError, file_problem  # noqa: E402
from utils.config import ConfigError, check_ranges, parse_with_config, warn_unused  # noqa: E402
from utils.io.image_limit import add_max_image_pixels_option, set_max_image_pixels  # noqa: E402
from utils.inference.predictor import SMALLEST_SIDE_PROBED, is_too_small, normalize, smallest_side  # noqa: E402
from utils.inference.onnx_model import (INPUT_NAME, ONNX_PACKAGES, OUTPUT_NAME, OnnxMetadata,  # noqa: E402
                                        OnnxModelError, OnnxSegmenter, first_line, import_optional)
from utils.io.own_outputs import refuse_writing_over  # noqa: E402
from network.trained_model import ModelSpec, add_model_options, load_model_of, unused_output_stride  # noqa: E402
from utils.inference.onnx_int8 import quantize_int8  # noqa: E402
from utils.io.stop_signals import exit_keeping_status  # noqa: E402
from utils.runtime.interrupts import StoppedBySignal, stop_signals_raise  # noqa: E402

OPSET = 18
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
EXAMPLE_BATCH = 2  # torch.export treats a size of 1 as a constant: a batch of 1 would fix the batch size
MAX_LOGIT_DIFF = 1e-3
MIN_ARGMAX_AGREEMENT = 0.999
MIB = 2 ** 20
CALIBRATION_IMAGES = 32  # a few dozen: the activation ranges settle well before that (see the README)
INT8_CHECK_IMAGES = 8  # calibration images the INT8 labels are compared with fp32's on
MIN_CALIBRATION_IMAGES = 8  # fewer: a warning (ranges from a handful of images rarely cover what is predicted)
MIN_INT8_AGREEMENT = 0.98  # of the pixels' labels with fp32's; lower: a warning


class ExportError(RuntimeError):
    """Options that cannot work, or an exported file that does not compute what PyTorch computes."""


def image_size(text: str) -> Tuple[int, int]:
    """argparse type for WIDTHxHEIGHT."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 513x385") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return width, height


def get_argparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint (this project's, the original's or a state_dict)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    add_model_options(parser)
    parser.add_argument("--dataset", default=None, choices=sorted(NAMED_DATASETS),
                        help="record this dataset's class names and colours (default: the checkpoint's, else the "
                             "class indices and the VOC colours)")
    parser.add_argument("--classes", default=None, help="record this classes.yaml's names and colours instead "
                                                        "(default: the checkpoint's)")
    parser.add_argument("--max_logit_diff", type=float, default=MAX_LOGIT_DIFF,
                        help="largest |ONNX Runtime - PyTorch| logit difference accepted (fp32 rounding grows with the "
                             "logits' size: raise it knowingly for checkpoints with very large logits)")
    parser.add_argument("--check_sizes", type=image_size, nargs="+", default=[(512, 512), (513, 385), (385, 641)],
                        metavar="WxH", help="sizes ONNX Runtime must match PyTorch at; the first is also the "
                                            "example the export traces")
    parser.add_argument("--int8", action="store_true", help="quantise to INT8 for the CPU (needs --calibration)")
    parser.add_argument("--calibration", default=None, metavar="DIR",
                        help="with --int8: images like those you will predict on (a folder, a file or a glob)")
    parser.add_argument("--calibration_images", type=int, default=CALIBRATION_IMAGES,
                        help="with --int8: how many of them to measure activation ranges on (spread over the list), "
                             "each scaled down to the pixels of the first --check_sizes")
    add_max_image_pixels_option(parser)
    return parser


def classes_of(opts: argparse.Namespace, spec: ModelSpec) -> ClassInfo:
    """The class names and colours to record: --classes' or --dataset's, else the checkpoint's, else indices."""
    info = resolve_classes(spec.num_classes, opts.classes, opts.dataset, spec.class_names, spec.palette,
                           model=f"the checkpoint {opts.ckpt}")
    if not (opts.classes or opts.dataset or spec.class_names):
        print(f"note: {opts.ckpt} does not name its classes; the file calls them 0..{spec.num_classes - 1} (give "
              "--dataset voc/cityscapes or --classes classes.yaml for their names)")
    return info


def onnx_graph(model: nn.Module, example: torch.Tensor) -> Any:
    """``model`` traced to an ONNX ModelProto with batch, height and width dynamic; turns off its in-place
    activations."""
    for module in model.modules():
        # torch.export traces in-place activations through slow reference decompositions (mobilenet's ReLU6:
        # 26 of 40 s); the graph is functional either way, so the numbers are the same
        if getattr(module, "inplace", False):
            module.inplace = False
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=(DYNAMIC_AXES,), verbose=False)
    return program.model_proto  # built anew on each access


def export_bytes(model: nn.Module, metadata: OnnxMetadata, example: torch.Tensor) -> bytes:
    """``model`` as an ONNX file (:func:`onnx_graph`) that records ``metadata``."""
    proto = onnx_graph(model, example)
    for key, value in metadata.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


@dataclasses.dataclass
class Check:
    """One size to compare at: random images and PyTorch's logits for them."""

    label: str
    images: torch.Tensor
    expected: torch.Tensor


def pytorch_checks(model: nn.Module, name: str, sizes: Sequence[Tuple[int, int]], bands: int = 3) -> List[Check]:
    """PyTorch's logits for random images of each size (WxH; the first size with a batch of 2), computed before
    the export so that a size the model cannot take is a clear error, not the exporter's. A multi-band model
    (``bands`` other than 3) gets standard normal values, as normalised bands are."""
    generator = torch.Generator().manual_seed(0)
    checks = []
    for index, (width, height) in enumerate(sizes):
        batch = EXAMPLE_BATCH if index == 0 else 1
        if bands == 3:
            images = normalize(torch.randint(0, 256, (batch, 3, height, width), generator=generator,
                                             dtype=torch.uint8))
        else:
            images = torch.randn(batch, bands, height, width, generator=generator)
        try:
            with torch.inference_mode():
                expected = model(images)
        except RuntimeError as exc:  # e.g. xception's exit flow needs about 71 px at output stride 16
            if not is_too_small(exc):
                raise
            raise ExportError(f"{name} cannot take a {width}x{height} image ({str(exc).splitlines()[0]}); give "
                              "larger --check_sizes") from None
        checks.append(Check(f"{width}x{height}, batch {batch}", images, expected))
    return checks


def compare(exported: OnnxSegmenter, checks: Sequence[Check], max_logit_diff: float = MAX_LOGIT_DIFF) -> List[str]:
    """Print how far ONNX Runtime is from PyTorch at each check; returns the labels of those that fail."""
    failed = []
    for check in checks:
        try:
            got = exported(check.images)
        except OnnxModelError as exc:  # e.g. a size the export fixed to the example's
            print(f"{check.label}: FAILED: {exc}")
            failed.append(check.label)
            continue
        diff = (got - check.expected).abs().max().item()
        agreement = (got.argmax(1) == check.expected.argmax(1)).double().mean().item()
        passed = diff < max_logit_diff and agreement >= MIN_ARGMAX_AGREEMENT
        print(f"{check.label}: max |logit difference| {diff:.2e} (limit {max_logit_diff:g}), argmax agreement "
              f"{agreement:.4%} (limit {MIN_ARGMAX_AGREEMENT:.1%}): {'ok' if passed else 'FAILED'}")
        if not passed:
            failed.append(check.label)
    return failed


def compare_int8(int8: OnnxSegmenter, fp32: OnnxSegmenter, images: Iterable[np.ndarray]) -> float:
    """The share of pixels where the INT8 model's labels equal the fp32 model's on ``images``."""
    same, total = 0, 0
    for image in images:
        tensor = torch.from_numpy(image)
        same += (int8(tensor).argmax(1) == fp32(tensor).argmax(1)).sum().item()
        total += image.shape[-2] * image.shape[-1]
    return same / total


def choose_calibration(opts: argparse.Namespace, model: nn.Module) -> CalibrationImages:
    """The --calibration images, scaled down to the pixels of the first --check_sizes (the size the export traces)
    and read one at a time; a warning when they are fewer than MIN_CALIBRATION_IMAGES."""
    smallest = smallest_side(model, lambda side: torch.zeros(1, 3, side, side)) or SMALLEST_SIDE_PROBED
    width, height = opts.check_sizes[0]
    calibration = choose_calibration_images(opts.calibration, opts.calibration_images, smallest, width * height)
    if len(calibration) < MIN_CALIBRATION_IMAGES:
        print(f"warning: only {len(calibration)} calibration image(s): ranges measured on so few may not cover the "
              f"images you will predict on; give at least {MIN_CALIBRATION_IMAGES}, a few dozen at best "
              "(--calibration, --calibration_images)", file=sys.stderr)
    return calibration


def quantize(fp32_data: bytes, calibration: CalibrationImages, metadata: OnnxMetadata, output: str) -> bytes:
    """The checked fp32 file quantised to INT8, with how far its labels are from fp32's printed, and a warning when
    they agree on less than MIN_INT8_AGREEMENT of the pixels."""
    start = time.perf_counter()
    try:
        data = quantize_int8(fp32_data, calibration, metadata)
    except (OnnxModelError, DatasetError):  # a calibration image that changed since it was chosen names itself
        raise
    except Exception as exc:  # ONNX Runtime's own exception types, from its shape inference or calibration
        raise ExportError(f"ONNX Runtime could not quantise the model ({first_line(exc)}); nothing was written to "
                          f"{output}") from exc
    checked = min(len(calibration), INT8_CHECK_IMAGES)
    agreement = compare_int8(OnnxSegmenter(data), OnnxSegmenter(fp32_data), (calibration[i] for i in range(checked)))
    print(f"quantised to INT8 on {len(calibration)} calibration images in {time.perf_counter() - start:.1f} s; its "
          f"labels equal fp32's on {agreement:.2%} of the pixels of {checked} of them")
    if agreement < MIN_INT8_AGREEMENT:
        print(f"warning: the INT8 labels equal fp32's on only {agreement:.2%} of the pixels of {checked} calibration "
              f"image(s), under {MIN_INT8_AGREEMENT:.0%}: check its validation score before deploying it, calibrate on "
              "more images like those you will predict on, or deploy the fp32 file", file=sys.stderr)
    return data


def run(opts: argparse.Namespace) -> None:
    for package in ONNX_PACKAGES:
        import_optional(package)
    if not opts.max_logit_diff > 0:
        raise ExportError(f"--max_logit_diff must be positive, not {opts.max_logit_diff}")
    require_writable_file(opts.output, "--output", "model.onnx")
    refuse_writing_over(opts.output, "--output", {"--ckpt": opts.ckpt, "--classes": opts.classes},
                        os.path.splitext(opts.ckpt)[0] + ".onnx")
    if os.path.isfile(opts.output) and file_problem(opts.output) is None:  # another model's weights, say
        raise ExportError(f"--output {opts.output} is a PyTorch checkpoint: the ONNX file would replace it; give "
                          f"another name, e.g. {os.path.splitext(opts.output)[0]}.onnx")
    if opts.int8 != bool(opts.calibration):
        raise ExportError("--int8 needs --calibration DIR (a few dozen images like those you will predict on)"
                          if opts.int8 else "--calibration is for --int8; add --int8 or drop it")
    check_ranges(opts, ("calibration_images", "num_classes"))
    warn_unused(opts, [(("calibration_images",), not opts.int8, "--int8 is off"),
                       (("dataset",), bool(opts.classes), "--classes gives the names and colours to record")])
    set_max_image_pixels(opts.max_image_pixels)
    model, spec = load_model_of(opts)
    warn_unused(opts, [unused_output_stride(spec.model_name)])
    if opts.int8 and spec.bands:
        raise ExportError("--int8 calibrates on RGB images; it is not available for multi-band models yet: export "
                          "without --int8")
    calibration = choose_calibration(opts, model) if opts.int8 else None
    classes = classes_of(opts, spec)
    normalisation = dict(mean=spec.bands.mean, std=spec.bands.std, bands=spec.bands) if spec.bands else {}
    metadata = OnnxMetadata(spec.model_name, spec.num_classes, classes.names, spec.output_stride,
                            palette=tuple(tuple(int(c) for c in colour) for colour in classes.palette),
                            **normalisation)
    checks = pytorch_checks(model, spec.model_name, opts.check_sizes, spec.bands.count if spec.bands else 3)
    start = time.perf_counter()
    data = export_bytes(model, metadata, checks[0].images)
    print(f"exported {spec.model_name} ({spec.num_classes} classes, output stride {spec.output_stride}) in "
          f"{time.perf_counter() - start:.1f} s; checking it with ONNX Runtime against PyTorch")
    failed = compare(OnnxSegmenter(data), checks, opts.max_logit_diff)
    if failed:
        raise ExportError(f"the ONNX model differs from PyTorch at {', '.join(failed)}; nothing was written to "
                          f"{opts.output}")
    if calibration is not None:
        data = quantize(data, calibration, metadata, opts.output)
    with atomic_write(opts.output) as f:
        f.write(data)
    print(f"wrote {opts.output} ({len(data) / MIB:.1f} MiB)")


def main(argv=None) -> int:
    opts = parse_with_config(get_argparser(), argv)
    before = path_state(opts.output)
    try:
        with stop_signals_raise(), removed_if_left_empty([folder_of(opts.output)]):  # a folder made for nothing
            run(opts)
    except StoppedBySignal as exc:
        return exc.say_about(opts.output, before)
    except (CheckpointError, ConfigError, DatasetError, OnnxModelError, ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    exit_keeping_status(main())
