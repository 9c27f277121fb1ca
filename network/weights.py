"""Where pretrained weights come from, and how foreign checkpoint formats map onto our keys.

* ``BACKBONE_SOURCES``: for each backbone, the file name in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``), a download URL and/or a timm hub id, and the format of those files.
* ``FORMATS``: one data-driven renaming rule per foreign format (prefix renames, then prefix drops),
  in the spirit of timm's ``checkpoint_filter_fn``; :func:`detect_format` recognises a file's format.
* :func:`load_backbone_weights` (``--pretrained_backbone``) and :func:`init_model_from`
  (``--init_from``) use them. Every file is read with ``weights_only=True``
  (:func:`utils.checkpoint.torch_load`), or with safetensors.
* :func:`load_timm_weights`: a timm encoder's weights, timm's pretrained ones (found and converted by timm) or a
  timm state_dict file; every tensor of the encoder must come from them, unchanged.
"""
import contextlib
import contextvars
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from utils.io.atomic import missing_file
from utils.io.checkpoint import describe_load_error, file_problem, torch_load
from utils.io.optional_packages import import_optional, optional_module
from utils.constants import IMAGENET_MEAN, IMAGENET_STD

from .backbone.timm_encoder import TimmFeatures, first_line, import_timm

from .input_conv import take_stem_bands_of

__all__ = ["PretrainedWeightsError", "WeightSource", "KeyRules", "FORMATS", "BACKBONE_SOURCES", "COCO_SOURCES",
           "hub_checkpoint_path", "read_state_dict", "detect_format", "model_format", "convert_state_dict",
           "load_backbone_weights", "recording_origins", "fill_model", "module_names", "init_model_from",
           "fill_timm_features", "load_timm_weights"]

StateDict = Dict[str, torch.Tensor]


class PretrainedWeightsError(RuntimeError):
    """A pretrained file cannot be found, fetched, read, or does not fit the model."""


@dataclass(frozen=True)
class KeyRules:
    """How a foreign format's keys become ours: ``renames`` (old prefix -> new prefix, first match wins),
    then keys starting with any of ``drops`` (after renaming) are left out."""

    renames: Tuple[Tuple[str, str], ...] = ()
    drops: Tuple[str, ...] = ()


_IMAGENET_HEADS = ("fc.", "classifier.", "last_linear.")
_HRNET_RULES = KeyRules(renames=(("transition2.2.0.", "transition2."), ("transition3.3.0.", "transition3.")),
                        drops=("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."))

FORMATS: Dict[str, KeyRules] = {
    "ours": KeyRules(),  # this project's and the original's keys, backbone or whole model
    "torchvision": KeyRules(drops=_IMAGENET_HEADS),  # ImageNet ResNet / ResNeXt / Wide ResNet / MobileNetV2
    "timm_hrnet": _HRNET_RULES,  # timm hrnet_w32 / hrnet_w48
    "cls_hrnet": _HRNET_RULES,  # official HRNet-Image-Classification files: the same layout as timm's
    "timm_xception": KeyRules(drops=_IMAGENET_HEADS),  # timm legacy_xception
    "cadene_xception": KeyRules(drops=_IMAGENET_HEADS),  # the original's Cadene file (fc or last_linear)
    # torchvision deeplabv3_resnet50/101: the same model with the head one level up, plus an aux head.
    "torchvision_deeplabv3": KeyRules(renames=(("classifier.", "classifier.classifier."),),
                                      drops=("aux_classifier.",)),
    # ... into DeepLabV3+: its ASPP and final 1x1 classifier fit; the 3x3 conv in between does not.
    "torchvision_deeplabv3_to_plus": KeyRules(
        renames=(("classifier.0.", "classifier.aspp."), ("classifier.4.", "classifier.classifier.3.")),
        drops=("aux_classifier.", "classifier.1.", "classifier.2.")),
}


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's ImageNet weights live and what format they are in."""

    filename: str  # looked up (and downloaded to) in the torch hub cache
    fmt: str
    url: Optional[str] = None
    timm_model: Optional[str] = None  # "arch.tag" for timm.create_model(arch, pretrained=True, pretrained_cfg_overlay)
    aliases: Tuple[str, ...] = ()  # other names of the same weights in the hub cache (torchvision's later releases)


def _file_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _original(url: str, later: Optional[str]) -> WeightSource:
    """The file the original downloads (``url``); torchvision's later release of the same ImageNet weights under
    another name (``later``, its ``*_Weights.IMAGENET1K_V1`` file, None where it kept the name) counts too when it
    is in the cache."""
    return WeightSource(_file_name(url), "torchvision", url, aliases=(later,) if later else ())


