"""Running the original DeepLabV3Plus-Pytorch's scripts beside ours, for the whole-process benchmarks.

The original is not vendored: pass the folder of a checkout (``--original PATH``). Its scripts import
scikit-learn, matplotlib and visdom; without them the comparison is skipped with a line saying so.
"""
import importlib.util
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from datasets import make_demo_dataset
from datasets.demo import demo_voc_root

ORIGINAL_NEEDS = ("sklearn", "matplotlib", "visdom")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def skip_reason(original: Optional[str], script: str) -> Optional[str]:
    """Why the original's ``script`` cannot be run here, or None when it can."""
    if not original:
        return "no --original PATH (a checkout of VainF/DeepLabV3Plus-Pytorch) given"
    if not os.path.isfile(os.path.join(original, script)):
        return f"{original} has no {script}; pass the folder of a DeepLabV3Plus-Pytorch checkout"
    missing = [m for m in ORIGINAL_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        return f"the original needs {', '.join(missing)}: pip install scikit-learn matplotlib"
    return None


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


def best_of_interleaved(runs: Dict[str, Tuple[List[str], str]], rounds: int,
                        env: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    """The fastest of ``rounds`` wall times per run (label -> (argv, working folder)), the runs taking turns:
    the machine's speed drifts."""
    best = {label: float("inf") for label in runs}
    for _ in range(rounds):
        for label, (argv, cwd) in runs.items():
            best[label] = min(best[label], timed_run(argv, cwd, env))
    return best
