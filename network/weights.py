"""Where pretrained backbone weights come from, and how a local file is loaded into a backbone.

One table (``BACKBONE_SOURCES``) knows every backbone's source. Files are looked up in the torch hub
cache (``$TORCH_HOME/hub/checkpoints``, as ``torch.hub`` stores them), downloaded there when a URL is
known and the network allows, and always loaded with ``weights_only=True``.
"""
import os
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn

__all__ = ["PretrainedWeightsError", "WeightSource", "BACKBONE_SOURCES", "hub_checkpoint_path",
           "read_state_dict", "load_backbone_weights"]


_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


class PretrainedWeightsError(RuntimeError):
    """A pretrained file cannot be found, fetched, read, or does not fit the backbone."""


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's ImageNet weights live: a download URL and/or the file name in the hub cache."""

    filename: str
    url: Optional[str] = None
    note: str = ""


def _torchvision_url(weights_enum: str) -> str:
    """Read an ImageNet weight URL from the installed torchvision (keeps hashes out of this file)."""
    from torchvision import models

    enum_name, member = weights_enum.split(".")
    return getattr(getattr(models, enum_name), member).url


def _tv(weights_enum: str) -> WeightSource:
    url = _torchvision_url(weights_enum)
    return WeightSource(filename=url.rsplit("/", 1)[-1], url=url)


_TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
    "resnet152": "ResNet152_Weights.IMAGENET1K_V1",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights.IMAGENET1K_V1",
    "resnext101_32x8d": "ResNeXt101_32X8D_Weights.IMAGENET1K_V1",
    "wide_resnet50_2": "Wide_ResNet50_2_Weights.IMAGENET1K_V1",
    "wide_resnet101_2": "Wide_ResNet101_2_Weights.IMAGENET1K_V1",
    "mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V1",
}

_HRNET_NOTE = ("no download is known for HRNetV2 ImageNet weights; put a state_dict with this backbone's "
               "keys (e.g. converted from timm's hrnet_w{width} or the official cls_hrnet file)")

_OTHER_SOURCES: Dict[str, WeightSource] = {
    # The original's Cadene URL; its certificate has expired, so a manual download is often needed.
    "xception": WeightSource("xception-43020ad28.pth",
                             "http://data.lip6.fr/cadene/pretrainedmodels/xception-43020ad28.pth"),
    "hrnetv2_32": WeightSource("hrnetv2_32_imagenet.pth", None, _HRNET_NOTE.format(width=32)),
    "hrnetv2_48": WeightSource("hrnetv2_48_imagenet.pth", None, _HRNET_NOTE.format(width=48)),
}


def _backbone_sources() -> Dict[str, WeightSource]:
    sources = {name: _tv(enum) for name, enum in _TORCHVISION_WEIGHTS.items()}
    sources.update(_OTHER_SOURCES)
    return sources


BACKBONE_SOURCES: Dict[str, WeightSource] = _backbone_sources()


def hub_checkpoint_path(filename: str) -> str:
    """Where torch.hub keeps (and looks for) a downloaded checkpoint file."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Load a state_dict from ``path`` (weights only), unwrapping common containers and ``module.`` prefixes."""
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise PretrainedWeightsError(f"cannot read weights file {path}: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else ''} "
                                     "(is it a complete PyTorch checkpoint?)") from exc
    for container in ("model_state", "state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(container), Mapping):
            obj = obj[container]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"weights file {path} does not hold a state_dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _fetch(name: str, progress: bool) -> str:
    source = BACKBONE_SOURCES[name]
    path = hub_checkpoint_path(source.filename)
    if os.path.isfile(path):
        return path
    advice = (f"put the file at {path} (or pass a local file as pretrained_backbone / --pretrained_backbone PATH), "
              "or train from scratch with pretrained_backbone=False (--no-pretrained_backbone)")
    if source.url is None:
        raise PretrainedWeightsError(f"{name}: {source.note} at {path}; or train from scratch with "
                                     "pretrained_backbone=False (--no-pretrained_backbone)")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.url, path, progress=progress)
    except Exception as exc:  # URLError, SSL errors, HTTP errors, timeouts
        raise PretrainedWeightsError(f"{name}: cannot download {source.url} ({exc}); {advice}") from exc
    return path


def load_backbone_weights(model: nn.Module, name: str, pretrained: Union[bool, str], progress: bool = True) -> None:
    """Fill ``model`` (a backbone called ``name``) from ``pretrained``: True for the known source, or a path.

    Keys the backbone lacks are ignored, and so is a missing ImageNet classifier (``fc.*``,
    ``classifier.*``: segmentation never uses it); any other key the backbone needs but the file
    lacks, or a shape that differs, is an error naming the file.
    """
    path = pretrained if isinstance(pretrained, str) else _fetch(name, progress)
    state = read_state_dict(path)
    own = {k: v for k, v in model.state_dict().items() if k in state or not k.startswith(_CLASSIFIER_PREFIXES)}
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch at {wrong[:3]}"
        raise PretrainedWeightsError(f"weights file {path} does not fit backbone {name}: {detail} "
                                     f"({len(missing)} missing, {len(wrong)} mismatched keys)")
    model.load_state_dict({k: state[k] for k in own}, strict=False)
