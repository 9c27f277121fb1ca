"""MobileNetV2 with output stride 8 or 16 by dilation, as DeepLab uses it.

Padding follows the original DeepLabV3Plus-Pytorch exactly (its released checkpoints depend on it):
the stem convolution has no padding, and every inverted-residual block pads its *input*
("fixed padding" for a 3x3 kernel at its dilation) before the 1x1 expansion, so the 3x3 depthwise
convolution itself runs unpadded.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import load_backbone_weights

__all__ = ["MobileNetV2", "InvertedResidual", "mobilenet_v2"]

# (expansion t, output channels c, repeats n, first stride s) of the paper's Table 2
DEFAULT_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int, min_value: Optional[int] = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU(nn.Sequential):
    """Unpadded convolution, BatchNorm, ReLU6."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, 0, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


def fixed_padding(kernel_size: int, dilation: int) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that keeps the size for a dilated kernel at stride 1."""
    effective = kernel_size + (kernel_size - 1) * (dilation - 1)
    total = effective - 1
    return (total // 2, total - total // 2, total // 2, total - total // 2)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1), with a residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, dilation: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, dilation=dilation, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.input_padding = fixed_padding(3, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, self.input_padding))
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 (torchvision's module names) that stops striding once ``output_stride`` is reached."""

    def __init__(self, num_classes: int = 1000, output_stride: int = 8, width_mult: float = 1.0,
                 inverted_residual_setting: Sequence[Sequence[int]] = DEFAULT_SETTING, round_nearest: int = 8):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"MobileNetV2 output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        input_channel = make_divisible(STEM_CHANNELS * width_mult, round_nearest)
        self.last_channel = make_divisible(LAST_CHANNELS * max(1.0, width_mult), round_nearest)
        features: List[nn.Module] = [ConvBNReLU(3, input_channel, stride=2)]
        current_stride, dilation = 2, 1
        for t, c, n, s in inverted_residual_setting:
            previous_dilation = dilation
            if current_stride == output_stride:
                stride, dilation = 1, dilation * s
            else:
                stride, current_stride = s, current_stride * s
            output_channel = int(c * width_mult)
            for i in range(n):
                if i == 0:
                    features.append(InvertedResidual(input_channel, output_channel, stride, previous_dilation, t))
                else:
                    features.append(InvertedResidual(input_channel, output_channel, 1, dilation, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean([2, 3]))


def mobilenet_v2(pretrained: Union[bool, str] = False, progress: bool = True, **kwargs) -> MobileNetV2:
    """MobileNetV2; ``pretrained`` is False, True (torchvision's ImageNet weights) or a local file path."""
    model = MobileNetV2(**kwargs)
    if pretrained:
        load_backbone_weights(model, "mobilenet_v2", pretrained, progress)
    return model