_TORCHVISION_MODELS = "https://download.pytorch.org/models/"
BACKBONE_SOURCES: Dict[str, WeightSource] = {
    # The original's own URLs (its network/backbone/resnet.py and mobilenetv2.py), as it downloads them, and the
    # file names torchvision gave its IMAGENET1K_V1 weights later, where they differ (tests/network/test_weights.py
    # checks them).
    **{name: _original(_TORCHVISION_MODELS + file, later) for name, (file, later) in {
        "resnet18": ("resnet18-5c106cde.pth", "resnet18-f37072fd.pth"),
        "resnet34": ("resnet34-333f7ec4.pth", "resnet34-b627a593.pth"),
        "resnet50": ("resnet50-19c8e357.pth", "resnet50-0676ba61.pth"),
        "resnet101": ("resnet101-5d3b4d8f.pth", "resnet101-63fe2227.pth"),
        "resnet152": ("resnet152-b121ed2d.pth", "resnet152-394f9c45.pth"),
        "resnext50_32x4d": ("resnext50_32x4d-7cdf4587.pth", None),
        "resnext101_32x8d": ("resnext101_32x8d-8ba56ff5.pth", None),
        "wide_resnet50_2": ("wide_resnet50_2-95faca4d.pth", None),
        "wide_resnet101_2": ("wide_resnet101_2-32ee1156.pth", None),
        "mobilenet_v2": ("mobilenet_v2-b0353104.pth", None)}.items()},
    # The original's Cadene URL (its certificate has expired); timm's legacy_xception is the same file.
    "xception": WeightSource("xception-43020ad28.pth", "cadene_xception",
                             "http://data.lip6.fr/cadene/pretrainedmodels/xception-43020ad28.pth",
                             "legacy_xception.tf_in1k"),
    # ImageNet weights by the HRNet authors, on the Hugging Face hub through timm.
    "hrnetv2_32": WeightSource("hrnetv2_32_imagenet.pth", "timm_hrnet", None, "hrnet_w32.ms_in1k"),
    "hrnetv2_48": WeightSource("hrnetv2_48_imagenet.pth", "timm_hrnet", None, "hrnet_w48.ms_in1k"),
}

COCO_SOURCES: Dict[str, WeightSource] = {  # whole-model starts (--init_from torchvision_coco), 21 VOC classes
    name: WeightSource(file, "torchvision_deeplabv3", _TORCHVISION_MODELS + file) for name, file in {
        "resnet50": "deeplabv3_resnet50_coco-cd0a2569.pth",  # DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
        "resnet101": "deeplabv3_resnet101_coco-586e9e4e.pth"}.items()
}


def hub_checkpoint_path(filename: str) -> str:
    """Where torch.hub keeps (and looks for) a downloaded checkpoint file."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


SAFETENSORS_SUFFIX = ".safetensors"


def _read_safetensors(path: str) -> StateDict:
    missing = missing_file(path)
    if missing:
        raise PretrainedWeightsError(f"weights file {path} {missing}")
    safetensors = import_optional("safetensors.torch", f"reading {path}", PretrainedWeightsError)
    try:
        return safetensors.load_file(path)
    except Exception as exc:  # SafetensorError, OSError
        raise PretrainedWeightsError(f"cannot read weights file {path}: {first_line(exc)} (truncated, or not a "
                                     "safetensors file?)") from exc


def read_state_dict(path: str) -> StateDict:
    """A state_dict from ``path`` (weights only: a ``torch.save`` file, e.g. ``.pth`` or ``.bin``, or a
    ``.safetensors`` file), unwrapping common containers and ``module.`` prefixes."""
    if path.endswith(SAFETENSORS_SUFFIX):
        obj = _read_safetensors(path)
    else:
        problem = file_problem(path)
        if problem:
            raise PretrainedWeightsError(f"weights file {path} {problem}")
        try:
            obj = torch_load(path)
        except Exception as exc:  # torch raises many types for truncated or foreign files
            raise PretrainedWeightsError(f"cannot read weights file {path}: {describe_load_error(exc)}") from exc
    for container in ("model_state", "state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(container), Mapping):
            obj = obj[container]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"weights file {path} does not hold a state_dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """The FORMATS name that fits ``state``'s keys ('ours' when no foreign layout is recognised)."""
    keys = list(state)
    if any(k.startswith("aux_classifier.") for k in keys) or "classifier.0.convs.0.0.weight" in state:
        return "torchvision_deeplabv3"
    if any(k.startswith(("incre_modules.", "transition2.2.0.")) for k in keys):
        return "timm_hrnet"
    return "ours"


