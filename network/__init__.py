"""DeepLabV3 / DeepLabV3+ models: backbones, heads, the 12 named entries and the timm (``tu-``) entries."""
from ._deeplab import convert_to_separable_conv
from .modeling import MODELS, build_model, check_model, convert_sync_batchnorm, encoder_record
from .modeling import *  # noqa: F401,F403  (the 12 entries, as ``network.deeplabv3plus_mobilenet``)
from .weights import PretrainedWeightsError

__all__ = ["MODELS", "build_model", "check_model", "convert_sync_batchnorm", "encoder_record",
           "convert_to_separable_conv", "PretrainedWeightsError", *MODELS]
