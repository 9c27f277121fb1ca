"""HRNetV2 backbone (Wang et al., 2019): parallel branches at strides 4, 8, 16 and 32, fused repeatedly.

The module layout matches the original DeepLabV3Plus-Pytorch (and hence the official HRNet
classification checkpoints). Differences from the original, all output-identical where the
original ran at all:

* ``BasicBlock.conv2`` maps planes -> planes (the original used inplanes); the blocks are ResNet's.
* Fusion upsamples a lower branch to the *size* of the target branch (nearest neighbour) instead of
  by a fixed factor, so any input size works, not only multiples of 32.
* The stride-2 transitions are modules that take and return the list of branches, so a generic
  layer getter can run the network; the final multi-branch output is merged by the getter.

The network always works at output stride 4 (the highest-resolution branch).
"""
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import load_backbone_weights
from .resnet import BasicBlock, Bottleneck  # the same blocks (conv2 maps planes -> planes, fixing the original)

__all__ = ["HRNet", "BasicBlock", "Bottleneck", "StageModule", "hrnetv2_32", "hrnetv2_48"]

STEM_CHANNELS = 64
BLOCKS_PER_BRANCH = 4
DEFAULT_STAGE_MODULES = (1, 4, 3)  # modules in stages 2, 3 and 4
OUTPUT_STRIDE = 4


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Convolution (same padding) + BatchNorm (+ ReLU)."""
    layers: List[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _fuse_layer(c: int, source: int, target: int) -> nn.Module:
    """What brings branch ``source`` to branch ``target``'s channels and (before resizing) resolution."""
    if source == target:
        return nn.Sequential()
    if source > target:  # lower resolution: 1x1 to the target's channels; upsampled in forward
        return conv_bn(c * 2 ** source, c * 2 ** target, 1, relu=False)
    steps = [conv_bn(c * 2 ** source, c * 2 ** source, 3, stride=2) for _ in range(target - source - 1)]
    steps.append(conv_bn(c * 2 ** source, c * 2 ** target, 3, stride=2, relu=False))
    return nn.Sequential(*steps)


class StageModule(nn.Module):
    """One HRNet module: ``BLOCKS_PER_BRANCH`` basic blocks on each branch, then every branch fused into each output."""

    def __init__(self, stage: int, output_branches: int, c: int):
        super().__init__()
        self.number_of_branches = stage
        self.output_branches = output_branches
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c * 2 ** i, c * 2 ** i) for _ in range(BLOCKS_PER_BRANCH)])
            for i in range(stage))
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_layer(c, source, target) for source in range(stage))
            for target in range(output_branches))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, branches: List[torch.Tensor]) -> List[torch.Tensor]:
        branches = [branch(x) for branch, x in zip(self.branches, branches)]
        fused = []
        for target, layers in enumerate(self.fuse_layers):
            size = branches[target].shape[-2:]
            total = None
            for source, (layer, x) in enumerate(zip(layers, branches)):
                y = layer(x)
                if source > target:
                    y = F.interpolate(y, size=size, mode="nearest")
                total = y if total is None else total + y
            fused.append(self.relu(total))
        return fused


class SplitBranches(nn.ModuleList):
    """Transition 1: one tensor in, one tensor per new branch out."""

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [layer(x) for layer in self]


class AddBranch(nn.Sequential):
    """Transitions 2 and 3: a strided conv on the lowest branch opens one more branch."""

    def forward(self, branches: List[torch.Tensor]) -> List[torch.Tensor]:
        return list(branches) + [super().forward(branches[-1])]


class HRNet(nn.Module):
    """HRNetV2 feature extractor of width ``c``; returns the list of its four branch outputs."""

    def __init__(self, c: int = 48, num_blocks: Sequence[int] = DEFAULT_STAGE_MODULES):
        super().__init__()
        self.width = c
        # DeepLab runs these children in registration order (the original's layer getter does), so there
        # the stem is conv1, bn1, conv2, bn2, relu, without the ReLU after bn1 that forward() applies;
        # the original's DeepLab checkpoints expect exactly that.
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        wide = STEM_CHANNELS * Bottleneck.expansion
        downsample = conv_bn(STEM_CHANNELS, wide, 1, relu=False)
        self.layer1 = nn.Sequential(Bottleneck(STEM_CHANNELS, STEM_CHANNELS, downsample=downsample),
                                    *[Bottleneck(wide, STEM_CHANNELS) for _ in range(3)])
        # The extra Sequential around the second branch mirrors the official checkpoints' keys.
        self.transition1 = SplitBranches([conv_bn(wide, c, 3), nn.Sequential(conv_bn(wide, c * 2, 3, stride=2))])
        self.stage2 = nn.Sequential(*[StageModule(2, 2, c) for _ in range(num_blocks[0])])
        self.transition2 = AddBranch(*conv_bn(c * 2, c * 4, 3, stride=2))
        self.stage3 = nn.Sequential(*[StageModule(3, 3, c) for _ in range(num_blocks[1])])
        self.transition3 = AddBranch(*conv_bn(c * 4, c * 8, 3, stride=2))
        self.stage4 = nn.Sequential(*[StageModule(4, 4, c) for _ in range(num_blocks[2])])

    @property
    def out_channels(self) -> int:
        """Channels of the four branches concatenated (the HRNetV2 representation)."""
        return sum(self.width * 2 ** i for i in range(4))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four branch outputs, with the classification network's stem (as timm and the official code)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.transition1(self.layer1(x))
        x = self.transition2(self.stage2(x))
        x = self.transition3(self.stage3(x))
        return self.stage4(x)


def _hrnet(arch: str, width: int, pretrained: Union[bool, str], progress: bool, **kwargs) -> HRNet:
    model = HRNet(width, **kwargs)
    if pretrained:
        load_backbone_weights(model, arch, pretrained, progress)
    return model


def hrnetv2_32(pretrained: Union[bool, str] = False, progress: bool = True, **kwargs) -> HRNet:
    """HRNetV2-W32; ``pretrained`` is False, True (file in the torch hub cache) or a local file path."""
    return _hrnet("hrnetv2_32", 32, pretrained, progress, **kwargs)


def hrnetv2_48(pretrained: Union[bool, str] = False, progress: bool = True, **kwargs) -> HRNet:
    """HRNetV2-W48; ``pretrained`` is False, True (file in the torch hub cache) or a local file path."""
    return _hrnet("hrnetv2_48", 48, pretrained, progress, **kwargs)