def model_format(state: Mapping[str, torch.Tensor], model_name: str, fmt: str = "auto") -> str:
    """The format to convert ``state`` with for entry ``model_name``: a DeepLabV3 file into a DeepLabV3+
    model takes the rules that fill only its ASPP and classifier."""
    fmt = detect_format(state) if fmt == "auto" else fmt
    if fmt == "torchvision_deeplabv3" and model_name.startswith("deeplabv3plus"):
        return "torchvision_deeplabv3_to_plus"
    return fmt


def convert_state_dict(state: Mapping[str, torch.Tensor], fmt: str = "auto") -> StateDict:
    """Apply the renaming rules of ``fmt`` (or of the detected format) to ``state``."""
    rules = FORMATS[detect_format(state) if fmt == "auto" else fmt]
    out = {}
    for key, value in state.items():
        for old, new in rules.renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if not key.startswith(rules.drops) if rules.drops else True:
            out[key] = value
    return out


HF_HOST = ("huggingface.co", 443)
HF_PROBE_TIMEOUT_S = 3.0
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _hub_reachable() -> bool:
    """A quick TCP probe, so an offline machine does not sit through the hub client's retries (~50 s)."""
    import socket

    try:
        socket.create_connection(HF_HOST, timeout=HF_PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _hub_offline() -> bool:
    """Whether the Hugging Face hub client is told to stay offline (HF_HUB_OFFLINE=1)."""
    hub = optional_module("huggingface_hub.constants")
    return hub is None or bool(hub.HF_HUB_OFFLINE)


def _from_timm(source: WeightSource) -> Optional[StateDict]:
    """Weights through timm: from its hub cache, else downloaded when the hub answers; None otherwise."""
    timm, hub = optional_module("timm"), optional_module("huggingface_hub")
    if timm is None or hub is None:
        return None
    arch, tag = source.timm_model.split(".", 1)
    for filename in TIMM_WEIGHT_FILES:
        try:
            cached = hub.hf_hub_download(f"timm/{source.timm_model}", filename, local_files_only=True)
        except Exception:  # not in the cache
            continue
        overlay = dict(tag=tag, state_dict=read_state_dict(cached))  # read weights-only, then timm converts it
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay).state_dict()
    if _hub_offline() or not _hub_reachable():
        return None
    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(tag=tag)).state_dict()
    except Exception:  # hub errors: fall through to the advice
        return None


_BACKBONE_WAYS_OUT = ("pass --no-pretrained_backbone to train the backbone from scratch (pretrained_backbone=False), or "
                      "--pretrained_backbone PATH for a file elsewhere (tools/convert_weights.py converts other formats)")
_COCO_WAYS_OUT = "drop --init_from, or give --init_from PATH for a file elsewhere"


def _advice(name: str, source: WeightSource, why: str, what: str, ways_out: str) -> str:
    """One line: which file is missing, where it was looked for, why it could not be fetched, the ways out."""
    folder = os.path.dirname(hub_checkpoint_path(source.filename))
    names = " or ".join((source.filename, *source.aliases))
    get = f" (download {source.url})" if source.url else ""
    if source.timm_model:
        get += f"{' or' if source.url else ''} (`pip install timm` online fetches it: hub id timm/{source.timm_model})"
    return f"{name}: no {what}: {names} is not in {folder} and {why}; put the file there{get}, or {ways_out}"


def _fetch(name: str, source: WeightSource, progress: bool, what: str = "ImageNet weights",
           ways_out: str = _BACKBONE_WAYS_OUT) -> Tuple[StateDict, str]:
    """(state_dict, where it came from): a file in the hub cache, then timm, then the URL. ``what`` and
    ``ways_out`` word the error when none of them has it."""
    for filename in (source.filename, *source.aliases):
        path = hub_checkpoint_path(filename)
        if os.path.isfile(path):
            return read_state_dict(path), path
    if source.timm_model:
        state = _from_timm(source)
        if state is not None:
            return state, f"timm/{source.timm_model}"
    if not source.url:
        reason = "timm cannot fetch it (not installed, or no internet)" if source.timm_model else "no URL is known"
        raise PretrainedWeightsError(_advice(name, source, reason, what, ways_out))
    path = hub_checkpoint_path(source.filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.url, path, progress=progress)
    except Exception as exc:  # URLError, SSL errors, HTTP errors, timeouts
        raise PretrainedWeightsError(_advice(name, source, f"the download failed ({exc})", what, ways_out)) from exc
    return read_state_dict(path), path


