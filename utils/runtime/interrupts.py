"""Stopping on SIGINT/SIGTERM: a flag that the main loop polls, and DataLoader workers that leave the decision to it.

Ctrl-C, Slurm (scancel, preemption), systemd and job runners signal every process of a job, DataLoader
workers included. A worker killed by SIGTERM makes torch raise "DataLoader worker ... is killed by
signal" in the main process, wherever it happens to be, so the run would end without its checkpoint.
"""
import atexit
import multiprocessing
import multiprocessing.util  # noqa: F401  (registers its exit hook now, so the one below runs before it)
import signal
from typing import Iterator, Optional

from torch.utils import data

__all__ = ["STOP_SIGNALS", "StopFlag", "ignore_stop_signals", "WorkerLoader"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Set by SIGINT/SIGTERM (while in its ``with`` block) so a loop can finish its step and stop cleanly."""

    def __init__(self):
        self.signal_name: Optional[str] = None

    def __call__(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopFlag":
        self._previous = {s: signal.signal(s, self) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores SIGINT/SIGTERM (dropping any held while it started)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class WorkerLoader(data.DataLoader):
    """A DataLoader whose worker processes ignore SIGINT and SIGTERM: only the main process decides to stop.

    Workers are started by ``iter()`` with the signals blocked, so one that arrives before a worker has
    set itself to ignore them cannot kill it either; the main process receives it when ``iter()`` returns.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, worker_init_fn=ignore_stop_signals, **kwargs)

    def __iter__(self) -> Iterator:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


@atexit.register
def _kill_workers_left_at_exit() -> None:
    """multiprocessing ends daemonic children at exit with SIGTERM and waits for them; workers that ignore
    SIGTERM and are still running (a crash kept their loader alive) would make it wait forever."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report the killed workers as errors
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
