"""torchrun on the CPU with Gloo: one writer, exact distributed validation, loss parity, a dead peer, and two
"machines" (two torchrun agents with their own working folders) that share no files."""
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import main as train_script
import network
from datasets import make_demo_dataset
from datasets.sampling import ShardSampler
from metrics import StreamSegMetrics
from tests.conftest import ROOT
from tests.helpers import signal_group_when, write_voc
from utils.io.checkpoint import CheckpointError, capture_rng_state, load_checkpoint, restore_process_rng_state
from utils.runtime.distributed import DistEnv, from_process_zero, gather_to_process_zero

MODEL = "deeplabv3plus_mobilenet"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(str(root), num_train=16, num_val=5, seed=1, as_voc=True)  # 5: shards of 3 and 2, no padding
    return root


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _args(root, ck, *extra):
    """main.py's flags for a short run on ``root`` writing its checkpoints in ``ck`` and its evaluation files
    beside it (``ck``_results), never in the current folder."""
    return ["--data_root", str(root), "--dataset", "voc", "--model", MODEL, "--output_stride", "16",
            "--no-pretrained_backbone", "--crop_size", "64", "--batch_size", "4", "--num_workers", "0",
            "--checkpoint_dir", str(ck), "--results_dir", f"{ck}_results", "--print_interval", "1", "--lr", "0.01",
            *extra]


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


THREE_STEPS = ("--total_itrs", "3", "--val_interval", "3")


@pytest.fixture(scope="module")
def two_process_run(demo_root, tmp_path_factory):
    """One torchrun run of 2 processes, 3 steps and a validation: (its output, its checkpoint folder)."""
    folder = tmp_path_factory.mktemp("two_processes")
    result = _torchrun(2, _args(demo_root, folder / "ck", *THREE_STEPS))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result, folder / "ck"


def test_two_processes_write_one_checkpoint_and_validate_exactly(demo_root, two_process_run, tmp_path, capsys):
    result, ck = two_process_run
    assert "global batch 4 = 2 x 2" in result.stdout
    assert result.stdout.count("Validation at iteration 3") == 1  # only rank 0 logs
    written = sorted(os.listdir(ck))  # the run's lock file went with it
    # best_* only if the 3-step model scored above 0 (it does in bf16 here, not in fp32)
    assert f"latest_{MODEL}_voc_os16.pth" in written
    assert set(written) <= {f"best_{MODEL}_voc_os16.pth", f"latest_{MODEL}_voc_os16.pth"}
    saved = torch.load(ck / f"latest_{MODEL}_voc_os16.pth", weights_only=True)
    assert not any(k.startswith("module.") for k in saved["model_state"])  # the original's format
    assert train_script.main(_args(demo_root, tmp_path / "ck1", "--test_only", "--ckpt",
                                   str(ck / f"latest_{MODEL}_voc_os16.pth"))) == 0
    assert _mean_iou(capsys.readouterr().out) == _mean_iou(result.stdout)


def test_two_processes_track_one_process_with_the_same_global_batch(demo_root, two_process_run, tmp_path, capsys):
    """Same samples and augmentation per step (seeded by sample); only BatchNorm differs: on the CPU each
    process normalises with its own 2 images instead of all 4 (SyncBatchNorm needs CUDA), so losses
    agree closely but not exactly. Tolerance: 5% relative per iteration. The single process runs in this one."""
    assert train_script.main(_args(demo_root, tmp_path / "a", *THREE_STEPS)) == 0
    single, dist = _losses(capsys.readouterr().out), _losses(two_process_run[0].stdout)
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


