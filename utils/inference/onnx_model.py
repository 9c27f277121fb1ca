"""ONNX files of this project: the metadata they carry, and an ONNX Runtime session used as a PyTorch-style model.

onnx, onnxscript and onnxruntime are optional: they are imported only on the ONNX paths (:func:`import_optional`).
The graph's input is what PyTorch's model takes (:data:`INPUT_LAYOUT`), so ``predict.py`` runs both the same way.
"""
import dataclasses
import json
from types import ModuleType
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from utils.io.atomic import missing_file
from utils.io.bands import BANDS_KEY, BandSpec
from utils.io.optional_packages import import_optional as import_package, pip_install
from utils.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ONNX_PACKAGES", "ONNX_PIP", "INPUT_NAME", "OUTPUT_NAME", "INPUT_LAYOUT", "OUTPUT_LAYOUT", "OnnxModelError",
           "import_optional", "first_line", "OnnxMetadata", "check_segmentation_graph", "OnnxSegmenter"]

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # installed together
ONNX_PIP = pip_install(*ONNX_PACKAGES)
INPUT_NAME, OUTPUT_NAME = "image", "logits"
INPUT_LAYOUT = ("float32 NCHW, RGB, normalised: (pixel / 255 - mean) / std per channel; "
                "batch, height and width of any size")
BANDS_INPUT_LAYOUT = (f"float32 NCHW, the bands of {BANDS_KEY} in that order, normalised: (value - mean) / std per "
                      "band, in the files' units; batch, height and width of any size")
OUTPUT_LAYOUT = "float32 NCHW class scores (logits) at the input's height and width; argmax over C is the label"
EXPORTER = "tools/export_onnx.py"
FLOAT_TENSOR = "tensor(float)"  # how ONNX Runtime names a float32 input or output


class OnnxModelError(RuntimeError):
    """An ONNX package or file that is missing, unreadable, or not exported by this project."""


def import_optional(name: str) -> ModuleType:
    """Import ``name`` (onnx, onnxscript, onnxruntime, or a module of theirs); an OnnxModelError with the pip command
    of the three if it is missing."""
    return import_package(name, "the ONNX features", OnnxModelError, with_packages=ONNX_PACKAGES)


def first_line(exc: Exception) -> str:
    """ONNX Runtime's messages can run over many lines; the first says what went wrong."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclasses.dataclass(frozen=True)
class OnnxMetadata:
    """What an exported file says about itself (ONNX ``metadata_props``: string keys and values)."""

    model_name: str
    num_classes: int
    class_names: Tuple[str, ...]
    output_stride: int
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    palette: Optional[Tuple[Tuple[int, int, int], ...]] = None  # the classes' colours (files of older exports lack it)
    precision: str = "fp32"  # of the weights and arithmetic: "int8" for a quantised file (export_onnx.py --int8)
    bands: Optional[BandSpec] = None  # a multi-band model's input bands (mean and std are then theirs)

    # what files of older exports lack: they draw with VOC's colours, and were all fp32; RGB models have no bands
    OPTIONAL = ("palette", "precision", "bands")

    def to_props(self) -> Dict[str, str]:
        """The metadata as strings; lists are JSON, so class names may hold commas."""
        return {"model_name": self.model_name, "num_classes": str(self.num_classes),
                "class_names": json.dumps(list(self.class_names)), "output_stride": str(self.output_stride),
                "mean": json.dumps(list(self.mean)), "std": json.dumps(list(self.std)), "precision": self.precision,
                **({"palette": json.dumps([list(c) for c in self.palette])} if self.palette else {}),
                **({BANDS_KEY: json.dumps(self.bands.to_record())} if self.bands else {}),
                "input": BANDS_INPUT_LAYOUT if self.bands else INPUT_LAYOUT, "output": OUTPUT_LAYOUT,
                "exported_by": EXPORTER}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> "OnnxMetadata":
        """Read :meth:`to_props`' strings back; OnnxModelError naming ``source`` when they are not there."""
        missing = [field.name for field in dataclasses.fields(cls)
                   if field.name not in props and field.name not in cls.OPTIONAL]
        if missing:
            raise OnnxModelError(f"{source} has no {', '.join(missing)} in its metadata: it was not exported by "
                                 f"{EXPORTER}; export the checkpoint with it")
        try:
            meta = cls(model_name=props["model_name"], num_classes=int(props["num_classes"]),
                       class_names=tuple(json.loads(props["class_names"])),
                       output_stride=int(props["output_stride"]),
                       mean=tuple(json.loads(props["mean"])), std=tuple(json.loads(props["std"])),
                       palette=tuple(tuple(colour) for colour in json.loads(props["palette"]))
                       if "palette" in props else None, precision=props.get("precision", "fp32"),
                       bands=BandSpec.from_record(json.loads(props[BANDS_KEY])) if BANDS_KEY in props else None)
        except (ValueError, TypeError) as exc:
            raise OnnxModelError(f"{source} has malformed metadata ({exc}); export it again with {EXPORTER}") from None
        if len(meta.class_names) != meta.num_classes or (meta.palette and len(meta.palette) != meta.num_classes):
            raise OnnxModelError(f"{source} names or colours another number of classes than the {meta.num_classes} it "
                                 f"predicts; export it again with {EXPORTER}")
        return meta


