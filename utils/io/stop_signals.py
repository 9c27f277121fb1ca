"""The stop signals (SIGINT: Ctrl-C; SIGTERM: schedulers, ``kill``) and a block that holds them back, so that what
must not be cut in half (the renames that commit a write, a swap of their handlers) runs whole."""
import contextlib
import signal
from typing import Iterator

__all__ = ["STOP_SIGNALS", "stop_signals_held"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Block SIGINT and SIGTERM for this thread while the block runs; one that came meanwhile is delivered (and its
    handler runs) when the block ends. Other threads of the process keep their own mask."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
