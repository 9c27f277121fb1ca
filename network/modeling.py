"""The 12 public DeepLab entries, ``deeplabv3[plus]_{resnet50,resnet101,mobilenet,xception,hrnetv2_32,hrnetv2_48}``,
and ``deeplabv3[plus]_tu-<timm name>`` for any timm encoder with multi-scale features.

Each of the 12 is ``entry(num_classes=21, output_stride=..., pretrained_backbone=...)`` and is found by name in
``MODELS`` (or ``network.modeling.__dict__[name]``, as in the original). :func:`build_model` is the one
function the scripts call; it builds the timm entries too.
"""
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._deeplab import DeepLabHead, DeepLabHeadV3Plus, DeepLabV3, convert_to_separable_conv
from .backbone import hrnetv2, mobilenetv2, resnet, xception
from .backbone.timm_encoder import TimmFeatures, create_features, import_timm
from .input_conv import RGB_CHANNELS, set_input_bands
from .utils import IntermediateLayerGetter
from .weights import load_timm_weights, recording_origins

__all__ = ["MODELS", "TIMM_PREFIX", "build_model", "split_timm_entry", "check_model", "encoder_record",
           "convert_sync_batchnorm"]

Pretrained = Union[bool, str]
SUPPORTED_OUTPUT_STRIDES = (8, 16)
# DeepLab's rates at 16 and 8; at 32 (timm families that cannot dilate) halved again.
ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}
TIMM_PREFIX = "tu-"
ARCHITECTURES = ("deeplabv3plus", "deeplabv3")
HRNET_ATROUS_RATES = (12, 24, 36)


def _check_output_stride(backbone_name: str, output_stride: int) -> None:
    if output_stride not in SUPPORTED_OUTPUT_STRIDES:
        raise ValueError(f"{backbone_name} supports output_stride 8 or 16, got {output_stride}")


def _head(arch: str, in_channels: int, low_level_channels: int, num_classes: int, rates) -> nn.Module:
    if arch == "deeplabv3plus":
        return DeepLabHeadV3Plus(in_channels, low_level_channels, num_classes, rates)
    return DeepLabHead(in_channels, num_classes, rates)


def _assemble(arch: str, backbone: nn.Module, out_layer: str, low_layer: str, in_channels: int,
              low_level_channels: int, num_classes: int, rates) -> DeepLabV3:
    return_layers = {out_layer: "out"}
    if arch == "deeplabv3plus":
        return_layers[low_layer] = "low_level"
    classifier = _head(arch, in_channels, low_level_channels, num_classes, rates)
    return DeepLabV3(IntermediateLayerGetter(backbone, return_layers), classifier)


def _segm_resnet(arch: str, backbone_name: str, num_classes: int, output_stride: int,
                 pretrained_backbone: Pretrained) -> DeepLabV3:
    _check_output_stride(backbone_name, output_stride)
    dilation = [False, True, True] if output_stride == 8 else [False, False, True]
    backbone = resnet.__dict__[backbone_name](pretrained=pretrained_backbone, replace_stride_with_dilation=dilation)
    return _assemble(arch, backbone, "layer4", "layer1", 2048, 256, num_classes, ATROUS_RATES[output_stride])


def _segm_xception(arch: str, backbone_name: str, num_classes: int, output_stride: int,
                   pretrained_backbone: Pretrained) -> DeepLabV3:
    _check_output_stride(backbone_name, output_stride)
    dilation = [False, False, True, True] if output_stride == 8 else [False, False, False, True]
    backbone = xception.xception(pretrained=pretrained_backbone, replace_stride_with_dilation=dilation)
    return _assemble(arch, backbone, "conv4", "block1", 2048, 128, num_classes, ATROUS_RATES[output_stride])


def _segm_mobilenet(arch: str, backbone_name: str, num_classes: int, output_stride: int,
                    pretrained_backbone: Pretrained) -> DeepLabV3:
    _check_output_stride(backbone_name, output_stride)
    features = mobilenetv2.mobilenet_v2(pretrained=pretrained_backbone, output_stride=output_stride).features
    # Stride-4 features (24 channels) for the decoder; the rest up to the 320-channel block for ASPP.
    stages = nn.ModuleDict({"low_level_features": features[0:4], "high_level_features": features[4:-1]})
    return _assemble(arch, stages, "high_level_features", "low_level_features", 320, 24, num_classes,
                     ATROUS_RATES[output_stride])


def _segm_hrnet(arch: str, backbone_name: str, num_classes: int, output_stride: int,
                pretrained_backbone: Pretrained) -> DeepLabV3:
    # HRNetV2 keeps a stride-4 branch throughout; output_stride is accepted (the CLI passes 16) and ignored.
    backbone = hrnetv2.__dict__[backbone_name](pretrained=pretrained_backbone)
    return _assemble(arch, backbone, "stage4", "layer1", backbone.out_channels, 256, num_classes,
                     HRNET_ATROUS_RATES)


def _segm_timm(arch: str, timm_name: str, num_classes: int, output_stride: int, pretrained_backbone: Pretrained,
               options: Optional[Dict[str, Any]] = None) -> DeepLabV3:
    features = create_features(timm_name, output_stride, arch == "deeplabv3plus", options)
    if pretrained_backbone:
        load_timm_weights(features, pretrained_backbone)
    classifier = _head(arch, features.out_channels, features.low_level_channels, num_classes,
                       ATROUS_RATES[output_stride])
    return DeepLabV3(features, classifier)


def split_timm_entry(name: str) -> Optional[Tuple[str, str]]:
    """(architecture, timm name) of a ``deeplabv3[plus]_tu-<timm name>`` entry; None for any other name."""
    for arch in ARCHITECTURES:
        prefix = f"{arch}_{TIMM_PREFIX}"
        if name.startswith(prefix) and len(name) > len(prefix):
            return arch, name[len(prefix):]
    return None


