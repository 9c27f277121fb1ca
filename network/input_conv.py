"""Any number of input bands for any model: its stem convolution (the first that takes RGB) adapted, rebuilt or
loaded as it is.

* With pretrained weights the stem is adapted, not reset: the bands shown as R, G and B keep the RGB filters, every
  other band gets their mean, and all are scaled by 3 / bands, so that an input equal in every band gives the
  response the RGB stem gave (for one band: the sum of the RGB filters). This is the arithmetic of timm's
  ``adapt_input_conv``, except that timm repeats R, G, B over the extra bands where the mean is used here.
* Without them the stem gets fresh weights for the bands (He normal, fan-out, as ResNet and MobileNetV2 start).
* A pretrained file whose stem already takes N bands (a Sentinel-2 ResNet-50) is loaded as it is
  (:func:`take_stem_bands_of`).

The convolution is changed in place (its weight and ``in_channels``), so a subclass (timm's ``Conv2dSame``,
``StdConv2d``) keeps its behaviour.
"""
from typing import Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["RGB_CHANNELS", "find_stem_conv", "adapted_weight", "set_input_bands", "take_stem_bands_of"]

RGB_CHANNELS = 3
LOADED_MARK = "bands_from_weights"  # set on a stem whose pretrained file had another band count


def find_stem_conv(model: nn.Module) -> Tuple[str, nn.Conv2d]:
    """(name, module) of the convolution that takes the image: the first Conv2d with 3 input channels (or whose
    bands came from its pretrained file). ValueError when there is none."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and (module.in_channels == RGB_CHANNELS or hasattr(module, LOADED_MARK)):
            return name, module
    raise ValueError(f"{type(model).__name__} has no convolution that takes 3 channels: its input cannot be adapted "
                     "to other bands")


def adapted_weight(rgb_weight: torch.Tensor, bands: int,
                   rgb_positions: Optional[Sequence[int]] = None) -> torch.Tensor:
    """An (out, ``bands``, kh, kw) weight from an (out, 3, kh, kw) RGB one: the R, G, B filters at
    ``rgb_positions`` (0-based, among the bands), their mean at the other bands, all times 3 / ``bands``."""
    weight = rgb_weight.float()
    out = weight.mean(dim=1, keepdim=True).repeat(1, bands, 1, 1)
    for channel, position in enumerate(rgb_positions or ()):
        out[:, position] = weight[:, channel]
    return (out * (RGB_CHANNELS / bands)).to(rgb_weight.dtype)


def _set_weight(conv: nn.Conv2d, weight: torch.Tensor) -> None:
    if conv.groups != 1:
        raise ValueError(f"the stem convolution is grouped ({conv.groups} groups): its input cannot be adapted")
    conv.weight = nn.Parameter(weight.to(conv.weight.device), requires_grad=conv.weight.requires_grad)
    conv.in_channels = weight.shape[1]


def set_input_bands(model: nn.Module, bands: int, rgb_positions: Optional[Sequence[int]] = None,
                    pretrained: bool = True) -> str:
    """Make ``model`` take ``bands`` input channels (see the module docstring); returns what was done, for the log
    ("" when nothing changed: 3 bands shown as R, G, B in order). ``rgb_positions`` (0-based, three of them) say
    which bands take the R, G and B filters; ``pretrained`` whether the stem holds pretrained weights to adapt."""
    name, conv = find_stem_conv(model)
    shape = "x".join(str(size) for size in conv.weight.shape)
    if hasattr(conv, LOADED_MARK):
        if conv.in_channels != bands:
            raise ValueError(f"the pretrained weights {getattr(conv, LOADED_MARK)} take {conv.in_channels} bands but "
                             f"the data has {bands} (--bands); give weights for {bands} bands, or select those bands")
        return f"first convolution {name} ({shape}) loaded as it is from {getattr(conv, LOADED_MARK)}: {bands} bands"
    positions = tuple(rgb_positions) if rgb_positions else None
    if bands == RGB_CHANNELS and positions in (None, (0, 1, 2)):
        return ""
    if not pretrained:
        weight = torch.empty(conv.out_channels, bands, *conv.kernel_size, dtype=conv.weight.dtype)
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
        _set_weight(conv, weight)
        return f"first convolution {name} ({shape}) initialised afresh for {bands} bands (He normal, fan-out)"
    with torch.no_grad():
        _set_weight(conv, adapted_weight(conv.weight.detach(), bands, positions))
    rgb = (f"bands at positions {', '.join(str(p + 1) for p in positions)} take the R, G, B filters"
           if positions else "no band takes the R, G, B filters")
    others = bands - (len(positions) if positions else 0)
    mean = f", {others} other band(s) their mean" if others else ""
    return (f"first convolution {name} ({shape}) adapted to {bands} bands: {rgb}{mean}; all scaled by "
            f"3/{bands}")


def take_stem_bands_of(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> Optional[int]:
    """When ``state`` (a pretrained backbone file, in ``model``'s key names) holds a stem for another band count
    than 3 (filters and kernel otherwise fitting), give ``model``'s stem that many bands so that the file loads as
    it is, and return the count; None when the file's stem is an RGB one (or absent)."""
    name, conv = find_stem_conv(model)
    weight = state.get(f"{name}.weight")
    if weight is None or weight.dim() != 4 or weight.shape[1] == conv.in_channels:
        return None
    if (weight.shape[0], tuple(weight.shape[2:])) != (conv.out_channels, tuple(conv.kernel_size)):
        return None
    _set_weight(conv, torch.zeros_like(weight, dtype=conv.weight.dtype))
    setattr(conv, LOADED_MARK, origin)
    return int(weight.shape[1])
