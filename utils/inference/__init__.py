"""Prediction: the predictor and its recipe (scales, flip, windows), the output writers (PNGs, videos, GeoTIFF scenes),
ONNX Runtime and INT8. May import: the utils root modules, utils.io, utils.runtime and utils.reporting."""
