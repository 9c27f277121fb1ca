"""torchrun on the CPU with Gloo: one writer, exact distributed validation, loss parity, a dead peer."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from datasets import make_demo_dataset
from tests.conftest import ROOT

MODEL = "deeplabv3plus_mobilenet"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(str(root), num_train=16, num_val=5, seed=1)  # 5: shards of 3 and 2, no padding
    return root


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _args(root, ck, *extra):
    return ["--data_root", str(root), "--dataset", "voc", "--model", MODEL, "--output_stride", "16",
            "--no-pretrained_backbone", "--crop_size", "64", "--batch_size", "4", "--num_workers", "0",
            "--checkpoint_dir", str(ck), "--print_interval", "1", "--lr", "0.01", *extra]


def _torchrun(nproc, args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(_free_port()), os.path.join(ROOT, "main.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mean_iou(text: str) -> float:
    return float(re.findall(r"^Mean IoU: ([0-9.]+)$", text, re.M)[-1])


def _losses(text: str):
    return [float(v) for v in re.findall(r"Loss=([0-9.]+)", text)]


def test_two_processes_write_one_checkpoint_and_validate_exactly(demo_root, tmp_path):
    ck = tmp_path / "ck"
    result = _torchrun(2, _args(demo_root, ck, "--total_itrs", "3", "--val_interval", "3"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "global batch 4 = 2 x 2" in result.stdout
    assert result.stdout.count("Validation at iteration 3") == 1  # only rank 0 logs
    assert sorted(os.listdir(ck)) == [f"best_{MODEL}_voc_os16.pth", f"latest_{MODEL}_voc_os16.pth"]
    saved = torch.load(ck / f"latest_{MODEL}_voc_os16.pth", weights_only=True)
    assert not any(k.startswith("module.") for k in saved["model_state"])  # the original's format
    single = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"),
                             *_args(demo_root, tmp_path / "ck1", "--test_only", "--ckpt",
                                    str(ck / f"latest_{MODEL}_voc_os16.pth"))],
                            capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert single.returncode == 0, single.stderr
    assert _mean_iou(single.stdout) == _mean_iou(result.stdout)


def test_two_processes_track_one_process_with_the_same_global_batch(demo_root, tmp_path):
    """Same samples and augmentation per step (seeded by sample); only BatchNorm differs: on the CPU each
    process normalises with its own 2 images instead of all 4 (SyncBatchNorm needs CUDA), so losses
    agree closely but not exactly. Tolerance: 5% relative per iteration."""
    one = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"),
                          *_args(demo_root, tmp_path / "a", "--total_itrs", "3", "--val_interval", "100")],
                         capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    two = _torchrun(2, _args(demo_root, tmp_path / "b", "--total_itrs", "3", "--val_interval", "100"))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    single, dist = _losses(one.stdout), _losses(two.stdout)
    assert len(single) == len(dist) == 3
    for a, b in zip(single, dist):
        assert abs(a - b) / a < 0.05, (single, dist)


def test_a_dead_peer_stops_the_other_with_a_clear_message(demo_root, tmp_path):
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = dict(_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "main.py"),
             *_args(demo_root, tmp_path / "ck", "--total_itrs", "100000", "--val_interval", "100000",
                    "--dist_timeout", "20")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env))
    deadline = time.time() + 180
    for line in procs[0].stdout:
        if "Itrs 2/" in line:
            break
        assert time.time() < deadline
    procs[1].send_signal(signal.SIGKILL)
    start = time.time()
    out, _ = procs[0].communicate(timeout=120)
    assert time.time() - start < 90
    assert procs[0].returncode == 1
    assert "lost contact with another process" in out, out[-2000:]
