"""The CPU run's allocator settings: freed memory is reused, not faulted in again; a user's own settings win."""
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from utils.runtime.host_memory import USER_SETTINGS, keep_freed_memory, runs_on_glibc

# Page faults per training step of a small network on 4 x 64x64 images (2 MiB activations).
FAULTS = """
import resource, sys
import torch
from utils.runtime.host_memory import keep_freed_memory
from utils.runtime.training import build_sgd, train_step
kept = keep_freed_memory(torch.device("cpu")) if sys.argv[1] == "keep" else False
layers = [torch.nn.Conv2d(3, 32, 3, padding=1)]
for _ in range(4):
    layers += [torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1)]
model = torch.nn.Sequential(*layers, torch.nn.Conv2d(32, 5, 1)).to(memory_format=torch.channels_last)
optimizer = build_sgd([{"params": model.parameters(), "lr": 0.01}], 0.01, 1e-4, torch.device("cpu"))
scaler = torch.amp.GradScaler("cpu", enabled=False)
images, labels = torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4, 64, 64))
def step():
    train_step(model, optimizer, scaler, torch.nn.CrossEntropyLoss(), images, labels, torch.device("cpu"), "off", True)
for _ in range(10): step()  # the heap grows to its steady size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5): step()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _faults_per_step(mode: str):
    """Faults per step in a process with glibc's defaults (this one's allocator settings left out) or ours."""
    env = {name: value for name, value in os.environ.items() if name not in ("LD_PRELOAD", "GLIBC_TUNABLES")
           and name not in USER_SETTINGS}
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    kept, faults = done.stdout.split()
    return kept == "True", float(faults)


@pytest.mark.skipif(not runs_on_glibc(), reason="glibc's allocator")
def test_a_training_step_reuses_the_last_step_s_memory_instead_of_faulting_it_in_again():
    """With glibc's defaults each step hands its activations' pages back and faults them in again (thousands of
    faults a step here, one thread); kept, the next step reuses them (none)."""
    kept, faults = _faults_per_step("keep")
    _, default_faults = _faults_per_step("default")
    assert kept and faults < default_faults / 4, (faults, default_faults)


@pytest.mark.parametrize("name, value", [("MALLOC_TOP_PAD_", "0"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_the_user_s_own_allocator_settings_win(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert keep_freed_memory(torch.device("cpu")) is False


def test_a_run_on_another_device_leaves_the_allocator_alone():
    assert keep_freed_memory(torch.device("cuda")) is False  # measured on the CPU only
