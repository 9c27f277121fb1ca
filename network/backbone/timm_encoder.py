"""Any timm model that gives multi-scale features (``features_only=True``), as a DeepLab backbone.

timm builds the encoder and, where the family can, dilates its last stages for output stride 8 or 16. A model
with a fixed input size (Swin, ViT) is built with ``dynamic_img_size=True`` (and ViT with ``dynamic_img_pad``)
so that it takes any size; such options are what :attr:`TimmFeatures.options` holds and a checkpoint records.
timm is optional: it is imported only for these encoders (:func:`import_timm`).
"""
import difflib
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from utils.io.optional_packages import import_optional

__all__ = ["LOW_LEVEL_STRIDE", "TimmEncoderError", "import_timm", "check_timm_name", "first_line",
           "TimmFeatures", "create_features", "natural_strides"]

LOW_LEVEL_STRIDE = 4  # the DeepLabV3+ decoder's low-level input
OUTPUT_STRIDES = (8, 16, 32)
# Asked of every model (any input size, padded to the patch size where needed); one that does not take a keyword
# (a TypeError naming it) is built without it.
PROBED_OPTIONS = {"dynamic_img_size": True, "dynamic_img_pad": True}
SUGGESTIONS = 5


class TimmEncoderError(ValueError):
    """A timm name, output stride or family that cannot be a DeepLab encoder; the message says what can."""


def import_timm() -> ModuleType:
    """The ``timm`` package; a TimmEncoderError with the pip command when it is not installed."""
    return import_optional("timm", "the tu- encoders", TimmEncoderError)


def _close_names(timm: ModuleType, name: str) -> List[str]:
    """timm names like ``name``: the nearest spellings, else the names sharing its first word."""
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=SUGGESTIONS, cutoff=0.6)
    return close or timm.list_models(f"*{name.split('_')[0][:6]}*")[:SUGGESTIONS]


def check_timm_name(name: str) -> None:
    """TimmEncoderError unless timm knows ``name`` (an architecture, optionally with a pretrained tag)."""
    timm = import_timm()
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        close = _close_names(timm, arch)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise TimmEncoderError(f"timm has no model {arch!r}{hint} (see timm.list_models('*{arch[:4]}*'))")
    if tag and f"{arch}.{tag}" not in timm.list_pretrained(f"{arch}.*"):
        tags = [known.partition(".")[2] for known in timm.list_pretrained(f"{arch}.*")]
        raise TimmEncoderError(f"timm has no weights {tag!r} for {arch}; its tags: {', '.join(tags) or 'none'}")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (timm's and the hub client's run over many), else its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TimmFeatures(nn.Module):
    """A timm ``features_only`` model whose deepest feature is ``out`` and, when asked, its stride-4 feature
    ``low_level`` (NCHW: channels-last outputs, as Swin gives, are viewed as NCHW without a copy).

    The timm model is ``body``: its keys are timm's, as ``features_only`` names them.
    """

    def __init__(self, body: nn.Module, name: str, options: Dict[str, object], low_level: bool):
        super().__init__()
        self.body = body
        self.name, self.options = name, dict(options)
        reductions = list(body.feature_info.reduction())
        self.out_index = len(reductions) - 1
        self.low_index: Optional[int] = None
        if low_level:
            if LOW_LEVEL_STRIDE not in reductions:
                raise TimmEncoderError(f"timm's {name} gives features at strides {reductions}, none at "
                                       f"{LOW_LEVEL_STRIDE}, which the DeepLabV3+ decoder needs; use "
                                       f"deeplabv3_tu-{name}")
            self.low_index = reductions.index(LOW_LEVEL_STRIDE)
        self.channels_last_output = str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC")
        for module in body.modules():  # Swin's patch embedding: sides that are no multiple of its patch are
            if hasattr(module, "patch_size") and hasattr(module, "dynamic_img_pad"):  # padded, as convolutions pad
                module.dynamic_img_pad = True

    @property
    def out_channels(self) -> int:
        return self.body.feature_info.channels()[self.out_index]

    @property
    def low_level_channels(self) -> int:
        return 0 if self.low_index is None else self.body.feature_info.channels()[self.low_index]

    def _nchw(self, feature: torch.Tensor) -> torch.Tensor:
        return feature.permute(0, 3, 1, 2) if self.channels_last_output else feature

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        try:
            features = self.body(x)
        except AssertionError as exc:  # timm's input-size checks (window multiples of MaxViT, fixed-size models)
            raise TimmEncoderError(f"timm's {self.name} cannot take a {x.shape[-1]}x{x.shape[-2]} input: "
                                   f"{first_line(exc)}") from exc
        out = {"out": self._nchw(features[self.out_index])}
        if self.low_index is not None:
            out["low_level"] = self._nchw(features[self.low_index])
        return out


