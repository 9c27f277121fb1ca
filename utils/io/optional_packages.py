"""The optional packages: the one table of the versions they are installed at (requirements-dev.txt pins the same,
and a test checks that), and the one way to import them: a missing package is a line naming what needs it and the
pip command, never a traceback."""
import importlib
from types import ModuleType
from typing import Optional, Type

__all__ = ["PINS", "PIP_OPTIONS", "pip_install", "not_installed", "optional_module", "import_optional"]

PINS = {  # the module imported -> the requirement that installs it
    "timm": "timm==1.0.31",  # the tu- encoders, and HRNet/Xception weights through timm's hub
    "safetensors": "safetensors==0.8.0",  # weights files in that format (timm installs it)
    "onnx": "onnx==1.23.2",  # ONNX export and ONNX Runtime inference: the three together
    "onnxscript": "onnxscript==0.7.2",
    "onnxruntime": "onnxruntime==1.32.0",
    "av": "av==18.1.0",  # videos (FFmpeg's libraries)
    "rasterio": "rasterio==1.4.4",  # multi-band and GeoTIFF imagery
    "pycocotools": "pycocotools==2.0.11",  # COCO import
    "tensorboard": "tensorboard==2.21.0",  # main.py --tensorboard
    "segmentation_models_pytorch": "segmentation-models-pytorch==0.6.0",  # bench/smp.py only
}
PIP_OPTIONS = {"segmentation_models_pytorch": "--no-deps"}  # its requirements would pull other versions


def pip_install(*packages: str) -> str:
    """The pip command that installs ``packages`` (keys of :data:`PINS`) at their pinned versions."""
    options = sorted({PIP_OPTIONS[name] for name in packages if name in PIP_OPTIONS})
    return " ".join(["pip install", *options, *(PINS[name] for name in packages)])


def not_installed(package: str, needed_for: str, *with_packages: str) -> str:
    """The line saying that ``package`` is missing, what it is ``needed_for``, and the pip command (installing
    ``with_packages`` too, the ones it works with)."""
    return f"{package} is not installed; it is needed for {needed_for}: {pip_install(*with_packages or (package,))}"


def _import(module: str) -> ModuleType:
    importlib.import_module(module.split(".")[0])  # the package first: its submodules may be imported already
    return importlib.import_module(module)


def optional_module(module: str) -> Optional[ModuleType]:
    """``module`` imported, or None when it (or what it needs) is not installed."""
    try:
        return _import(module)
    except ImportError:
        return None


def import_optional(module: str, needed_for: str, error: Type[Exception], package: Optional[str] = None,
                    with_packages: tuple = ()) -> ModuleType:
    """``module`` imported; when it cannot be, ``error`` with :func:`not_installed`'s line for ``package`` (the key
    of :data:`PINS` that installs it; default: the module's top name) and ``with_packages``, or, for a package
    that is installed but fails to import (a version that does not fit), that import error and the same pip line."""
    top = module.split(".")[0]
    try:
        return _import(module)
    except ImportError as exc:
        line = not_installed(package or top, needed_for, *with_packages)
        if not isinstance(exc, ModuleNotFoundError):  # installed, but a version that does not fit
            line = (f"{module} is installed but cannot be imported ({str(exc).splitlines()[0]}); it is needed for "
                    f"{needed_for}: {pip_install(*with_packages or (package or top,))}")
        raise error(line) from None