def _shape(arg) -> str:
    """An ONNX Runtime input's or output's shape as text: ``(batch, 3, height, width)``."""
    return "(" + ", ".join(str(dim) if dim is not None else "?" for dim in arg.shape) + ")"


def check_segmentation_graph(session, metadata: OnnxMetadata, source: str) -> None:
    """OnnxModelError (one line, naming ``source``) unless the graph takes float NCHW images as ``INPUT_NAME`` (RGB, or
    the bands the metadata records) and returns a (N, C, H, W) ``OUTPUT_NAME``, C the class count the metadata gives (where the graph states it)."""
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = {arg.name: arg for arg in session.get_outputs()}
    image, logits = inputs.get(INPUT_NAME), outputs.get(OUTPUT_NAME)
    if image is None or logits is None or len(inputs) > 1:
        raise OnnxModelError(f"{source} takes {', '.join(inputs)} and returns {', '.join(outputs)}, not "
                             f"{INPUT_NAME!r} and {OUTPUT_NAME!r}: it was not exported by {EXPORTER}")
    channels = image.shape[1] if len(image.shape) == 4 else None  # an int, or a name or None where dynamic
    bands = metadata.bands.count if metadata.bands else 3
    if image.type != FLOAT_TENSOR or len(image.shape) != 4 or (isinstance(channels, int) and channels != bands):
        what = f"images of the {bands} bands its metadata records" if metadata.bands else "RGB images"
        raise OnnxModelError(f"{source} takes {image.type} {_shape(image)}, not float32 (N, {bands}, H, W) {what}; "
                             f"predict.py needs a segmentation model exported by {EXPORTER}")
    classes = logits.shape[1] if len(logits.shape) == 4 else None
    if logits.type != FLOAT_TENSOR or len(logits.shape) != 4 or (isinstance(classes, int)
                                                                  and classes != metadata.num_classes):
        raise OnnxModelError(f"{source} is not a segmentation model: it returns {logits.type} {_shape(logits)}, not "
                             f"(N, {metadata.num_classes}, H, W) class scores for the {metadata.num_classes} classes "
                             f"its metadata names; export a segmentation checkpoint with {EXPORTER}")


class OnnxSegmenter:
    """An ONNX Runtime session (CPU) as a model: a float (N, 3, H, W) tensor (N bands for a multi-band model) in,
    (N, C, H, W) logits out.

    ``source`` is a file or the model's bytes (the exporter checks what it is about to write).
    """

    def __init__(self, source: Union[str, bytes]):
        self.source = source if isinstance(source, str) else "the exported model"
        ort = import_optional("onnxruntime")
        missing = missing_file(source) if isinstance(source, str) else None
        if missing:
            raise OnnxModelError(f"ONNX model {source} {missing} (check --onnx)")
        options = ort.SessionOptions()
        ort.set_default_logger_severity(3)  # run-time failures are reported in one line, not as ORT's log
        options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise OnnxModelError(f"{self.source} is not a readable ONNX model ({first_line(exc)}); "
                                 f"export it again with {EXPORTER}") from None
        self.metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, self.source)
        check_segmentation_graph(self.session, self.metadata, self.source)
        # A failed run is raised below and reported by the caller in one line (an image too small for the model
        # is skipped): ONNX Runtime's own error line would only repeat it, so it logs fatal errors alone.
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().float().numpy())
        try:
            logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: array}, self.run_options)[0]
        except Exception as exc:  # e.g. an image smaller than the backbone's receptive field
            raise OnnxModelError(f"ONNX Runtime cannot run {self.source} on a batch of shape {tuple(array.shape)} "
                                 f"({first_line(exc)})") from None
        expected = (array.shape[0], self.metadata.num_classes, *array.shape[2:])
        if logits.shape != expected:  # what the graph leaves open (sizes, a symbolic class count) is checked here
            raise OnnxModelError(f"{self.source} returned scores of shape {logits.shape} for images of shape "
                                 f"{array.shape}, not {expected} (one score per class and pixel); export a "
                                 f"segmentation checkpoint with {EXPORTER}")
        return torch.from_numpy(logits)
