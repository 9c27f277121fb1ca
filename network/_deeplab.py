"""DeepLab heads: ASPP, the DeepLabV3 head, the DeepLabV3+ decoder, and separable-conv conversion."""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .utils import _SimpleSegmentationModel

__all__ = ["DeepLabV3", "DeepLabHead", "DeepLabHeadV3Plus", "ASPP", "ASPPConv", "ASPPPooling",
           "AtrousSeparableConvolution", "convert_to_separable_conv", "init_head_weights"]

ASPP_CHANNELS = 256
ASPP_DROPOUT = 0.1
DECODER_LOW_LEVEL_CHANNELS = 48
DEFAULT_ATROUS_RATES = (12, 24, 36)


def init_head_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions and identity BatchNorm/GroupNorm, as the original heads start."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DeepLabV3(_SimpleSegmentationModel):
    """DeepLabV3 / DeepLabV3+ (Chen et al., 2017/2018): a backbone and a head, upsampled to the input size."""


class ASPPConv(nn.Sequential):
    """One atrous branch: 3x3 convolution at ``dilation``, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average, 1x1 convolution, BN, ReLU, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In a channels_last model every branch stays NHWC, else ASPP's concatenation and the sum of its five input
        # gradients turn NCHW: full copies each step, 4% of HRNet-48's bf16 training step on an AMX Xeon. avg_pool2d
        # over the whole map averages as the AdaptiveAvgPool2d(1) layer does, and its gradient keeps x's layout.
        # Not while torch.export or torch.compile traces: its kernel would fix the traced size (an NHWC encoder
        # such as Swin feeds NHWC features even to an NCHW model), where the adaptive layer keeps sizes dynamic.
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling()
        pooled = F.avg_pool2d(x, x.shape[-2:]) if channels_last else self[0](x)
        for layer in list(self)[1:]:
            pooled = layer(pooled)
        pooled = F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return pooled.contiguous(memory_format=torch.channels_last) if channels_last else pooled


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: 1x1, three atrous 3x3 and an image-pooling branch, projected to 256."""

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = ASPP_CHANNELS):
        super().__init__()
        rate1, rate2, rate3 = atrous_rates
        self.convs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                          nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)),
            ASPPConv(in_channels, out_channels, rate1),
            ASPPConv(in_channels, out_channels, rate2),
            ASPPConv(in_channels, out_channels, rate3),
            ASPPPooling(in_channels, out_channels),
        ])
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(ASPP_DROPOUT),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHead(nn.Module):
    """DeepLabV3 head: ASPP, a 3x3 convolution, and the 1x1 classifier on the ``out`` feature."""

    def __init__(self, in_channels: int, num_classes: int, aspp_dilate: Sequence[int] = DEFAULT_ATROUS_RATES):
        super().__init__()
        self.classifier = nn.Sequential(
            ASPP(in_channels, aspp_dilate),
            nn.Conv2d(ASPP_CHANNELS, ASPP_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(inplace=True),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )
        init_head_weights(self)

    def forward(self, feature: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(feature["out"])


class DeepLabHeadV3Plus(nn.Module):
    """DeepLabV3+ decoder: ASPP on ``out``, upsampled and joined with projected ``low_level`` features."""

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int,
                 aspp_dilate: Sequence[int] = DEFAULT_ATROUS_RATES):
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(low_level_channels, DECODER_LOW_LEVEL_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(DECODER_LOW_LEVEL_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.aspp = ASPP(in_channels, aspp_dilate)
        self.classifier = nn.Sequential(
            nn.Conv2d(DECODER_LOW_LEVEL_CHANNELS + ASPP_CHANNELS, ASPP_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(inplace=True),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )
        init_head_weights(self)

    def forward(self, feature: Dict[str, torch.Tensor]) -> torch.Tensor:
        low_level = self.project(feature["low_level"])
        out = self.aspp(feature["out"])
        out = F.interpolate(out, size=low_level.shape[2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low_level, out], dim=1))


class AtrousSeparableConvolution(nn.Module):
    """Depthwise (atrous) convolution then pointwise 1x1: a cheaper stand-in for a dense KxK convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=bias, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias),
        )
        init_head_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def convert_to_separable_conv(module: nn.Module) -> nn.Module:
    """Replace every Conv2d with a kernel larger than 1 inside ``module`` by an AtrousSeparableConvolution.

    Works in place on children and returns the (possibly replaced) module; a converted conv ``name``
    gets parameters ``name.body.0.*`` (depthwise) and ``name.body.1.*`` (pointwise).
    """
    if isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1:
        return AtrousSeparableConvolution(module.in_channels, module.out_channels, module.kernel_size,
                                          module.stride, module.padding, module.dilation,
                                          bias=module.bias is not None)
    for name, child in module.named_children():
        module.add_module(name, convert_to_separable_conv(child))
    return module
