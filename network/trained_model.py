"""A trained model rebuilt from its checkpoint for inference; predict.py and tools/export_onnx.py share it."""
import argparse
import dataclasses
import inspect
from typing import Any, Dict, Mapping, Optional, Tuple

from torch import nn

from utils.io.bands import BANDS_KEY, BandSpec
from utils.io.checkpoint import CheckpointError, extract_model_state, load_checkpoint, load_model_state
from utils.config import Unused

from .fusion import fold_batchnorm
from .modeling import MODELS, SUPPORTED_OUTPUT_STRIDES, TIMM_PREFIX, build_model

__all__ = ["DEFAULT_MODEL", "DEFAULT_OUTPUT_STRIDE", "ModelSpec", "architecture_record", "recorded_architecture",
           "recorded_bands", "recorded_timm_options", "add_model_options",
           "load_trained_model", "load_model_of", "unused_output_stride"]

DEFAULT_MODEL = "deeplabv3plus_mobilenet"  # the original's defaults, for checkpoints that do not record theirs
DEFAULT_OUTPUT_STRIDE = 16


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint's model is: its architecture options and the classes it predicts."""

    model_name: str
    output_stride: int
    separable_conv: bool
    num_classes: int
    class_names: Optional[Tuple[str, ...]] = None  # None: the checkpoint does not name its classes
    palette: Optional[Tuple[Tuple[int, int, int], ...]] = None  # their colours, when the checkpoint records them
    bands: Optional[BandSpec] = None  # the input bands of a multi-band model; None: 8-bit RGB, ImageNet-normalised


def recorded_architecture(checkpoint: Mapping[str, Any], path: str, model_name: Optional[str] = None,
                          output_stride: Optional[int] = None, separable_conv: Optional[bool] = None,
                          other_model: str = "") -> Tuple[str, int, bool]:
    """(model name, output stride, separable_conv) to rebuild ``checkpoint``'s model with.

    An option given (not None) is used; one left None takes what the checkpoint records (this project's
    checkpoints do, the original's do not), else the original's default. A given model name or
    separable_conv that contradicts the record is a CheckpointError naming both: the weights would not fit
    (``other_model`` ends the model's message: how the script starts another model from the checkpoint, if it
    can). Another output stride is fine: the same weights run at stride 8 or 16.
    """
    recorded_model, recorded_separable = checkpoint.get("model_name"), checkpoint.get("separable_conv")
    if model_name and recorded_model and model_name != recorded_model:
        raise CheckpointError(f"checkpoint {path} holds a {recorded_model} but --model {model_name} was given; drop "
                              f"--model to use the checkpoint's{other_model}")
    if separable_conv is not None and recorded_separable is not None and separable_conv != recorded_separable:
        flag = "--separable_conv" if separable_conv else "--no-separable_conv"
        raise CheckpointError(f"checkpoint {path} was trained with separable_conv {bool(recorded_separable)} but "
                              f"{flag} was given; drop it to use the checkpoint's")
    return (model_name or recorded_model or DEFAULT_MODEL,
            output_stride or checkpoint.get("output_stride") or DEFAULT_OUTPUT_STRIDE,
            bool(separable_conv if separable_conv is not None else recorded_separable))




def recorded_bands(checkpoint: Mapping[str, Any], path: str) -> Optional[BandSpec]:
    """The input bands ``checkpoint`` records (multi-band models), None for an RGB one; CheckpointError when the
    record is malformed."""
    if checkpoint.get(BANDS_KEY) is None:
        return None
    try:
        return BandSpec.from_record(checkpoint[BANDS_KEY])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} has a {exc}; train it again or drop the {BANDS_KEY} entry") \
            from None


def recorded_timm_options(checkpoint: Mapping[str, Any], model_name: str) -> Optional[Dict[str, Any]]:
    """The timm keywords ``checkpoint`` records for its encoder (``timm_encoder``, written for the tu- entries) when
    it holds ``model_name``; None otherwise (the timm entry then finds them again)."""
    record = checkpoint.get("timm_encoder")
    if checkpoint.get("model_name") != model_name or not isinstance(record, Mapping):
        return None
    options = record.get("options")
    return dict(options) if isinstance(options, Mapping) else None


ARCHITECTURE_KEYS = ("model_name", "output_stride", "separable_conv", "timm_encoder", BANDS_KEY)


def architecture_record(path: str) -> Dict[str, Any]:
    """What checkpoint ``path`` records of its architecture and input bands (:data:`ARCHITECTURE_KEYS`; nothing for
    the original's files), read memory-mapped: the weights are not loaded for it."""
    checkpoint = load_checkpoint(path, mmap=True)
    return {key: checkpoint[key] for key in ARCHITECTURE_KEYS if key in checkpoint}


