"""Model plumbing shared by every DeepLab variant: the backbone+head wrapper and the layer getter."""
from collections import OrderedDict
from typing import Dict, List, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["_SimpleSegmentationModel", "IntermediateLayerGetter", "merge_branches"]


class _SimpleSegmentationModel(nn.Module):
    """``classifier(backbone(x))`` upsampled (bilinear) to exactly the input's height and width."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_shape = x.shape[-2:]
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=input_shape, mode="bilinear", align_corners=False)


def merge_branches(branches: List[torch.Tensor]) -> torch.Tensor:
    """HRNetV2 representation: every branch upsampled (bilinear) to the first one's size, concatenated."""
    size = branches[0].shape[-2:]
    upsampled = [branches[0]] + [F.interpolate(b, size=size, mode="bilinear", align_corners=False)
                                 for b in branches[1:]]
    return torch.cat(upsampled, dim=1)


class IntermediateLayerGetter(nn.ModuleDict):
    """Run a model's direct children in registration order and return some of their outputs by name.

    Children after the last requested one are dropped (they are not part of the state_dict).
    A child that returns a list of branches (HRNet's stages) is passed on as a list; when such a
    child is requested, its branches are merged into one tensor with :func:`merge_branches`.

    Args:
        model: the network to read from; its children must be registered in execution order.
        return_layers: ``{child name: output name}``, e.g. ``{"layer4": "out", "layer1": "low_level"}``.
    """

    def __init__(self, model: nn.Module, return_layers: Dict[str, str]):
        names = [name for name, _ in model.named_children()]
        missing = set(return_layers) - set(names)
        if missing:
            raise ValueError(f"return_layers {sorted(missing)} are not children of {type(model).__name__}")
        layers = OrderedDict()
        remaining = set(return_layers)
        for name, module in model.named_children():
            if not remaining:
                break
            layers[name] = module
            remaining.discard(name)
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = OrderedDict()
        features: Union[torch.Tensor, List[torch.Tensor]] = x
        for name, module in self.items():
            features = module(features)
            if name in self.return_layers:
                merged = merge_branches(features) if isinstance(features, list) else features
                out[self.return_layers[name]] = merged
        return out
