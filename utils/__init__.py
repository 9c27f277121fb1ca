"""The original's helpers at the root (ext_transforms, loss, scheduler, utils, visualizer, with config and constants);
the engine in sub-packages, one concern each: io, runtime, reporting, inference (see each one's docstring)."""
import importlib

# The names the original's ``utils`` package held (``from .utils import *`` and three classes): forks' code reads
# ``utils.set_bn_momentum`` and ``utils.PolyLR``. Each is imported on its first use: ``import utils.x`` stays light.
_ORIGINAL_NAMES = {"denormalize": "utils.utils", "Denormalize": "utils.utils", "set_bn_momentum": "utils.utils",
                   "fix_bn": "utils.utils", "mkdir": "utils.utils", "Visualizer": "utils.visualizer",
                   "PolyLR": "utils.scheduler", "FocalLoss": "utils.loss"}


_ORIGINAL_MODULES = ("ext_transforms", "loss", "scheduler", "utils", "visualizer")  # attributes of the original's
__all__ = sorted(_ORIGINAL_NAMES)  # `from utils import *` gives what it gave


def __getattr__(name: str):
    if name in _ORIGINAL_MODULES:  # utils.loss after a bare `import utils`, as the original's imports made it
        return importlib.import_module(f"utils.{name}")
    if name not in _ORIGINAL_NAMES:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    return getattr(importlib.import_module(_ORIGINAL_NAMES[name]), name)


def __dir__():
    return sorted(set(globals()) | set(_ORIGINAL_NAMES) | set(_ORIGINAL_MODULES))
