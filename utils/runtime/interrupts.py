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
import signal
import sys
from typing import Iterator, Optional

from torch.utils import data

__all__ = ["STOP_SIGNALS", "STOPPED_BY_SIGNAL_EXIT", "StopFlag", "StoppedBySignal", "stop_signals_raise",
           "ignore_stop_signals", "WorkerLoader"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOPPED_BY_SIGNAL_EXIT = 128  # + the signal number: the status a shell reports for a command a signal ended


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


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise :class:`StoppedBySignal`; a StopFlag inside the block takes
    them over for its own."""
    def raise_stop(signum, frame):
        raise StoppedBySignal(signum)

    previous = {signum: signal.signal(signum, raise_stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
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
