"""Where a run's wall time and memory go: start-up phases, warm-up and steady training steps, evaluations and
checkpoint writes, summed up in a short report at the end of ``main.py``.

The first ``WARMUP_STEPS`` training steps of a process are counted apart from the rest: they hold one-off costs
(cuDNN autotuning, lazy CUDA and oneDNN initialisation, the first batches), so the steady-state speed
is what the run settles at. On CUDA the peak memory is reported separately for the warm-up, when the autotuner
tries algorithms with large workspaces, and for what follows, which is what a step really needs.
"""
import contextlib
import dataclasses
import os
import resource
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch

__all__ = ["WARMUP_STEPS", "RunTimer", "PhaseTotal", "process_age", "synchronize", "time_calls", "peak_memory",
           "restart_peak_memory"]

WARMUP_STEPS = 5
GIB = 2 ** 30
# ru_maxrss is in KiB on Linux and in bytes on macOS
_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously; the CPU has nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (for benchmarks and tools/model_info.py)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def peak_memory(device: torch.device) -> Dict[str, float]:
    """Peak memory so far, in GiB: CUDA's allocated and reserved, or the process's resident set on the CPU."""
    if device.type == "cuda":
        return {"allocated": torch.cuda.max_memory_allocated(device) / GIB,
                "reserved": torch.cuda.max_memory_reserved(device) / GIB}
    return {"resident": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_BYTES / GIB}


