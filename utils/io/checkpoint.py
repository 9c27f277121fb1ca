"""Checkpoints in the original's format, written atomically and read with ``weights_only=True``.

Reading also accepts NumPy number scalars: the original saved ``best_score`` as one (see
``NUMPY_SCALAR_GLOBALS``). Every reader of a ``.pth`` file goes through :func:`torch_load`.

The dict keeps the original's keys (``cur_itrs``, ``model_state``, ``optimizer_state``,
``scheduler_state``, ``best_score``) so tools written for it read ours; new keys are added beside them.
"""
import contextlib
import os
import random
import re
import zipfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from utils.io.atomic import atomic_link, atomic_write, missing_file, write_advice

__all__ = ["CheckpointError", "NUMPY_SCALAR_GLOBALS", "torch_load", "file_problem", "describe_load_error",
           "save_checkpoint", "share_checkpoint", "load_checkpoint", "extract_model_state", "load_model_state",
           "capture_rng_state", "restore_rng_state", "restore_process_rng_state"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_PROTOCOL_OPCODE = 0x80
# The format before it: a pickle of this magic number, then the data (the original's era still wrote it).
_LEGACY_MAGIC = bytes([_PICKLE_PROTOCOL_OPCODE, 2, 0x8A, 10]) + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_numpy_scalar = np.float64(0).__reduce__()[0]  # multiarray.scalar, wherever the installed NumPy keeps it
_NUMERIC_TYPECODES = "?" + np.typecodes["AllInteger"] + np.typecodes["AllFloat"]

NUMPY_SCALAR_GLOBALS = [
    # The original's main.py saves best_score = np.nanmean(...), a NumPy float64, so its best_*.pth files
    # hold a NumPy scalar. Its pickle names multiarray.scalar by the module path of the NumPy that wrote it;
    # torch matches globals by that string, so both spellings map to the installed function.
    (_numpy_scalar, "numpy.core.multiarray.scalar"),  # NumPy 1.x
    (_numpy_scalar, "numpy._core.multiarray.scalar"),  # NumPy 2.x
    np.dtype,  # the scalar's dtype is rebuilt by calling np.dtype('f8', ...) ...
    *dict.fromkeys(type(np.dtype(code)) for code in _NUMERIC_TYPECODES),  # ... then set up through its class
]
"""What ``weights_only`` loading accepts beyond tensors and plain data: numeric NumPy scalars, no arrays."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    """Write ``state`` to ``path`` atomically and synced to disk: a crash never leaves half a file.

    A write that fails (a full disk, a folder that became read-only) is a CheckpointError saying so; the
    previous file at ``path`` is left as it was.
    """
    with _write_errors(path):
        with atomic_write(path, sync=True) as f:
            torch.save(state, f)


def share_checkpoint(source: str, path: str) -> None:
    """Make checkpoint ``path`` hold what checkpoint ``source`` holds, without writing the weights again (a hard
    link where the file system has them, else a synced copy); atomic, with errors as :func:`save_checkpoint`'s."""
    with _write_errors(path):
        atomic_link(source, path, sync=True)


@contextlib.contextmanager
def _write_errors(path: str) -> Iterator[None]:
    """An OSError while ``path`` is written (torch wraps some in a RuntimeError) as a CheckpointError that says what
    happened, that the previous file is unchanged, and what to do."""
    existed = os.path.isfile(path)
    try:
        yield
    except (OSError, RuntimeError) as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        kept = f"the previous {os.path.basename(path)} is unchanged" if existed else "no file was left behind"
        advice = write_advice(cause, os.path.dirname(os.path.abspath(path)))
        raise CheckpointError(f"cannot write checkpoint {path}: {cause.strerror or cause}; {kept}; {advice}") from exc


def _os_error(exc: BaseException) -> Optional[OSError]:
    """The OSError behind ``exc``: itself, or what torch's writer wrapped into a RuntimeError."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def torch_load(path: str, mmap: bool = False) -> Any:
    """``torch.load`` onto the CPU with ``weights_only=True``: tensors, plain data and NumPy scalars only.
    ``mmap`` maps the tensors instead of reading them (for a look at the other entries); files in the format
    before PyTorch 1.6, which cannot be mapped, are read whole, and so are files whose path is not UTF-8 (torch
    maps by a UTF-8 name)."""
    mmap = mmap and _utf8(path) and zipfile.is_zipfile(path)
    with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, which os.fsdecode keeps as surrogates
        return False
    return True


def file_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a ``torch.save`` file, judged from its kind, size and first bytes; None if it may be.

    The phrase completes "checkpoint PATH ...". It catches what torch reports cryptically: a folder, an empty
    or truncated file, a zip or pickle that torch did not write, a text file.
    """
    missing = missing_file(path)
    if missing:
        inside = sorted(f for f in os.listdir(path) if f.endswith((".pth", ".pt"))) if os.path.isdir(path) else []
        return missing + (f"; it holds {', '.join(inside[:3])}" if inside else "")
    if os.path.getsize(path) == 0:
        return "is empty (0 bytes): an interrupted save or copy? copy it again"
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return "is a truncated or damaged zip (an interrupted save or copy?); copy it again"
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                return "is a zip archive but not a PyTorch file (no data.pkl inside)"
        return None
    if head == _LEGACY_MAGIC:
        return None
    if head[0] == _PICKLE_PROTOCOL_OPCODE:
        return "is a plain pickle, not a torch.save file; load it in Python and save it again with torch.save"
    return f"is not a PyTorch file (it starts with {head[:12]!r})"


def describe_load_error(exc: Exception) -> str:
    """Why :func:`torch_load` failed, in one line: the refused object when there is one, else a damaged file."""
    text = str(exc).strip()
    refused = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\.?$)", text, re.MULTILINE)
    if refused:
        return (f"it holds more than tensors, plain data and NumPy numbers, which weights_only loading refuses "
                f"({refused.group(1)})")
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{first} (truncated, or not a PyTorch file?)"