def test_nan_on_one_process_stops_every_process_with_the_message(demo_root, tmp_path):
    """Process 1 alone gets a NaN loss at step 2 (tests/scripts/nan_on_one_rank.py): all processes decide
    together before the backward pass, so none is left waiting in DDP's gradient all-reduce."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), os.path.join(ROOT, "tests", "scripts", "nan_on_one_rank.py"),
           *_args(demo_root, tmp_path / "ck", "--total_itrs", "5", "--val_interval", "100", "--dist_timeout", "60")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert result.returncode != 0
    assert "error: loss is nan on another process at iteration 2" in result.stderr, result.stderr[-3000:]
    assert "lost contact" not in result.stderr and "mismatch" not in result.stderr
    assert not list((tmp_path / "ck").glob("*.pth"))  # nothing saved (the run's lock file is not a .pth)


def _tiny_segmenter() -> torch.nn.Sequential:
    """Conv -> BatchNorm -> 1x1 classifier in eval mode, whose predictions follow the BatchNorm statistics."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 21, 1)).eval()


RECIPES = [(), ("--eval_scales", "0.75", "1.0", "--eval_flip"), ("--eval_slide", "--window", "96", "--stride", "64")]


def _confusion_matrix(root: str, recipe: tuple, model: torch.nn.Module, rank: int = 0, world: int = 1):
    """The confusion matrix of ``model`` on this process's shard of the validation set, evaluated as main.py does."""
    opts = train_script.get_argparser().parse_args(["--data_root", root, "--dataset", "voc", "--amp", "off",
                                                    "--no-channels_last", *recipe])
    _, val = train_script.get_dataset(opts)
    loader = torch.utils.data.DataLoader(val, sampler=ShardSampler(len(val), rank, world) if world > 1 else None)
    metrics = StreamSegMetrics(21)
    opts.num_classes = 21
    train_script.configure(opts, train_script.DistEnv(), torch.device("cpu"), lambda *args, **kwargs: None)
    train_script.evaluate(opts, train_script.build_predictor(opts, model, torch.device("cpu")), loader,
                          torch.device("cpu"), metrics)
    return metrics.confusion_matrix


def _validate(rank: int, root: str, folder: str) -> None:
    """Process 1's BatchNorm statistics are off, as they drift without SyncBatchNorm. Process 0 writes the summed
    confusion matrix of each recipe."""
    model = _tiny_segmenter()
    if rank == 1:
        model[1].running_mean.fill_(3.0)
    matrices = [_confusion_matrix(root, recipe, model, rank, 2) for recipe in RECIPES]
    if rank == 0:
        torch.save(matrices, os.path.join(folder, "confusion.pt"))


def test_distributed_validation_uses_process_zeros_batchnorm_statistics(demo_root, spawned_pair):
    """Exact under every evaluation recipe: the shards' confusion matrices sum to the single-process one."""
    for recipe, distributed in zip(RECIPES, torch.load(spawned_pair / "confusion.pt")):
        assert torch.equal(distributed, _confusion_matrix(str(demo_root), recipe, _tiny_segmenter())), recipe


def test_sync_bn_keeps_the_checkpoint_format_and_asks_for_cuda(tmp_path):
    opts = train_script.get_argparser().parse_args(["--model", MODEL, "--no-pretrained_backbone", "--sync_bn"])
    train_script.resolve_architecture(opts, torch.device("cpu"))
    opts.num_classes = 21
    with pytest.raises(train_script.TrainingError, match="--sync_bn needs CUDA devices.*--no-sync_bn"):
        train_script.build_training_model(opts, DistEnv(), torch.device("cpu"))
    plain = network.build_model(MODEL, 21, 16, pretrained_backbone=False)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
        network.build_model(MODEL, 21, 16, pretrained_backbone=False))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert [(k, v.shape) for k, v in synced.state_dict().items()] == \
        [(k, v.shape) for k, v in plain.state_dict().items()]  # a SyncBN run saves the original's keys