_LOADED_FROM: contextvars.ContextVar[Optional[List[str]]] = contextvars.ContextVar("loaded_from", default=None)


@contextlib.contextmanager
def recording_origins() -> Iterator[List[str]]:
    """Collect where each backbone loaded by :func:`load_backbone_weights` inside the block came from."""
    origins: List[str] = []
    token = _LOADED_FROM.set(origins)
    try:
        yield origins
    finally:
        _LOADED_FROM.reset(token)


def load_backbone_weights(model: nn.Module, name: str, pretrained: Union[bool, str], progress: bool = True) -> None:
    """Fill backbone ``model`` (called ``name``) from ``pretrained``: True for its known sources, or a file path
    in any supported format.

    Keys the backbone lacks are ignored, and so is a missing ImageNet classifier (segmentation never
    uses it); any other missing key or a shape that differs is an error naming the file.
    """
    if isinstance(pretrained, str):
        state, origin = read_state_dict(pretrained), pretrained
    else:
        state, origin = _fetch(name, BACKBONE_SOURCES[name], progress)
    state = convert_state_dict(state)
    take_stem_bands_of(model, state, origin)  # a file for N bands (Sentinel-2, say) loads as it is
    own = {k: v for k, v in model.state_dict().items() if k in state or not k.startswith(_IMAGENET_HEADS)}
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch at {wrong[:3]}"
        raise PretrainedWeightsError(f"weights {origin} do not fit backbone {name}: {detail} "
                                     f"({len(missing)} missing, {len(wrong)} mismatched keys)")
    model.load_state_dict({k: state[k] for k in own}, strict=False)
    _record_origin(origin)


def _record_origin(origin: str) -> None:
    recording = _LOADED_FROM.get()
    if recording is not None:
        recording.append(origin)


def fill_model(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Tuple[List[str], List[str]]:
    """Copy every tensor of ``state`` whose key and shape fit ``model``; return (filled, left initialised)."""
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fits, strict=False)
    return sorted(fits), [k for k in own if k not in fits]


def module_names(keys: Sequence[str]) -> List[str]:
    """The modules that state_dict ``keys`` belong to, in order, without repeats."""
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def init_model_from(model: nn.Module, model_name: str, source: str,
                    progress: bool = True) -> Tuple[List[str], List[str], str]:
    """``--init_from``: 'torchvision_coco' (torchvision's COCO DeepLabV3, ResNet-50/101) or a checkpoint path.

    Returns (filled keys, initialised keys, the file the weights were read from). A file with nothing that fits is
    an error.
    """
    backbone = model_name.split("_", 1)[1]
    if source == "torchvision_coco":
        if backbone not in COCO_SOURCES:
            raise PretrainedWeightsError(f"--init_from torchvision_coco exists for resnet50 and resnet101 models, "
                                         f"not {model_name}")
        state, origin = _fetch(f"--init_from torchvision_coco ({model_name})", COCO_SOURCES[backbone], progress,
                               "COCO weights", _COCO_WAYS_OUT)
    else:
        state, origin = read_state_dict(source), source
    fmt = model_format(state, model_name)
    filled, initialised = fill_model(model, convert_state_dict(state, fmt))
    if not filled:
        raise PretrainedWeightsError(f"--init_from {origin}: no tensor fits {model_name} (format {fmt})")
    return filled, initialised, origin


def _flat(key: str) -> str:
    """A key with every dot as an underscore: timm's ``features_only`` models name flattened stages ``stages_0``
    where the whole model has ``stages.0``."""
    return key.replace(".", "_")


