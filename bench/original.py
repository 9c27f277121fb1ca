"""Running the original DeepLabV3Plus-Pytorch's scripts beside ours, for the whole-process benchmarks.

The original is not vendored: pass the folder of a checkout (``--original PATH``). Its scripts import visdom,
scikit-learn and matplotlib at start-up, but these runs never use them (no --enable_vis; an unused import; no
--save_val_results). Where one is not installed (a GPU machine without internet), :func:`original_env` puts an
import stand-in on PYTHONPATH for the original's runs alone.
"""
import importlib.util
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torchvision

from datasets import make_demo_dataset
from datasets.demo import demo_voc_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# module file -> its text: enough for ``from visdom import Visdom``, ``from sklearn.metrics import
# confusion_matrix`` and ``import matplotlib.pyplot as plt`` to succeed; using any of them fails loudly.
STAND_INS = {
    "visdom": {"visdom.py": "class Visdom:\n    def __init__(self, *args, **kwargs):\n"
                            "        raise RuntimeError('visdom is a benchmark stand-in here')\n"},
    "sklearn": {"sklearn/__init__.py": "",
                "sklearn/metrics.py": "def confusion_matrix(*args, **kwargs):\n"
                                      "    raise RuntimeError('sklearn is a benchmark stand-in here')\n"},
    "matplotlib": {"matplotlib/__init__.py": "", "matplotlib/pyplot.py": ""},
}
# The original builds deeplabv3plus_mobilenet with torchvision's ImageNet weights, downloaded under this name.
MOBILENET_CACHE_NAME = "mobilenet_v2-b0353104.pth"
Run = Union[Tuple[List[str], str], Tuple[List[str], str, Dict[str, str]]]  # argv, working folder[, extra env]


def skip_reason(original: Optional[str], script: str) -> Optional[str]:
    """Why the original's ``script`` cannot be run here, or None when it can."""
    if not original:
        return "no --original PATH (a checkout of VainF/DeepLabV3Plus-Pytorch) given"
    if not os.path.isfile(os.path.join(original, script)):
        return f"{original} has no {script}; pass the folder of a DeepLabV3Plus-Pytorch checkout"
    return None


def original_env(folder: str) -> Dict[str, str]:
    """Environment additions for the original's scripts, made in ``folder``: a torch hub cache with a stand-in for
    the ImageNet MobileNetV2 file it would download (random weights: the runs train or predict with their own), and
    a PYTHONPATH folder with stand-ins for the start-up imports that are not installed here (said once)."""
    checkpoints = os.path.join(folder, "original_torch_home", "hub", "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), os.path.join(checkpoints, MOBILENET_CACHE_NAME))
    env = {"TORCH_HOME": os.path.dirname(os.path.dirname(checkpoints))}
    missing = [name for name in STAND_INS if importlib.util.find_spec(name) is None]
    if not missing:
        return env
    stand_ins = os.path.join(folder, "original_stand_ins")
    for name in missing:
        for relative, text in STAND_INS[name].items():
            path = os.path.join(stand_ins, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    print(f"note: the original's runs import stand-ins for {', '.join(missing)} (not installed here; unused by them)")
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [stand_ins, os.environ.get("PYTHONPATH")]))}


def demo_voc(folder: str, val_images: int) -> str:
    """The demo data in the VOC layout under ``folder`` (read by both scripts as --dataset voc --year 2012),
    with the validation list cut to ``val_images`` names; returns the --data_root to pass."""
    make_demo_dataset(folder)
    val_list = os.path.join(demo_voc_root(folder), "ImageSets", "Segmentation", "val.txt")
    with open(val_list) as f:
        names = f.read().split()[:val_images]
    with open(val_list, "w") as f:
        f.write("\n".join(names) + "\n")
    return folder


def timed_run(argv: Sequence[str], cwd: str, env: Optional[Dict[str, str]] = None) -> float:
    """Wall-clock seconds of ``python argv...`` run in ``cwd``; stops the benchmark with the output if it fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env={**os.environ, **(env or {})},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(argv[:1])} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    return seconds


def best_of_interleaved(runs: Dict[str, Run], rounds: int, env: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    """The fastest of ``rounds`` wall times per run (label -> (argv, working folder[, the run's own env])), the
    runs taking turns: the machine's speed drifts. ``env`` applies to every run."""
    best = {label: float("inf") for label in runs}
    for _ in range(rounds):
        for label, (argv, cwd, *own) in runs.items():
            best[label] = min(best[label], timed_run(argv, cwd, {**(env or {}), **(own[0] if own else {})}))
    return best
