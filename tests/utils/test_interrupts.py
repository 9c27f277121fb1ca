"""Stop signals outside a training loop: raised once as StoppedBySignal, ignored while the program cleans up, held
back while a write commits, and the handlers before them restored; while a script starts (torch loading), one line."""
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from datasets.sampling import SeededSamples, ShardedRandomSampler
from tests.conftest import ROOT
from tests.helpers import signal_group_when
from utils.io.stop_signals import starting_handlers_gone, stop_quietly_while_starting, stop_signals_held
from utils.runtime.interrupts import StopFlag, StoppedBySignal, WorkerLoader, stop_signals_raise


def test_a_stop_signal_raises_once_and_a_second_one_cuts_no_clean_up_short():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    cleaned_up = False
    with pytest.raises(StoppedBySignal) as stopped:
        with stop_signals_raise():
            try:
                signal.raise_signal(signal.SIGINT)
            finally:
                signal.raise_signal(signal.SIGTERM)  # a second Ctrl-C, a scheduler's SIGTERM: ignored here
                cleaned_up = True
    assert cleaned_up and stopped.value.signal_name == "SIGINT" and stopped.value.exit_status == 130
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_signal_during_a_commit_comes_after_it():
    steps = []
    with pytest.raises(StoppedBySignal, match="SIGTERM"):
        with stop_signals_raise():
            with stop_signals_held():
                signal.raise_signal(signal.SIGTERM)
                steps.append("the rename after the signal")
            steps.append("after the commit")  # not reached: the signal is raised as the commit ends
    assert steps == ["the rename after the signal"]


def test_an_error_of_the_code_a_stop_cut_short_is_that_stop():
    """A stop that lands in an import or inside a library that wraps what cut it short in its own error (torch's
    exporter does) still ends the run as the stop."""
    with pytest.raises(StoppedBySignal) as stopped:
        with stop_signals_raise():
            try:
                signal.raise_signal(signal.SIGTERM)
            except BaseException as exc:
                raise RuntimeError("partially initialized module") from exc
    assert stopped.value.signal_name == "SIGTERM" and isinstance(stopped.value.__cause__, RuntimeError)


def test_the_start_up_handler_gives_way_to_python_s_defaults_once_a_script_s_own_handling_took_over():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    try:
        stop_quietly_while_starting()
        with StopFlag():
            pass
        assert {signum: signal.getsignal(signum) for signum in defaults} == defaults  # not the start-up handler
        stop_quietly_while_starting()
        with stop_signals_raise():
            pass
        assert {signum: signal.getsignal(signum) for signum in defaults} == defaults
        stop_quietly_while_starting()
        starting_handlers_gone()  # torchrun's processes other than 0, which keep the defaults
        assert {signum: signal.getsignal(signum) for signum in defaults} == defaults
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        starting_handlers_gone()  # a handler of someone else's stays
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