def fill_timm_features(features: TimmFeatures, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Copy into ``features`` the tensors of ``state``, a state_dict of timm's whole model (or of its features):
    every tensor of the encoder must be there with its shape, and lands unchanged; the rest (the classifier) is
    left out. PretrainedWeightsError naming ``origin`` otherwise."""
    by_flat_key = {_flat(key): value for key, value in state.items()}
    own = features.body.state_dict()
    missing = [k for k in own if _flat(k) not in by_flat_key]
    wrong = [k for k in own if k not in missing and by_flat_key[_flat(k)].shape != own[k].shape]
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch at {wrong[:3]}"
        raise PretrainedWeightsError(f"weights {origin} do not fit timm's {features.name}: {detail} ({len(missing)} "
                                     f"missing, {len(wrong)} mismatched of {len(own)} tensors); a timm state_dict "
                                     f"of {features.name} is needed")
    features.body.load_state_dict({k: by_flat_key[_flat(k)] for k in own})


def _timm_cached_file(cfg: Any) -> Optional[str]:
    """The file of timm's pretrained config ``cfg`` in the Hugging Face cache or the torch hub cache, if there."""
    from huggingface_hub import try_to_load_from_cache  # timm's own dependency

    if cfg.hf_hub_id:
        for filename in (cfg.hf_hub_filename,) if cfg.hf_hub_filename else TIMM_WEIGHT_FILES:
            cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(cached, str):  # else None, or a marker that the hub has no such file
                return cached
    if cfg.url and os.path.isfile(hub_checkpoint_path(_file_name(cfg.url))):
        return hub_checkpoint_path(_file_name(cfg.url))
    return None


def _timm_advice(name: str, cfg: Any, why: str) -> str:
    """One line: which file is missing, where timm looks for it, why it was not fetched, and the ways out."""
    places, fetch = [], []
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        filename = cfg.hf_hub_filename or TIMM_WEIGHT_FILES[0]
        places.append(f"{filename} of {cfg.hf_hub_id} is not in the Hugging Face cache {constants.HF_HUB_CACHE}")
        fetch.append(f"`hf download {cfg.hf_hub_id} {filename}` puts it there")
    if cfg.url:
        folder = os.path.dirname(hub_checkpoint_path(_file_name(cfg.url)))
        places.append(f"{_file_name(cfg.url)} is not in {folder}")
        fetch.append(f"or download {cfg.url} into {folder}")
    return (f"tu-{name}: no pretrained weights: {' and '.join(places)}, and {why}; {' '.join(fetch)}, or pass "
            "--pretrained_backbone PATH (a timm state_dict: .pth, .bin or .safetensors), or --no-pretrained_backbone "
            "to train from scratch")


def _timm_pretrained(name: str) -> Tuple[StateDict, str, Any]:
    """timm's pretrained weights for ``name`` as a whole-model state_dict in timm's keys, found and converted by
    timm (from its caches, else downloaded when the hub answers); (state, where from, timm's pretrained config)."""
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tagged = timm.list_pretrained(f"{name.partition('.')[0]}.*")
        raise PretrainedWeightsError(f"timm has no pretrained weights for {name}"
                                     + (f" (it has {', '.join(tagged[:3])})" if tagged else "")
                                     + "; pass --no-pretrained_backbone or --pretrained_backbone PATH")
    cached = _timm_cached_file(cfg)
    if cached:
        overlay = dict(state_dict=read_state_dict(cached))  # read weights-only; timm converts and loads it
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay).state_dict(), cached, cfg
    if cfg.hf_hub_id and (_hub_offline() or not _hub_reachable()):
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the hub cannot be reached (offline?)"
        raise PretrainedWeightsError(_timm_advice(name, cfg, why))
    try:
        state = timm.create_model(name, pretrained=True).state_dict()  # timm downloads into its cache
    except Exception as exc:  # hub and download errors of many types
        raise PretrainedWeightsError(_timm_advice(name, cfg, f"the download failed ({first_line(exc)})")) from exc
    return state, cfg.hf_hub_id or cfg.url, cfg


def load_timm_weights(features: TimmFeatures, pretrained: Union[bool, str]) -> None:
    """Fill a timm encoder: ``True`` with timm's pretrained weights, a path with a timm state_dict file (``.pth``,
    ``.bin``, ``.safetensors``). The origin is recorded (:func:`recording_origins`); weights trained on inputs
    normalised otherwise than with the ImageNet mean and std, which this project uses, say so in it."""
    if isinstance(pretrained, str):
        fill_timm_features(features, read_state_dict(pretrained), pretrained)
        _record_origin(pretrained)
        return
    state, origin, cfg = _timm_pretrained(features.name)
    fill_timm_features(features, state, origin)
    mean, std = tuple(cfg.mean or IMAGENET_MEAN), tuple(cfg.std or IMAGENET_STD)
    if not torch.allclose(torch.tensor(mean + std), torch.tensor(IMAGENET_MEAN + IMAGENET_STD), atol=1e-3):
        origin += f" (note: trained on inputs normalised with mean {mean}, std {std}; this project uses ImageNet's)"
    _record_origin(origin)
