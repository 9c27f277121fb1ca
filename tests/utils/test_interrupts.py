"""Stop signals outside a training loop: raised once as StoppedBySignal, ignored while the program cleans up, held
back while a write commits, and the handlers before them restored."""
import signal

import pytest

from utils.io.stop_signals import stop_signals_held
from utils.runtime.interrupts import StoppedBySignal, stop_signals_raise


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