def _entry(arch: str, backbone_name: str, segm: Callable, default_output_stride: int,
           default_pretrained: bool) -> Callable[..., DeepLabV3]:
    name = f"{arch}_{backbone_name.replace('mobilenetv2', 'mobilenet')}"

    def build(num_classes: int = 21, output_stride: int = default_output_stride,
              pretrained_backbone: Pretrained = default_pretrained) -> DeepLabV3:
        return segm(arch, backbone_name, num_classes, output_stride, pretrained_backbone)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"{'DeepLabV3+' if arch == 'deeplabv3plus' else 'DeepLabV3'} with a {backbone_name} backbone.\n\n"
                     "Args:\n    num_classes: number of output classes.\n"
                     "    output_stride: 8 or 16 (HRNet always works at stride 4 and ignores it).\n"
                     "    pretrained_backbone: False, True (ImageNet weights via the torch hub cache) or a file path.")
    return build


_BACKBONES = (  # (backbone, builder, default output stride, pretrained by default as in the original)
    ("resnet50", _segm_resnet, 8, True),
    ("resnet101", _segm_resnet, 8, True),
    ("mobilenetv2", _segm_mobilenet, 8, True),
    ("xception", _segm_xception, 8, True),
    ("hrnetv2_32", _segm_hrnet, 4, False),
    ("hrnetv2_48", _segm_hrnet, 4, False),
)

MODELS: Dict[str, Callable[..., DeepLabV3]] = {}
for _arch in ("deeplabv3", "deeplabv3plus"):
    for _backbone, _segm, _stride, _pretrained in _BACKBONES:
        _fn = _entry(_arch, _backbone, _segm, _stride, _pretrained)
        MODELS[_fn.__name__] = _fn
globals().update(MODELS)
__all__ += list(MODELS)


def _unknown_model(name: str) -> ValueError:
    return ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, or deeplabv3_{TIMM_PREFIX}<timm "
                      f"name> / deeplabv3plus_{TIMM_PREFIX}<timm name> (e.g. deeplabv3plus_{TIMM_PREFIX}resnet50)")


def build_model(name: str, num_classes: int, output_stride: int = 16, pretrained_backbone: Optional[Pretrained] = None,
                separable_conv: bool = False, timm_options: Optional[Dict[str, Any]] = None,
                in_channels: int = RGB_CHANNELS, rgb_positions: Optional[Sequence[int]] = None) -> DeepLabV3:
    """Build entry ``name``; ``separable_conv`` turns the head's 3x3 convolutions into separable ones.

    ``pretrained_backbone`` None is the entry's own default, as the original's ``main.py`` builds it: ImageNet
    weights for ResNet, MobileNetV2 and Xception, timm's default pretrained weights for a timm encoder, none for
    HRNet. The model's ``backbone_weights`` says where the backbone's weights came from: a file path or hub id, or
    "none (random initialisation)". ``timm_options``: the timm keywords a checkpoint recorded (:func:`encoder_record`).

    ``in_channels`` other than 3 (multi-band imagery) adapts the first convolution (see
    :func:`network.input_conv.set_input_bands`; ``rgb_positions``: the bands, 0-based, that take the R, G, B
    filters); the model's ``input_adaptation`` says what was done ("" for RGB).
    """
    timm_entry = split_timm_entry(name)
    if name not in MODELS and not timm_entry:
        raise _unknown_model(name)
    with recording_origins() as origins:
        if timm_entry:
            model = _segm_timm(*timm_entry, num_classes, output_stride,
                               True if pretrained_backbone is None else pretrained_backbone, timm_options)
        else:
            chosen = {} if pretrained_backbone is None else {"pretrained_backbone": pretrained_backbone}
            model = MODELS[name](num_classes=num_classes, output_stride=output_stride, **chosen)
    model.backbone_weights = origins[0] if origins else "none (random initialisation)"
    model.input_adaptation = set_input_bands(model, in_channels, rgb_positions, pretrained=bool(origins))
    if separable_conv:
        convert_to_separable_conv(model.classifier)
    return model


def check_model(name: str, output_stride: int) -> None:
    """The ValueError :func:`build_model` would raise for ``name`` at ``output_stride`` (an unknown name, a timm
    name, stride or family that cannot work), found in a second or so: a timm encoder is built on the meta device."""
    timm_entry = split_timm_entry(name)
    if timm_entry:
        arch, timm_name = timm_entry
        with torch.device("meta"):
            create_features(timm_name, output_stride, arch == "deeplabv3plus")
    elif name not in MODELS:
        raise _unknown_model(name)
    elif output_stride not in SUPPORTED_OUTPUT_STRIDES and \
            inspect.signature(MODELS[name]).parameters["output_stride"].default in SUPPORTED_OUTPUT_STRIDES:
        raise ValueError(f"{name} supports --output_stride 8 or 16, not {output_stride} (32 is for timm encoders "
                         "that cannot dilate)")  # HRNet's builders take any: they always work at one stride


def encoder_record(model: nn.Module) -> Optional[Dict[str, Any]]:
    """What a checkpoint records of a timm encoder to rebuild it: its timm name, the keywords it was built with and
    the timm version (None for the 12 entries)."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, TimmFeatures):
        return None
    return {"name": backbone.name, "options": dict(backbone.options), "timm_version": import_timm().__version__}


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm as a SyncBatchNorm; with a timm encoder by timm's converter, which keeps the activation of
    its BatchNorm + activation layers (PyTorch's would drop it). The state_dict keys stay the same."""
    if isinstance(getattr(model, "backbone", None), TimmFeatures):
        return import_timm().layers.convert_sync_batchnorm(model)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