def _build(timm: ModuleType, name: str, wanted: Dict[str, object],
           optional: Sequence[str]) -> Tuple[nn.Module, Dict[str, object]]:
    """``timm.create_model(name, features_only=True, **wanted)`` with random weights, dropping an ``optional``
    keyword the model does not take; returns (model, the keywords it was built with)."""
    kwargs = dict(wanted)
    while True:
        try:
            return timm.create_model(name, features_only=True, pretrained=False, **kwargs), kwargs
        except TypeError as exc:
            unknown = [key for key in kwargs if key in optional and f"'{key}'" in str(exc)]
            if not unknown:
                raise TimmEncoderError(f"timm cannot build {name} with features_only=True: {first_line(exc)}") from exc
            del kwargs[unknown[0]]
        except (AssertionError, ValueError, RuntimeError, NotImplementedError) as exc:
            if "output_stride" not in kwargs:  # the stride check after building words a refused stride
                raise TimmEncoderError(f"timm's {name} cannot give multi-scale features (features_only=True): "
                                       f"{first_line(exc)}") from exc
            del kwargs["output_stride"]


def _asked(options: Optional[Dict[str, object]], output_stride: int) -> Tuple[Dict[str, object], Tuple[str, ...]]:
    """(the keywords to ask timm for, those that may be dropped): ``options`` as recorded, else the probed ones."""
    probed = options is None
    return ({**(PROBED_OPTIONS if probed else options), "output_stride": output_stride},
            ("output_stride", *(PROBED_OPTIONS if probed else ())))


def _deepest_stride(timm: ModuleType, name: str, output_stride: int, options: Optional[Dict[str, object]]) -> int:
    """The deepest feature's stride when timm builds ``name`` asked for ``output_stride`` (0: it cannot build it)."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            body, _ = _build(timm, name, *_asked(options, output_stride))
    except TimmEncoderError:
        return 0
    return body.feature_info.reduction()[-1]


def natural_strides(name: str, options: Optional[Dict[str, object]] = None) -> List[int]:
    """The output strides timm builds ``name`` at (8, 16 and 32 tried on the meta device), with ``options`` (None:
    :data:`PROBED_OPTIONS` where the model takes them)."""
    timm = import_timm()
    return [stride for stride in OUTPUT_STRIDES if _deepest_stride(timm, name, stride, options) == stride]


def create_features(name: str, output_stride: int, low_level: bool,
                    options: Optional[Dict[str, object]] = None) -> TimmFeatures:
    """timm's ``name`` as a :class:`TimmFeatures` at ``output_stride``, with random weights (``low_level``: with the
    stride-4 feature too). ``options`` None tries :data:`PROBED_OPTIONS`; a checkpoint's recorded options are used
    as they are. TimmEncoderError for an unknown name, a stride the family cannot give (naming those it can), or
    a model without the features the head needs."""
    timm = import_timm()
    check_timm_name(name)
    body, built = _build(timm, name, *_asked(options, output_stride))
    built.pop("output_stride", None)
    deepest = body.feature_info.reduction()[-1]
    if deepest != output_stride:
        strides = natural_strides(name, built) or [deepest]
        raise TimmEncoderError(f"timm's {name} cannot work at output stride {output_stride}: it builds at "
                               f"{' or '.join(map(str, strides))}; pass --output_stride {strides[-1]}")
    return TimmFeatures(body, name, built, low_level)
