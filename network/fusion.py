"""Inference-only rewrites of a trained model: BatchNorm folded into the convolution before it, and on the CPU
convolutions fused with the activation after them (one oneDNN call each)."""
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "fuse_conv_activations", "FusedConvActivation"]


def _left_after_folding(bn: nn.Module) -> Optional[nn.Module]:
    """What replaces BatchNorm ``bn`` once folded into the convolution before it: an Identity for a plain
    BatchNorm2d; the dropout and activation of timm's BatchNorm + activation layers (a BatchNorm2d subclass with
    ``drop`` and ``act``); None for any other module, which is not folded."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if isinstance(bn, nn.BatchNorm2d) and isinstance(drop, nn.Module) and isinstance(act, nn.Module):
        return nn.Sequential(drop, act)
    return None


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a Conv2d into it, in place (inference only).

    Patterns folded: consecutive children of an ``nn.Sequential``, and sibling attributes
    ``convK``/``bnK`` (ResNet, HRNet, Xception stems, timm's ConvNormAct) or ``X``/``Xbn`` (Xception's skip).
    The folded BatchNorm becomes an Identity (or, for timm's BatchNorm + activation, its activation).
    """
    if model.training:
        raise ValueError("fold_batchnorm is for inference: call model.eval() first")
    for module in list(model.modules()):
        children = list(module.named_children())
        pairs = []
        if isinstance(module, nn.Sequential):
            pairs = [(a, b) for (a, ma), (b, mb) in zip(children, children[1:])
                     if isinstance(ma, nn.Conv2d) and _left_after_folding(mb) is not None]
        names = dict(children)
        for name, child in children:
            partner = "bn" + name[4:] if name.startswith("conv") else name + "bn"
            if isinstance(child, nn.Conv2d) and _left_after_folding(names.get(partner)) is not None:
                pairs.append((name, partner))
        for conv_name, bn_name in pairs:
            bn = getattr(module, bn_name)
            setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name), bn))
            setattr(module, bn_name, _left_after_folding(bn))
    return model


# Activations oneDNN applies inside the convolution (its "post-ops"), with their arguments.
_POST_OPS = {nn.ReLU: ("relu", []), nn.ReLU6: ("hardtanh", [0.0, 6.0])}


class FusedConvActivation(nn.Module):
    """A Conv2d and the activation after it as one oneDNN call on the CPU (inference only).

    The activation is applied to the convolution's output as it is written, instead of by a second pass over
    memory: in bf16 on AMX ``predict.py`` ran 1.36x faster with mobilenet (element-wise bf16 kernels are slow
    there). The numbers are the same, except that for a single fp32 image oneDNN may choose another kernel
    (about 1e-6 apart). Under CPU autocast the input and weights are cast as autocast would.
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module):
        super().__init__()
        self.conv = conv
        self.attr, self.scalars = _POST_OPS[type(activation)]
        self._weights = {}  # dtype -> (weight, bias) cast once: the model is frozen for inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        weight, bias = conv.weight, conv.bias
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            if dtype not in self._weights:
                self._weights[dtype] = (weight.to(dtype), None if bias is None else bias.to(dtype))
            x = x.to(dtype)
            weight, bias = self._weights[dtype]
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, conv.padding, conv.stride, conv.dilation,
                                                       conv.groups, self.attr, self.scalars, "")


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and not conv.weight.requires_grad)


def fuse_conv_activations(model: nn.Module) -> int:
    """Fuse every Conv2d followed (after Identities, e.g. folded BatchNorms) by ReLU or ReLU6 in an
    ``nn.Sequential`` into a :class:`FusedConvActivation`, in place; returns how many were fused.

    For CPU inference after :func:`fold_batchnorm`, with parameters frozen (``requires_grad_(False)``).
    """
    if not torch.backends.mkldnn.is_available():
        return 0
    fused = 0
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for i, (name, conv) in enumerate(children):
            if not _fusable(conv):
                continue
            j = i + 1
            while j < len(children) and isinstance(children[j][1], nn.Identity):
                j += 1
            if j < len(children) and type(children[j][1]) in _POST_OPS:
                act_name, activation = children[j]
                setattr(module, name, FusedConvActivation(conv, activation))
                setattr(module, act_name, nn.Identity())
                fused += 1
    return fused
