"""Backbones: ResNet family, MobileNetV2, Xception and HRNetV2."""
from . import hrnetv2, mobilenetv2, resnet, xception

__all__ = ["hrnetv2", "mobilenetv2", "resnet", "xception"]
