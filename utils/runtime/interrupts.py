"""Stopping on SIGINT/SIGTERM: a flag that the main loop polls, DataLoader workers that leave the decision to it, and
an exception for the rest of a run (setting up, a --test_only evaluation), where there is no step to finish first.

Ctrl-C, Slurm (scancel, preemption), systemd and job runners signal every process of a job, DataLoader
workers included. A worker killed by SIGTERM makes torch raise "DataLoader worker ... is killed by
signal" in the main process, wherever it happens to be, so the run would end without its checkpoint.
"""
import atexit
import contextlib
import multiprocessing
import multiprocessing.util  # noqa: F401  (registers its exit hook now, so the one below runs before it)
import re
import signal
import sys
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from torch.utils import data

from utils.io.atomic import path_state
from utils.io.stop_signals import (STOP_SIGNALS, STOPPED_BY_SIGNAL_EXIT, after_start, stop_signals_blocked,
                                   stop_signals_held)

__all__ = ["StopFlag", "StoppedBySignal", "stop_signals_raise", "run_stoppable", "ignore_stop_signals", "WorkerLoader",
           "worker_death"]

# How PyTorch reports a DataLoader worker that died (raised in the main process wherever it happens to be).
_WORKER_DEATH = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) (?:is killed by signal: ([^.\n]+)|exited)")


class StopFlag:
    """Set by SIGINT/SIGTERM (while in its ``with`` block) so a loop can finish its step and stop cleanly. The first
    signal names the stop, as for :class:`StoppedBySignal`."""

    def __init__(self):
        self.signal_name: Optional[str] = None

    def __call__(self, signum, frame) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def __enter__(self) -> "StopFlag":
        self._previous = set_handlers(dict.fromkeys(STOP_SIGNALS, self))
        return self

    def __exit__(self, *exc) -> None:
        set_handlers(self._previous)


def set_handlers(handlers: Dict[int, Any]) -> Dict[int, Any]:
    """Give each signal its handler, none arriving in between (a half-done swap); returns the handlers before, to
    restore (Python's defaults where a script's start-up handler was)."""
    with stop_signals_blocked():
        return {signum: after_start(signum, signal.signal(signum, handler)) for signum, handler in handlers.items()}


class StoppedBySignal(BaseException):
    """SIGINT or SIGTERM where no loop polls a :class:`StopFlag`: raised wherever the program is, so that its
    ``finally`` blocks and atomic writes clean up (a BaseException, like KeyboardInterrupt: no ``except Exception``
    swallows it)."""

    def __init__(self, signum: int):
        self.signal_name = signal.Signals(signum).name
        self.exit_status = STOPPED_BY_SIGNAL_EXIT + signum
        super().__init__(self.signal_name)

    def say(self, what: str) -> int:
        """Print the one line that ends the run, ``what`` saying what is (not) written; the exit status for it."""
        print(f"{self.signal_name} received: stopped; {what}", file=sys.stderr)
        return self.exit_status

    def say_about(self, output: str, before: Optional[Tuple[int, int, int]]) -> int:
        """:meth:`say` for a run that writes ``output`` in one commit (``before``: its :func:`path_state` when the
        run began): whether the signal came before it or after."""
        written = path_state(output) != before
        return self.say(f"{output} had been written in full" if written else f"nothing was written to {output}")


def _ignore(signum: int, frame: Any) -> None:
    """A stop signal after the first, while the program cleans up: ignored. A handler, not SIG_IGN: a second signal
    already on its way when the first one's handler runs would otherwise make Python print that it was "ignored
    due to race condition"."""


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise :class:`StoppedBySignal`, once: later ones are ignored while
    the program cleans up, until the block ends; whatever error leaves the block after one is that stop. A StopFlag
    inside the block takes them over for its own."""
    received = []

    def raise_stop(signum, frame):
        set_handlers(dict.fromkeys(STOP_SIGNALS, _ignore))  # once: a second Ctrl-C cuts no clean-up short
        received.append(signum)
        raise StoppedBySignal(signum)

    previous = set_handlers(dict.fromkeys(STOP_SIGNALS, raise_stop))
    try:
        yield
    except BaseException as exc:
        if received and not isinstance(exc, StoppedBySignal):  # code it cut short failed (an import half done,
            raise StoppedBySignal(received[0]) from exc       # a library that wrapped it in its own error)
        raise
    finally:
        set_handlers(previous)


def run_stoppable(work: Callable[[], int], said: Callable[[StoppedBySignal], int]) -> int:
    """``work()``'s exit status; a SIGINT or SIGTERM while it runs ends it with ``said(stop)``, which prints the one
    line that says what was (not) written (:meth:`StoppedBySignal.say`, :meth:`StoppedBySignal.say_about`)."""
    try:
        with stop_signals_raise():
            return work()
    except StoppedBySignal as stop:
        return said(stop)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores SIGINT/SIGTERM (dropping any held while it started)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class WorkerLoader(data.DataLoader):
    """A DataLoader whose worker processes ignore SIGINT and SIGTERM: only the main process decides to stop.

    Workers are forked by ``iter()`` with the signals blocked and inherit that: one that arrives before a worker has
    set itself to ignore them (PyTorch's worker first sets its own SIGTERM handler, which dies of a signal from
    another process) cannot kill it either; the main process receives it when ``iter()`` returns.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, worker_init_fn=ignore_stop_signals, **kwargs)

    def __iter__(self) -> Iterator:
        with stop_signals_held(), stop_signals_blocked():
            return super().__iter__()

    def start_workers(self) -> None:
        """Start the persistent worker processes now, idle, while this process is small. Forked after a model whose
        weights are in this process's memory (on the CPU), they would share them copy-on-write, and the first
        training step, which writes every weight, would pay for copying them: 1.1 s more for HRNet-48's first step
        on 2 cores of an AMX Xeon. predict.py paid for every page it wrote after the fork: 30 HRNet-48 predictions
        took 11.2-12.0 instead of 9.9-10.6 s there. They are given nothing to fetch until the first iteration."""
        if not self.persistent_workers or self.batch_sampler is None:
            return
        batches = self.batch_sampler
        sampler, batches.sampler = batches.sampler, ()  # an epoch of no batches: nothing is queued
        try:
            iter(self)
        finally:
            batches.sampler = sampler


def worker_death(exc: Optional[BaseException]) -> Optional[str]:
    """One line for PyTorch's error about a DataLoader worker that died (the kernel's out-of-memory killer, a
    ``kill -9``), whether ``exc`` is that error or was raised from it (a checkpoint's reader wraps what interrupts
    it); None otherwise."""
    while exc is not None:
        match = _WORKER_DEATH.search(str(exc)) if isinstance(exc, RuntimeError) else None
        if match:
            how = f"was killed by signal {match.group(2).strip()}" if match.group(2) else "exited unexpectedly"
            return (f"a DataLoader worker (pid {match.group(1)}) {how}; if the system ran out of memory (`dmesg` "
                    "shows the out-of-memory killer), run with a lower --num_workers")
        exc = exc.__cause__
    return None


@atexit.register
def _kill_workers_left_at_exit() -> None:
    """multiprocessing ends daemonic children at exit with SIGTERM and waits for them; workers that ignore
    SIGTERM and are still running (a crash kept their loader alive) would make it wait forever."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report the killed workers as errors
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
