"""The stop signals (SIGINT: Ctrl-C; SIGTERM: schedulers, ``kill``) and a block that holds them back, so that what
must not be cut in half (the renames that commit a write, a swap of their handlers) runs whole."""
import contextlib
import os
import signal
from typing import Any, Iterator

__all__ = ["STOP_SIGNALS", "STOPPED_BY_SIGNAL_EXIT", "stop_signals_held", "stop_quietly_while_starting",
           "after_start", "starting_handlers_gone"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOPPED_BY_SIGNAL_EXIT = 128  # + the signal number: the status a shell reports for a command a signal ended
PYTHON_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


def _stopped_while_starting(signum: int, frame: Any) -> None:
    """The start-up handler: one line and the exit status of a stop, at once (nothing has been written yet)."""
    os.write(2, f"{signal.Signals(signum).name} received while starting: stopped; nothing was written\n".encode())
    os._exit(STOPPED_BY_SIGNAL_EXIT + signum)


def stop_quietly_while_starting() -> None:
    """For a script's first lines, before torch loads (seconds): a stop signal then ends it in one line, not in a
    KeyboardInterrupt traceback from inside an import. The script's own handling takes over when it starts."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stopped_while_starting)


def after_start(signum: int, handler: Any) -> Any:
    """``handler``, a handler to restore later, with Python's default in place of the start-up one: once a script's
    own handling has taken over, its start is over."""
    return PYTHON_DEFAULTS[signum] if handler is _stopped_while_starting else handler


def starting_handlers_gone() -> None:
    """Python's default handling for the stop signals that the start-up handler still holds (a process that leaves
    them to the defaults: torchrun's processes other than 0)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, after_start(signum, signal.getsignal(signum)))


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Block SIGINT and SIGTERM for this thread while the block runs; one that came meanwhile is delivered (and its
    handler runs) when the block ends. Other threads of the process keep their own mask."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
