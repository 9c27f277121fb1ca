"""Python's cyclic garbage collector around a script's run (main.py, predict.py).

The imports leave 200-300 thousand long-lived objects (torch's). Each full collection scans them all again: five
ran during the imports and one during a short training run, 0.3-0.5 s in all on a 2-core AMX Xeon. Collections are
paused while the script imports, and what the imports built is then frozen: left out of every later collection, also
in the DataLoader's forked workers, whose collections then copy fewer of the parent's pages. The few reference cycles
the imports left as garbage (about 7 thousand objects) stay frozen too: collecting them first would cost 0.1 s.
(Freezing before the interpreter's exit is :func:`utils.io.stop_signals.exit_keeping_status`'s.)
"""
import gc

__all__ = ["pause_during_imports", "freeze_imported"]


def pause_during_imports() -> None:
    """No cyclic collections until :func:`freeze_imported` (what imports build stays alive)."""
    gc.disable()


def freeze_imported() -> None:
    """Move every object alive now into the permanent generation, which collections skip; collections resume."""
    gc.freeze()
    gc.enable()