# A script run as a program, whose `import torch` takes a minute: the signal comes while it loads.
SLOW_TORCH = """
import importlib.abc, os, runpy, sys, time
class SlowTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            print("importing torch", flush=True)
            time.sleep(60)
sys.meta_path.insert(0, SlowTorch())
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script", ["main.py", "predict.py", "tools/export_onnx.py", "tools/model_info.py",
                                    "tools/import_annotations.py", "tools/convert_weights.py",
                                    "tools/check_precision.py", "tools/make_crack_dataset.py",
                                    "tools/make_geo_dataset.py"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_torch_loads_is_one_line(script, signum, tmp_path):
    code, out = signal_group_when([sys.executable, "-c", SLOW_TORCH, os.path.join(ROOT, script), "--help"],
                                  lambda out: "importing torch" in out, signum, cwd=str(tmp_path))
    name = signal.Signals(signum).name
    assert out == f"importing torch\n{name} received while starting: stopped; nothing was written\n"
    assert code == 128 + signum and os.listdir(tmp_path) == []


def test_a_signal_that_another_thread_receives_during_a_commit_still_comes_after_it():
    """The kernel gives a signal sent to the process to any thread that does not block it (torch's, a
    DataLoader's), and Python then runs the handler in the main thread at once: the commit still runs whole."""
    send = threading.Event()

    def receiver():  # a thread started before the commit, with the stop signals unblocked
        send.wait()
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    thread = threading.Thread(target=receiver)
    thread.start()
    steps = []
    with pytest.raises(StoppedBySignal, match="SIGTERM"):
        with stop_signals_raise():
            with stop_signals_held():
                send.set()
                thread.join()
                for _ in range(1000):  # bytecode boundaries, where Python runs the handler
                    time.sleep(0)
                steps.append("the rename after the signal")
            steps.append("after the commit")  # not reached: the signal is raised as the commit ends
    assert steps == ["the rename after the signal"]


def test_the_first_of_two_stop_signals_names_a_polled_stop():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with StopFlag() as stop:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # a scheduler's SIGTERM right after a Ctrl-C
    assert stop.signal_name == "SIGINT"
    assert {signum: signal.getsignal(signum) for signum in before} == before


# A script that ends through exit_keeping_status, and is signalled while Python shuts down (as torch tears down).
SIGNALLED_AT_SHUTDOWN = """
import atexit, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from utils.io.stop_signals import exit_keeping_status
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), os.kill(os.getpid(), signal.SIGINT), time.sleep(0.1)))
print("done", flush=True)
exit_keeping_status(3)
"""


def test_a_stop_after_a_script_s_last_line_leaves_its_exit_status():
    result = subprocess.run([sys.executable, "-c", SIGNALLED_AT_SHUTDOWN, ROOT], capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (3, "done\n", "")


def test_a_script_collects_no_cycles_while_importing_then_leaves_the_imports_out_and_exits_keeping_its_status():
    """main.py's and predict.py's start: collections paused while importing, then the imports' objects frozen (left
    out of later collections) and collections on again; at exit they are frozen too, and the status is kept."""
    code = ("import gc, sys\n"
            "from utils.runtime.collector import freeze_imported, pause_during_imports\n"
            "from utils.io.stop_signals import exit_keeping_status\n"
            "pause_during_imports()\n"
            "assert not gc.isenabled()\n"
            "import json, email.parser\n"
            "freeze_imported()\n"
            "assert gc.isenabled() and gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
            "exit_keeping_status(3)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stderr == ""


class _Indices(torch.utils.data.Dataset):
    """12 samples, each its index; every read is noted in ``log`` (one line per read, from any worker)."""

    def __init__(self, log: str):
        self.log = log

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> torch.Tensor:
        with open(self.log, "a") as f:
            f.write(f"{index}\n")
        return torch.tensor(index)


def test_workers_started_early_fetch_nothing_until_the_epoch_set_afterwards(tmp_path):
    """main.py forks the loaders' persistent workers, idle, before it builds the model: the first iteration
    reads only its own samples, and gives the batches of the epoch and start the sampler is then set to."""
    batches, reads = [], []
    for early in (True, False):
        log = tmp_path / f"reads_{early}.txt"
        loader = WorkerLoader(SeededSamples(_Indices(str(log)), seed=3), sampler=ShardedRandomSampler(12, 4, seed=3),
                              batch_size=4, drop_last=True, num_workers=2, persistent_workers=True)
        if early:
            loader.start_workers()
            assert len(multiprocessing.active_children()) >= 2  # forked now
        loader.sampler.set_epoch(1, 1)  # a resume in the middle of epoch 1
        batches.append([batch.tolist() for batch in loader])
        reads.append(sorted(int(line) for line in log.read_text().split()))
        del loader
    assert batches[0] == batches[1] and len(batches[0]) == 2
    assert reads[0] == reads[1] == sorted(i for batch in batches[0] for i in batch)  # nothing fetched early


def test_two_stop_signals_at_once_stop_once_without_python_s_race_message():
    """SIGINT and SIGTERM pending together (a scheduler's SIGTERM and a Ctrl-C): the first stops the work, the
    second is ignored quietly, not reported as "ignored due to race condition"."""
    code = ("import os, signal\n"
            "from utils.runtime.interrupts import StoppedBySignal, stop_signals_raise\n"
            "try:\n"
            "    with stop_signals_raise():\n"
            "        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM])\n"
            "        print('not stopped')\n"
            "except StoppedBySignal as stop:\n"
            "    print('stopped once by', stop.signal_name)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("stopped once by SIG") and done.stderr == "", done
