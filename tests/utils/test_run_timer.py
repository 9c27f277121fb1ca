"""The time report: phases summed, warm-up steps apart from steady ones, peak memory per part of the run."""
import time

import pytest
import torch

from utils.runtime import run_timer
from utils.runtime.run_timer import RunTimer, process_age

CUDA = torch.device("cuda")


def test_phases_steps_and_the_report():
    timer = RunTimer(imports_seconds=2.0, warmup_steps=2)
    timer.lap("data")
    with timer.phase("evaluation"):
        time.sleep(0.02)
    with timer.phase("evaluation", counts=False):  # its report: the same evaluation
        pass
    for seconds in (1.0, 0.5, 0.25, 0.25):
        timer.step(seconds, images=8, data_seconds=0.1)
    with timer.phase("checkpoint writes"):
        pass
    totals = timer.totals
    assert totals["imports"].seconds == 2.0
    assert totals["evaluation"].count == 1 and totals["evaluation"].seconds >= 0.02
    warm, steady = totals["warm-up steps"], totals["steady steps"]
    assert (warm.count, steady.count) == (2, 2)
    assert warm.seconds == pytest.approx(1.5, abs=0.01) and steady.seconds == 0.5
    assert steady.images_per_second() == 32.0 and steady.data_seconds == pytest.approx(0.2)
    report = timer.report()
    assert report.splitlines()[0].startswith("Time: ") and report.count("\n") == 7
    assert "(imports 2.0, data " in report
    assert "steady steps" in report and "2 steps, 32.00 images/s, 0.2 s of it waiting for data" in report
    assert "peak resident memory" in report
    scalars = timer.scalars()
    assert scalars["steady images/s"] == 32.0 and scalars["seconds/imports"] == 2.0
    assert scalars["seconds/total"] >= 2.0 and "peak GiB/after warm-up resident" in scalars


def test_on_cuda_the_warmup_peak_is_kept_apart_and_the_autotuner_cache_released(monkeypatch):
    """After the warm-up the cached blocks are released and the peak restarts: the steady figure is the step's need."""
    calls, allocated = [], iter([40 * 2 ** 30, 9 * 2 ** 30])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(allocated))
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 50 * 2 ** 30)
    timer = RunTimer(warmup_steps=2)
    timer.device = CUDA
    timer.step(1.0, 8, 0.0)
    assert calls == []  # no waiting inside the warm-up
    timer.step(1.0, 8, 0.0)
    assert calls == ["synchronize", "empty_cache", "reset"]
    timer.step(0.1, 8, 0.0)
    line = timer.report().splitlines()[-1]
    assert line == ("  peak GPU memory: warm-up (autotuning included) 40.00 GiB allocated, 50.00 GiB reserved; "
                    "after warm-up 9.00 GiB allocated, 50.00 GiB reserved")


def test_time_calls_waits_for_the_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    seconds = run_timer.time_calls(lambda: calls.append("call"), CUDA, warmup=1, repeats=2)
    assert calls == ["call", "sync", "call", "call", "sync"] and seconds >= 0


def test_process_age_counts_from_the_process_start():
    assert 0 < process_age() < time.monotonic() + 1
