"""The stop signals (SIGINT: Ctrl-C; SIGTERM: schedulers, ``kill``) and a block that holds them back, so that what
must not be cut in half (the renames that commit a write, a swap of their handlers) runs whole."""
import contextlib
import gc
import os
import signal
import sys
import threading
from typing import Any, Iterator, NoReturn

__all__ = ["STOP_SIGNALS", "STOPPED_BY_SIGNAL_EXIT", "stop_signals_blocked", "stop_signals_held",
           "stop_quietly_while_starting", "after_start", "starting_handlers_gone", "exit_keeping_status"]

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
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM for this thread while the block runs; one sent to it meanwhile is delivered (and its
    handler runs) when the block ends. The kernel may give a signal sent to the process to another thread:
    :func:`stop_signals_held` waits for those too."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs: one that comes meanwhile is raised again when it ends,
    for the handler in place then. In the main thread the handlers wait too, since the kernel may give a signal to
    any thread of the process (torch's, a DataLoader's) and Python runs the handler in the main thread at once."""
    if threading.current_thread() is not threading.main_thread() or None in map(signal.getsignal, STOP_SIGNALS):
        with stop_signals_blocked():  # only the main thread can swap handlers, and only those set from Python
            yield
        return
    came = []
    with stop_signals_blocked():
        handlers = {signum: signal.signal(signum, lambda signum, frame: came.append(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        with stop_signals_blocked():
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        for signum in dict.fromkeys(came):  # each once, in the order they came
            signal.raise_signal(signum)


def exit_keeping_status(status: int) -> NoReturn:
    """End a script with ``status``: its run is over and its last line printed (a stop's too). A stop while the
    interpreter shuts down (torch's teardown takes up to a second, a hung one longer) ends it at once with that
    same status, instead of turning it into 130 or 143 without a word or killing it with the default action.
    Objects are frozen first, so the exit frees them without a last collection (reference cycles still alive then
    are not finalised; the scripts close their files and writers before this)."""
    def end_now(signum: int, frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
                pass
        os._exit(status)

    for signum in STOP_SIGNALS:
        signal.signal(signum, end_now)
    gc.freeze()  # the exit then frees objects without scanning them all for cycles: 0.5 s less after a training run
    sys.exit(status)
