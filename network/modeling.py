"""The 12 public DeepLab entries, ``deeplabv3[plus]_{resnet50,resnet101,mobilenet,xception,hrnetv2_32,hrnetv2_48}``.

Each is ``entry(num_classes=21, output_stride=..., pretrained_backbone=...)`` and is found by name in
``MODELS`` (or ``network.modeling.__dict__[name]``, as in the original). :func:`build_model` is the one
function the scripts call.
"""
from typing import Callable, Dict, Optional, Sequence, Union

from torch import nn

from ._deeplab import DeepLabHead, DeepLabHeadV3Plus, DeepLabV3, convert_to_separable_conv
from .backbone import hrnetv2, mobilenetv2, resnet, xception
from .input_conv import RGB_CHANNELS, set_input_bands
from .utils import IntermediateLayerGetter
from .weights import recording_origins

__all__ = ["MODELS", "build_model"]

Pretrained = Union[bool, str]
SUPPORTED_OUTPUT_STRIDES = (8, 16)
ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
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


def build_model(name: str, num_classes: int, output_stride: int = 16, pretrained_backbone: Optional[Pretrained] = None,
                separable_conv: bool = False, in_channels: int = RGB_CHANNELS,
                rgb_positions: Optional[Sequence[int]] = None) -> DeepLabV3:
    """Build entry ``name``; ``separable_conv`` turns the head's 3x3 convolutions into separable ones.

    ``pretrained_backbone`` None is the entry's own default, as the original's ``main.py`` builds it: ImageNet
    weights for ResNet, MobileNetV2 and Xception, none for HRNet. The model's ``backbone_weights`` says where
    the backbone's weights came from: a file path or hub id, or "none (random initialisation)".

    ``in_channels`` other than 3 (multi-band imagery) adapts the first convolution (see
    :func:`network.input_conv.set_input_bands`; ``rgb_positions``: the bands, 0-based, that take the R, G, B
    filters); the model's ``input_adaptation`` says what was done ("" for RGB).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    chosen = {} if pretrained_backbone is None else {"pretrained_backbone": pretrained_backbone}
    with recording_origins() as origins:
        model = MODELS[name](num_classes=num_classes, output_stride=output_stride, **chosen)
    model.backbone_weights = origins[0] if origins else "none (random initialisation)"
    model.input_adaptation = set_input_bands(model, in_channels, rgb_positions, pretrained=bool(origins))
    if separable_conv:
        convert_to_separable_conv(model.classifier)
    return model

