"""Static INT8 quantisation of an exported model with ONNX Runtime's tools, for CPU deployment.

Weights are quantised per output channel (int8, symmetric), activations per tensor (uint8) with ranges measured on
calibration images; the file is in QDQ form (QuantizeLinear/DequantizeLinear pairs around float operators), which
ONNX Runtime fuses into integer kernels (QLinearConv, ...) when it loads it.

Why uint8 activations: with int8 ones, ONNX Runtime 1.32's CPU provider fused only 34 of deeplabv3plus_mobilenet's
60 convolutions into QLinearConv; the other 26 ran as float convolutions between Dequantize and Quantize, and the
file was no faster than fp32. With uint8 activations all 60 fuse (2.2x fp32's speed, see the README).
"""
import dataclasses
import os
import tempfile
from typing import Dict, Iterator, Optional, Sequence

import numpy as np

from utils.inference.onnx_model import INPUT_NAME, OnnxMetadata, import_optional

__all__ = ["quantize_int8"]

# ONNX Runtime's MinMax calibration keeps the minimum and maximum of every tensor of every image it has run until it
# reduces them to ranges: reduce after every few images, so that this list stays short however many images there are.
# (Its CalibMaxIntermediateOutputs option drops them without reducing; CalibStridedMinMax merges.) The images
# themselves are read one at a time (_Images).
CALIBRATION_GROUP = 4


def _group_size(count: int) -> int:
    """The largest group of at most CALIBRATION_GROUP images that divides ``count`` (ONNX Runtime requires it)."""
    return next(size for size in range(min(CALIBRATION_GROUP, count), 0, -1) if count % size == 0)


class _Images:
    """ONNX Runtime's CalibrationDataReader protocol over normalised (1, 3, H, W) float32 arrays, read a range at a
    time (``set_range``) for CalibStridedMinMax. Each image is taken from ``images`` when ONNX Runtime asks for it
    and not kept, so a sequence that decodes on indexing holds one image at a time."""

    def __init__(self, images: Sequence[np.ndarray]):
        self._images = images
        self.set_range(0, len(images))

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next: Iterator[np.ndarray] = (self._images[index] for index in range(start_index, end_index))

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        image = next(self._next, None)
        return None if image is None else {INPUT_NAME: image}


def quantize_int8(fp32_model: bytes, calibration: Sequence[np.ndarray], metadata: OnnxMetadata) -> bytes:
    """The fp32 ``fp32_model`` (bytes of an exported file) quantised to INT8, QDQ format, per-channel weights, with
    activation ranges from ``calibration`` (normalised images, as predict.py feeds them, indexed one at a time); its
    metadata is ``metadata`` with precision int8."""
    onnx = import_optional("onnx")
    quantization = import_optional("onnxruntime.quantization")
    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, output = (os.path.join(tmp, name) for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        with open(source, "wb") as f:
            f.write(fp32_model)
        # shape inference and graph optimisation first, as ONNX Runtime advises: the quantiser then sees the
        # tensors' types and the convolutions' folded form
        quantization.quant_pre_process(source, prepared, auto_merge=True)
        quantization.quantize_static(prepared, output, _Images(calibration), quant_format=quantization.QuantFormat.QDQ,
                                     per_channel=True, activation_type=quantization.QuantType.QUInt8,
                                     weight_type=quantization.QuantType.QInt8,
                                     calibrate_method=quantization.CalibrationMethod.MinMax,
                                     extra_options={"CalibStridedMinMax": _group_size(len(calibration))})
        model = onnx.load(output)
    del model.metadata_props[:]
    for key, value in dataclasses.replace(metadata, precision="int8").to_props().items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()

