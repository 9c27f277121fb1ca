"""What ``--continue_training`` takes from its checkpoint: the run's settings, except those the user gives again.

A checkpoint records the settings of its run under :data:`SETTINGS_KEY` (beside the original's five keys, which
stay as they were). The original's checkpoints, and this project's before the record, hold no record: their
optimizer and scheduler state still tell the learning rate, the weight decay and the schedule
(:func:`recorded_settings`), which is what the original restored; every other setting is then this run's.
"""
import argparse
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from utils.config import given

__all__ = ["SETTINGS_KEY", "RESUMED_OPTIONS", "settings_record", "recorded_settings", "apply_recorded_settings",
           "flags"]

SETTINGS_KEY = "training_options"
RESUMED_OPTIONS = (
    # the optimisation and its schedule (the first four are also in the original's optimizer and scheduler state)
    "total_itrs", "step_size", "lr", "weight_decay", "lr_policy", "bn_momentum",
    # the batches
    "batch_size", "crop_size", "random_seed",
    # the loss
    "loss_type", "class_weights", "focal_gamma", "ohem_thresh", "ohem_min_kept", "dice_weight",
    # the data, the validations that choose best_*, and where the run writes
    "dataset", "data_root", "year", "val_interval", "crop_val", "eval_scales", "eval_flip", "eval_slide", "window",
    "stride", "checkpoint_dir", "results_dir",
)
"""The options a resumed run takes from its checkpoint unless given on the command line or in --config. Left out:
the machine's (device, precision, memory layout, workers, compile), the display's (log interval, dashboards), and
the architecture, which comes from the checkpoint anyway (network.trained_model)."""


def settings_record(opts: argparse.Namespace) -> Dict[str, Any]:
    """The values of :data:`RESUMED_OPTIONS` in ``opts``, as a checkpoint stores them (plain data)."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in ((name, getattr(opts, name)) for name in RESUMED_OPTIONS)}


def _from_optimization_state(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings that an optimizer and scheduler state (the original's PolyLR or StepLR) hold."""
    scheduler = checkpoint.get("scheduler_state") or {}
    groups = (checkpoint.get("optimizer_state") or {}).get("param_groups") or []
    found: Dict[str, Any] = {}
    if "max_iters" in scheduler:
        found.update(lr_policy="poly", total_itrs=int(scheduler["max_iters"]))
    elif "step_size" in scheduler:
        found.update(lr_policy="step", step_size=int(scheduler["step_size"]))
    if scheduler.get("base_lrs"):
        found["lr"] = float(scheduler["base_lrs"][-1])  # the head's; the backbone's is a fixed fraction of it
    if groups:
        found["weight_decay"] = float(groups[-1]["weight_decay"])
    return found


def recorded_settings(checkpoint: Mapping[str, Any]) -> Tuple[Dict[str, Any], bool]:
    """(the settings ``checkpoint`` holds, whether it has a record of them): the record, else what its optimizer
    and scheduler state tell."""
    record = checkpoint.get(SETTINGS_KEY)
    if isinstance(record, Mapping):
        return {name: record[name] for name in RESUMED_OPTIONS if name in record}, True
    return _from_optimization_state(checkpoint), False


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(_shown, value))
    return str(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def apply_recorded_settings(opts: argparse.Namespace,
                            recorded: Mapping[str, Any]) -> Tuple[List[str], List[str], List[str]]:
    """Set each option of :data:`RESUMED_OPTIONS` that the user did not give to its ``recorded`` value.

    Returns what to report: the options given with another value than recorded ("--lr 0.02 -> 0.01"), those
    taken from the record that differ from this run's default ("--lr 0.02"), and the names the record lacks
    (this run's values stay).
    """
    changed, taken, missing = [], [], []
    for name in RESUMED_OPTIONS:
        current = getattr(opts, name)
        if name not in recorded:
            missing.append(name)
        elif given(opts, name):
            if not _same(current, recorded[name]):
                changed.append(f"--{name} {_shown(recorded[name])} -> {_shown(current)}")
        elif not _same(current, recorded[name]):
            taken.append(f"--{name} {_shown(recorded[name])}")
            setattr(opts, name, recorded[name])
    return changed, taken, missing


def flags(names: Sequence[str]) -> str:
    """``names`` as the flags a user types: '--a, --b'."""
    return ", ".join(f"--{name}" for name in names)