def load_trained_model(path: str, model_name: Optional[str] = None, output_stride: Optional[int] = None,
                       separable_conv: Optional[bool] = None,
                       num_classes: Optional[int] = None) -> Tuple[nn.Module, ModelSpec]:
    """The model of checkpoint ``path`` in eval mode with BatchNorm folded, on the CPU, and what it is.

    The architecture comes from :func:`recorded_architecture`, the class names, palette and input bands from the
    checkpoint when it records them, the class count from the classifier's weights (a ``num_classes`` given that
    differs is a CheckpointError naming both). CheckpointError when the file cannot be read or does not fit the
    model.
    """
    checkpoint = load_checkpoint(path)
    state = extract_model_state(checkpoint, path)
    last_conv = [v for v in state.values() if v.dim() == 4][-1]  # the classifier, in our and the original's order
    architecture = recorded_architecture(checkpoint, path, model_name, output_stride, separable_conv)
    predicted = int(last_conv.shape[0])
    if num_classes is not None and num_classes != predicted:
        raise CheckpointError(f"checkpoint {path} predicts {predicted} classes, not the {num_classes} of "
                              "--num_classes; drop --num_classes (the checkpoint's count is used)")
    spec = ModelSpec(*architecture, num_classes=predicted, bands=recorded_bands(checkpoint, path))
    names, palette = checkpoint.get("class_names"), checkpoint.get("palette")
    if isinstance(names, (list, tuple)) and len(names) == spec.num_classes:
        spec = dataclasses.replace(spec, class_names=tuple(str(name) for name in names))
    if isinstance(palette, (list, tuple)) and len(palette) == spec.num_classes:
        spec = dataclasses.replace(spec, palette=tuple(tuple(int(c) for c in colour) for colour in palette))
    model = build_model(spec.model_name, spec.num_classes, spec.output_stride, pretrained_backbone=False,
                        separable_conv=spec.separable_conv,
                        timm_options=recorded_timm_options(checkpoint, spec.model_name),
                        in_channels=spec.bands.count if spec.bands else 3)
    if load_model_state(model, state, path):  # its last 4-D tensor was not the classifier's
        raise CheckpointError(f"checkpoint {path} does not fit {spec.model_name} with {spec.num_classes} classes")
    return fold_batchnorm(model.eval()), spec


def add_model_options(parser: argparse.ArgumentParser, num_classes: bool = True) -> None:
    """--model, --output_stride and --separable_conv (and with ``num_classes`` --num_classes), each defaulting to
    what the checkpoint records (:func:`recorded_architecture`); main.py, predict.py and the export share them."""
    parser.add_argument("--model", type=str, default=None, metavar="MODEL",
                        help=f"one of {', '.join(MODELS)}, or deeplabv3_{TIMM_PREFIX}NAME / deeplabv3plus_"
                             f"{TIMM_PREFIX}NAME for timm's encoder NAME (default: the model the checkpoint records, "
                             f"else {DEFAULT_MODEL})")
    parser.add_argument("--output_stride", type=int, default=None, choices=[8, 16, 32],
                        help=f"backbone output stride (default: as the checkpoint records, else "
                             f"{DEFAULT_OUTPUT_STRIDE}; HRNet always works at 4; 32 for the {TIMM_PREFIX} encoders "
                             "that cannot dilate, such as Swin and PVTv2)")
    parser.add_argument("--separable_conv", action=argparse.BooleanOptionalAction, default=None,
                        help="separable 3x3 convolutions in ASPP and the decoder (default: as the checkpoint records, "
                             "else off)")
    if num_classes:
        parser.add_argument("--num_classes", type=int, default=None, help="default: read from the checkpoint")


def unused_output_stride(model_name: str) -> Unused:
    """For :func:`utils.config.warn_unused`: --output_stride is unused by an entry that always works at one stride
    (its builder's default is none of the supported ones: HRNet keeps a stride-4 branch throughout). A timm entry
    takes the stride it is given (network.check_model refuses one its family cannot do)."""
    if model_name not in MODELS:
        return ("output_stride",), False, ""
    fixed = inspect.signature(MODELS[model_name]).parameters["output_stride"].default
    return ("output_stride",), fixed not in SUPPORTED_OUTPUT_STRIDES, f"{model_name} always works at stride {fixed}"


def load_model_of(opts: argparse.Namespace) -> Tuple[nn.Module, ModelSpec]:
    """:func:`load_trained_model` for ``opts.ckpt`` with the options of :func:`add_model_options`."""
    return load_trained_model(opts.ckpt, opts.model, opts.output_stride, opts.separable_conv, opts.num_classes)