def load_checkpoint(path: str, mmap: bool = False) -> Dict[str, Any]:
    """Read a checkpoint (or a raw state_dict) from ``path`` on the CPU with :func:`torch_load` (``mmap``: see there)."""
    problem = file_problem(path)
    if problem:
        raise CheckpointError(f"checkpoint {path} {problem} (check --ckpt)")
    try:
        obj = torch_load(path, mmap)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {describe_load_error(exc)}") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return dict(obj)


def extract_model_state(checkpoint: Mapping[str, Any], path: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The model weights of an original-style checkpoint or a raw state_dict, without ``module.`` prefixes."""
    state = checkpoint.get("model_state", checkpoint)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no model weights (expected 'model_state' or a state_dict)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _head_keys(model: nn.Module) -> List[str]:
    """State keys of the final 1x1 classifier conv, the only layer whose shape depends on num_classes."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    return [f"{last}.{p}" for p, _ in model.get_submodule(last).named_parameters()]


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str = "checkpoint") -> List[str]:
    """Load ``state`` strictly, except that a classifier built for another class count is left initialised.

    Returns the re-initialised keys (empty when everything loaded). Any other difference is a
    CheckpointError that names the file and the first offending keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    head = _head_keys(model)
    reinit = [k for k in mismatched if k in head]
    others = [k for k in mismatched if k not in head]
    if missing or unexpected or others:
        parts = [f"{label} {keys[:3]}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", others)) if keys]
        raise CheckpointError(f"checkpoint {path} does not fit this model ({'; '.join(parts)}); "
                              "was it trained with another --model or --separable_conv?")
    model.load_state_dict({k: v for k, v in state.items() if k not in reinit}, strict=False)
    return reinit


def capture_rng_state(device: torch.device) -> Dict[str, Any]:
    """Python, NumPy and torch RNG states, in types ``weights_only`` loading accepts; on a GPU ``device`` also
    that GPU's (only the one this process uses: a resume may see fewer GPUs)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Set the states :func:`capture_rng_state` took; the GPU's only when ``device`` is a GPU. Checkpoints of
    versions before 9 December hold one state per GPU the process saw: ``device``'s is taken, or the first when it
    saw fewer."""
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device.type == "cuda" and cuda is not None:
        index = torch.cuda.current_device() if device.index is None else device.index
        if isinstance(cuda, (list, tuple)):
            cuda = cuda[index] if index < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda, device)


def restore_process_rng_state(checkpoint: Mapping[str, Any], rank: int, world_size: int,
                              device: torch.device) -> Optional[str]:
    """Restore this process's RNG state from ``checkpoint['rng_states']`` (one per process, by rank), for a run
    on ``device``.

    Checkpoints of another process count, or with only ``rng_state`` (process 0's, as older versions saved),
    give every process process 0's state; the returned note says so. None when the state was this process's.
    """
    states = checkpoint.get("rng_states") or [checkpoint["rng_state"]]
    if len(states) == world_size:
        restore_rng_state(states[rank], device)
        return None
    restore_rng_state(states[0], device)
    return (f"the checkpoint holds the random state of {len(states)} process(es) and this run has {world_size}: "
            "every process continues from process 0's (the run is not bit-for-bit an uninterrupted one)")


def _as_tuple(value: Any) -> Tuple:
    """Python's RNG state must be nested tuples; serialisation may hand back lists."""
    return tuple(_as_tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
