"""Xception (Chollet 2017) in the layout of the ImageNet port DeepLabV3Plus-Pytorch loads.

Blocks can trade their stride for dilation (``replace_stride_with_dilation``), which is how DeepLab
reaches an output stride of 16 or 8. Kept as the original builds it, so its checkpoints give the
same outputs: the stem convolutions are unpadded, and ``conv3``/``conv4`` use padding 1 at the
accumulated dilation (at dilation 2 each trims one pixel per side; the head upsamples anyway).
"""
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ..weights import load_backbone_weights

__all__ = ["Xception", "SeparableConv2d", "Block", "xception"]

MIDDLE_FLOW_BLOCKS = 8
MIDDLE_FLOW_CHANNELS = 728


class SeparableConv2d(nn.Module):
    """Depthwise convolution followed by a pointwise 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                               groups=in_channels, bias=bias)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """``reps`` x (ReLU, SeparableConv2d, BN), an optional strided max-pool, and a (projected) skip."""

    def __init__(self, in_filters: int, out_filters: int, reps: int, strides: int = 1,
                 start_with_relu: bool = True, grow_first: bool = True, dilation: int = 1):
        super().__init__()
        if out_filters != in_filters or strides != 1:
            self.skip = nn.Conv2d(in_filters, out_filters, 1, stride=strides, bias=False)
            self.skipbn = nn.BatchNorm2d(out_filters)
        else:
            self.skip = None

        def unit(cin: int, cout: int) -> List[nn.Module]:
            return [nn.ReLU(inplace=True),
                    SeparableConv2d(cin, cout, 3, stride=1, padding=dilation, dilation=dilation),
                    nn.BatchNorm2d(cout)]

        # Channels grow in the first unit (grow_first) or in the last one.
        widths = [out_filters if grow_first else in_filters] * reps
        layers: List[nn.Module] = []
        cin = in_filters
        for i, cout in enumerate(widths):
            if not grow_first and i == reps - 1:
                cout = out_filters
            layers += unit(cin, cout)
            cin = cout
        if start_with_relu:
            layers[0] = nn.ReLU(inplace=False)  # the block input is also the skip: keep it intact
        else:
            layers = layers[1:]
        if strides != 1:
            layers.append(nn.MaxPool2d(3, strides, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + skip


# (in, out, reps, stride, start_with_relu, grow_first, which dilation switch applies) for block1..block12
_BLOCKS = ([(64, 128, 2, 2, False, True, 0), (128, 256, 2, 2, True, True, 1),
            (256, MIDDLE_FLOW_CHANNELS, 2, 2, True, True, 2)]
           + [(MIDDLE_FLOW_CHANNELS, MIDDLE_FLOW_CHANNELS, 3, 1, True, True, 2)] * MIDDLE_FLOW_BLOCKS
           + [(MIDDLE_FLOW_CHANNELS, 1024, 2, 2, True, False, 3)])


class Xception(nn.Module):
    """Xception; ``replace_stride_with_dilation`` has one switch for block1, block2, block3 and block12."""

    def __init__(self, num_classes: int = 1000, replace_stride_with_dilation: Optional[Sequence[bool]] = None):
        super().__init__()
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False, False]
        if len(replace_stride_with_dilation) != 4:
            raise ValueError(f"replace_stride_with_dilation needs 4 entries, got {replace_stride_with_dilation}")
        self.num_classes = num_classes
        self.dilation = 1
        # Registration order is execution order: IntermediateLayerGetter relies on it.
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU(inplace=True)
        for index, (cin, cout, reps, stride, start_relu, grow_first, switch) in enumerate(_BLOCKS, start=1):
            if replace_stride_with_dilation[switch] and stride != 1:
                self.dilation *= stride
                stride = 1
            self.add_module(f"block{index}", Block(cin, cout, reps, stride, start_relu, grow_first, self.dilation))
        self.conv3 = SeparableConv2d(1024, 1536, 3, 1, 1, dilation=self.dilation)
        self.bn3 = nn.BatchNorm2d(1536)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = SeparableConv2d(1536, 2048, 3, 1, 1, dilation=self.dilation)
        self.bn4 = nn.BatchNorm2d(2048)
        self.fc = nn.Linear(2048, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            if name == "fc":
                break
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.features(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def xception(pretrained: Union[bool, str] = False, progress: bool = True, **kwargs) -> Xception:
    """Xception; ``pretrained`` is False, True (ImageNet weights from the torch hub cache) or a file path."""
    model = Xception(**kwargs)
    if pretrained:
        load_backbone_weights(model, "xception", pretrained, progress)
    return model
