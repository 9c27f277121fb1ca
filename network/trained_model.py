"""A trained model rebuilt from its checkpoint for inference; predict.py and tools/export_onnx.py share it."""
import argparse
import dataclasses
from typing import Optional, Tuple

from torch import nn

from utils.checkpoint import CheckpointError, extract_model_state, load_checkpoint, load_model_state
from utils.inference import fold_batchnorm

from .modeling import MODELS, build_model

__all__ = ["DEFAULT_MODEL", "DEFAULT_OUTPUT_STRIDE", "ModelSpec", "add_model_options", "load_trained_model",
           "load_model_of"]

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


def load_trained_model(path: str, model_name: Optional[str] = None, output_stride: Optional[int] = None,
                       separable_conv: Optional[bool] = None,
                       num_classes: Optional[int] = None) -> Tuple[nn.Module, ModelSpec]:
    """The model of checkpoint ``path`` in eval mode with BatchNorm folded, on the CPU, and what it is.

    Options left None take what this project's checkpoints record (model_name, output_stride, separable_conv,
    class_names), else the original's defaults; the class count comes from the classifier's weights.
    CheckpointError when the file cannot be read or does not fit the model.
    """
    checkpoint = load_checkpoint(path)
    state = extract_model_state(checkpoint, path)
    last_conv = [v for v in state.values() if v.dim() == 4][-1]  # the classifier, in our and the original's order
    spec = ModelSpec(
        model_name=model_name or checkpoint.get("model_name") or DEFAULT_MODEL,
        output_stride=output_stride or checkpoint.get("output_stride") or DEFAULT_OUTPUT_STRIDE,
        separable_conv=bool(separable_conv if separable_conv is not None else checkpoint.get("separable_conv")),
        num_classes=num_classes or int(last_conv.shape[0]))
    names = checkpoint.get("class_names")
    if isinstance(names, (list, tuple)) and len(names) == spec.num_classes:
        spec = dataclasses.replace(spec, class_names=tuple(str(name) for name in names))
    model = build_model(spec.model_name, spec.num_classes, spec.output_stride, pretrained_backbone=False,
                                separable_conv=spec.separable_conv)
    if load_model_state(model, state, path):
        raise CheckpointError(f"checkpoint {path} has a classifier for another class count than "
                              f"{spec.num_classes}; drop --num_classes to use the checkpoint's")
    return fold_batchnorm(model.eval()), spec


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --output_stride, --separable_conv and --num_classes, each defaulting to what the checkpoint says."""
    parser.add_argument("--model", type=str, default=None, choices=list(MODELS),
                        help=f"default: the checkpoint's model_name, else {DEFAULT_MODEL}")
    parser.add_argument("--output_stride", type=int, default=None, choices=[8, 16],
                        help=f"default: the checkpoint's, else {DEFAULT_OUTPUT_STRIDE}")
    parser.add_argument("--separable_conv", action=argparse.BooleanOptionalAction, default=None,
                        help="apply separable conv to decoder and aspp (default: as the checkpoint says)")
    parser.add_argument("--num_classes", type=int, default=None, help="default: read from the checkpoint")


def load_model_of(opts: argparse.Namespace) -> Tuple[nn.Module, ModelSpec]:
    """:func:`load_trained_model` for ``opts.ckpt`` with the options of :func:`add_model_options`."""
    return load_trained_model(opts.ckpt, opts.model, opts.output_stride, opts.separable_conv, opts.num_classes)