def _node(cwd, rendezvous, args):
    """One torchrun agent of a 2-node run with one process, started in ``cwd`` (its own filesystem view)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--max_restarts", "0", *rendezvous, os.path.join(ROOT, "main.py"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=_env())


def _two_nodes(folders, rendezvous, args):
    procs = [_node(folder, rendezvous(i), args) for i, folder in enumerate(folders)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    return outputs


def test_two_machines_without_a_shared_filesystem(tmp_path):
    """Each machine prepares its own demo data; only process 0 writes checkpoints; a resume reads the
    checkpoint on process 0's machine alone and sends it to the other."""
    folders = [tmp_path / "node0", tmp_path / "node1"]
    for folder in folders:
        folder.mkdir()
    args = ["--dataset", "demo", "--data_root", "data", "--model", MODEL, "--no-pretrained_backbone",
            "--crop_size", "64", "--batch_size", "4", "--num_workers", "0", "--checkpoint_dir", "ck",
            "--print_interval", "1", "--lr", "0.01", "--val_interval", "100",
            "--crop_val"]  # the final validation on 64 px centre crops: the demo's whole images take seconds more
    port = str(_free_port())
    c10d = ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "two-machines"]
    outputs = _two_nodes(folders, lambda i: c10d, [*args, "--total_itrs", "3"])
    main_output = next((o for o in outputs if "Device: cpu x 2 process(es)" in o), None)
    assert main_output and "global batch 4 = 2 x 2" in main_output and "Finished 3 iterations" in main_output, \
        "\n".join(o[-3000:] for o in outputs)
    for folder in folders:  # each machine generated the demo data it trains on
        assert (folder / "data" / "demo" / "VOCdevkit" / "VOC2012" / "demo_version.txt").is_file()
    writers = [folder for folder in folders if (folder / "ck").exists()]
    assert len(writers) == 1  # the machine that got rank 0
    first, other = writers[0], next(f for f in folders if f != writers[0])
    latest = first / "ck" / f"latest_{MODEL}_demo_os16.pth"

    # Static rendezvous puts rank 0 on the machine that has the checkpoint; the other has none.
    port = str(_free_port())

    def static(node_rank):
        return ["--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", port]

    outputs = _two_nodes([first, other], static, [*args, "--total_itrs", "5", "--ckpt", str(latest),
                                                  "--continue_training"])
    expected = ("Training state restored from", "at iteration 3", "Itrs 4/5", "Finished 5 iterations")
    assert all(text in outputs[0] for text in expected), "\n".join(o[-3000:] for o in outputs)
    assert not (other / "ck").exists()
    assert torch.load(latest, weights_only=True)["cur_itrs"] == 5


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A torchrun run of 2 processes, with OHEM, auto class weights and TensorBoard, that a scheduler stops with
    SIGTERM after its second step. Its one validation image, checked after each step, leaves process 1's shard
    empty. (its output, its data, checkpoint and TensorBoard folders)"""
    folder = tmp_path_factory.mktemp("stopped_run")
    root, ck, tb = folder / "data", folder / "ck", folder / "tb"
    write_voc(root, names_train=[f"t{i}" for i in range(4)], names_val=["v0"], size=(48, 40))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), os.path.join(ROOT, "main.py"),
           *_args(root, ck, "--crop_size", "32", "--total_itrs", "100000", "--val_interval", "1", "--num_workers",
                  "1", "--dist_timeout", "60", "--loss_type", "ohem", "--ohem_min_kept", "500", "--class_weights",
                  "auto", "--tensorboard", str(tb))]
    _, out = signal_group_when(cmd, lambda out: "Itrs 2/" in out, signal.SIGTERM, cwd=ROOT, env=_env())
    return out, root, ck, tb


def test_new_losses_weights_and_tensorboard_under_torchrun(stopped_run):
    """OHEM with auto class weights trains on two processes: process 0 counts the masks and sends the weights,
    and alone logs them and writes TensorBoard and metrics.json."""
    out, _, ck, tb = stopped_run
    assert out.count("class weights (auto, median frequency): background") == 1, out[-3000:]
    assert len(_losses(out)) >= 2 and all(np.isfinite(_losses(out)))
    assert len([f for f in os.listdir(tb) if f.startswith("events.out.tfevents")]) == 1
    assert os.path.isfile(f"{ck}_results/metrics.json")


def test_sigterm_to_torchrun_s_process_group_saves_a_resumable_checkpoint(stopped_run, capsys):
    """A scheduler signals torchrun's group: the agent forwards SIGTERM to each process's own group (with its
    DataLoader workers). Every process stops at the same step, process 0 saves, and a resume continues. Process 1's
    empty validation shard did not stall process 0."""
    out, root, ck, _ = stopped_run
    assert "Validation at iteration 1" in out and "SIGTERM received: saved" in out, out[-3000:]
    assert out.count("Traceback") == out.count("SignalException: Process"), out[-3000:]  # only torchrun's own
    latest = ck / f"latest_{MODEL}_voc_os16.pth"
    saved = torch.load(latest, weights_only=True)["cur_itrs"]
    # resumed by one process (two processes resume in the two-machines test): it says whose random state it takes
    assert train_script.main(_args(root, ck, "--crop_size", "32", "--total_itrs", str(saved + 1), "--val_interval",
                                   "100000", "--ckpt", str(latest), "--continue_training")) == 0
    assert "random state of 2 process(es) and this run has 1" in capsys.readouterr().out
    assert torch.load(latest, weights_only=True)["cur_itrs"] == saved + 1


def _rng_round_trip(rank: int, folder: str) -> None:
    """Streams that differ by rank are saved as main.py saves them, then each process restores its own and draws
    what it drew right after saving."""
    torch.manual_seed(0)
    torch.rand(rank + 1)  # the streams diverge
    states = gather_to_process_zero(capture_rng_state(torch.device("cpu")))
    if rank == 0:
        torch.save({"rng_state": states[0], "rng_states": states}, os.path.join(folder, "ck.pth"))
    expected = torch.rand(4)
    torch.distributed.barrier()
    note = restore_process_rng_state(load_checkpoint(os.path.join(folder, "ck.pth")), rank, 2, torch.device("cpu"))
    torch.save((note, expected, torch.rand(4)), os.path.join(folder, f"drawn{rank}.pt"))


def test_every_process_resumes_its_own_random_stream(spawned_pair):
    for rank in (0, 1):
        note, expected, drawn = torch.load(spawned_pair / f"drawn{rank}.pt")
        assert note is None and torch.equal(drawn, expected), rank
    note = restore_process_rng_state(load_checkpoint(str(spawned_pair / "ck.pth")), 0, 1,  # another world size
                                     torch.device("cpu"))
    assert "random state of 2 process(es) and this run has 1" in note


def _fail_on_process_zero(rank: int, folder: str) -> None:
    """Process 0 cannot read the checkpoint: every process gets its error, none waits in the broadcast."""
    def read():
        raise CheckpointError("checkpoint best.pth does not exist (check --ckpt)")

    try:
        from_process_zero(read, torch.device("cpu"))
    except CheckpointError as exc:
        with open(os.path.join(folder, f"error.{rank}"), "w") as f:
            f.write(str(exc))


def _pair_checks(rank: int, port: str, root: str, folder: str) -> None:
    """One process of a 2-process Gloo group (torch.multiprocessing.spawn): the checks of `spawned_pair`, one after
    another, each writing what it found into ``folder``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    _validate(rank, root, folder)
    _rng_round_trip(rank, folder)
    _fail_on_process_zero(rank, folder)
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def spawned_pair(demo_root, tmp_path_factory):
    """The folder where one spawned pair of processes (a new interpreter each: seconds to start) wrote what their
    distributed validation, random-state round trip and failed checkpoint read gave."""
    folder = tmp_path_factory.mktemp("spawned_pair")
    torch.multiprocessing.spawn(_pair_checks, args=(str(_free_port()), str(demo_root), str(folder)), nprocs=2)
    return folder


def test_an_error_on_process_zero_reaches_every_process(spawned_pair):
    for rank in (0, 1):
        with open(spawned_pair / f"error.{rank}") as f:
            assert f.read() == "checkpoint best.pth does not exist (check --ckpt)"