def restart_peak_memory(device: torch.device) -> None:
    """On CUDA: give the allocator's cached blocks back to the driver (the autotuner's workspaces, say) and start
    the peak anew, so the next peak is what the work after this needs. Nothing to do on the CPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def process_age() -> float:
    """Seconds since this process started (the interpreter's start-up and imports so far); 0 where unknown."""
    try:
        with open("/proc/self/stat") as f:  # field 22, counted after the command name in parentheses
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


@dataclasses.dataclass
class PhaseTotal:
    """Seconds spent in one kind of work, how many times it ran, and the images it processed (if any)."""

    seconds: float = 0.0
    count: int = 0
    images: int = 0
    data_seconds: float = 0.0  # of ``seconds``, waiting for the DataLoader (training steps only)

    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


class RunTimer:
    """Sums wall time per phase of a run, from now; ``imports_seconds`` (the script's imports, before it could
    start a timer) counts as the first phase. Set ``device`` once it is known (CPU until then)."""

    STARTUP = ("imports", "set-up", "data", "model", "restore")
    ORDER = (*STARTUP, "warm-up steps", "steady steps", "evaluation", "checkpoint writes")

    def __init__(self, imports_seconds: float = 0.0, warmup_steps: int = WARMUP_STEPS):
        self.device = torch.device("cpu")
        now = time.perf_counter()
        self.start = now - imports_seconds
        self.warmup_steps = warmup_steps
        self.totals: Dict[str, PhaseTotal] = {}
        if imports_seconds:
            self._add("imports", imports_seconds)
        self.steps = 0
        self.warmup_peak: Optional[Dict[str, float]] = None  # CUDA: peak memory during the warm-up steps
        self._mark = now

    def _add(self, name: str, seconds: float, images: int = 0, data_seconds: float = 0.0, counts: bool = True) -> None:
        total = self.totals.setdefault(name, PhaseTotal())
        total.seconds += seconds
        total.count += int(counts)
        total.images += images
        total.data_seconds += data_seconds

    def lap(self, name: str) -> None:
        """Count the time since the previous lap (or the start) as ``name``: for the start-up's phases in order."""
        now = time.perf_counter()
        self._add(name, now - self._mark)
        self._mark = now

    @contextlib.contextmanager
    def phase(self, name: str, counts: bool = True) -> Iterator[None]:
        """Count the block's wall time as ``name`` (the device's queued work included); ``counts=False`` for the rest
        of a phase already counted once (its "N x" stays the number of times it happened)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self._add(name, time.perf_counter() - began, counts=counts)
            self._mark = time.perf_counter()

    def step(self, seconds: float, images: int, data_seconds: float) -> None:
        """One training step of ``seconds`` (``data_seconds`` of them waiting for the batch) on ``images``
        images (all processes'). The step that ends the warm-up waits for the device, so its queued work is
        counted as warm-up; on CUDA it then releases the cached blocks the autotuner left behind (so reserved
        memory, and nvidia-smi, show what the steps need) and starts the steady-state memory peak."""
        self.steps += 1
        if self.steps <= self.warmup_steps:
            if self.steps == self.warmup_steps:
                began = time.perf_counter()
                synchronize(self.device)
                seconds += time.perf_counter() - began
                self.warmup_peak = peak_memory(self.device)
                restart_peak_memory(self.device)
            self._add("warm-up steps", seconds, images, data_seconds)
        else:
            self._add("steady steps", seconds, images, data_seconds)
        self._mark = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def scalars(self) -> Dict[str, float]:
        """Seconds per phase, steady images/s and peak memory, flat (for TensorBoard)."""
        values = {f"seconds/{name}": total.seconds for name, total in self.totals.items()}
        values["seconds/total"] = self.elapsed()
        steady = self.totals.get("steady steps")
        if steady:
            values["steady images/s"] = steady.images_per_second()
        for label, peak in (("warm-up", self.warmup_peak), ("after warm-up", peak_memory(self.device))):
            for kind, gib in (peak or {}).items():
                values[f"peak GiB/{label} {kind}"] = gib
        return values

    def report(self) -> str:
        """A few lines: the total, each phase with its share and speed, the peak memory."""
        total = self.elapsed()
        lines = [f"Time: {total:.1f} s in all"]
        startup = [(name, self.totals[name].seconds) for name in self.STARTUP if name in self.totals]
        if startup:
            seconds = sum(s for _, s in startup)
            parts = ", ".join(f"{name} {s:.1f}" for name, s in startup)
            lines.append(f"  {'start-up':18s} {seconds:7.1f} s {self._share(seconds, total)}  ({parts})")
        for name in self.ORDER[len(self.STARTUP):]:
            phase = self.totals.get(name)
            if phase is None:
                continue
            lines.append(f"  {name:18s} {phase.seconds:7.1f} s {self._share(phase.seconds, total)}  "
                         f"{self._detail(name, phase)}")
        other = total - sum(p.seconds for p in self.totals.values())
        lines.append(f"  {'other':18s} {other:7.1f} s {self._share(other, total)}")
        lines.append("  " + self._memory_line())
        return "\n".join(lines)

    @staticmethod
    def _share(seconds: float, total: float) -> str:
        return f"{100 * seconds / total:3.0f}%" if total > 0 else "   "

    @staticmethod
    def _detail(name: str, phase: PhaseTotal) -> str:
        if name.endswith("steps"):
            waiting = f", {phase.data_seconds:.1f} s of it waiting for data" if phase.data_seconds >= 0.05 else ""
            why = (" (one-off costs: kernel selection and autotuning, lazy initialisation, the first batches)"
                   if name.startswith("warm") else "")
            return f"{phase.count} steps, {phase.images_per_second():.2f} images/s{waiting}{why}"
        return f"{phase.count} x"

    def _memory_line(self) -> str:
        now = peak_memory(self.device)
        if self.device.type != "cuda":
            return f"peak resident memory {now['resident']:.2f} GiB"
        parts: List[str] = []
        if self.warmup_peak is not None:
            parts.append(f"warm-up (autotuning included) {self.warmup_peak['allocated']:.2f} GiB allocated, "
                         f"{self.warmup_peak['reserved']:.2f} GiB reserved")
        label = "after warm-up" if self.warmup_peak is not None else "whole run"
        parts.append(f"{label} {now['allocated']:.2f} GiB allocated, {now['reserved']:.2f} GiB reserved")
        return "peak GPU memory: " + "; ".join(parts)
