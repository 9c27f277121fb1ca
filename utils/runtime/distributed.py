"""torchrun support: process-group set-up from the environment, rank-0 helpers and reductions.

Launched plainly (no ``WORLD_SIZE`` in the environment) everything here is a no-op for one process.
"""
import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from utils.runtime.device import DeviceError, resolve_device

__all__ = ["DistEnv", "init_distributed", "cleanup", "barrier", "node_main_first", "from_process_zero",
           "gather_to_process_zero", "broadcast_buffers_", "all_reduce_sum_", "reduce_step_flags"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        """The first process of its machine (each node of a multi-node run has one)."""
        return self.local_rank == 0


def process_gpu(local_rank: int, visible: int) -> int:
    """The GPU index of the process of ``local_rank`` on its machine: torchrun shows each process every GPU, so its
    local rank; a launcher that shows each its own GPU alone (SLURM's GPU binding) makes it 0. DeviceError when a
    process's local rank has no GPU among several (two processes on one GPU would fail in NCCL; where each sees one
    GPU, this process cannot tell whether the others see the same one)."""
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise DeviceError(f"process {local_rank} of this machine has no GPU of its own: {visible} are visible; start "
                          f"at most {visible} processes per machine (--nproc_per_node {visible})")
    return local_rank


def init_distributed(device_choice: str, gpu_id: str, timeout_s: float) -> "tuple[DistEnv, torch.device]":
    """Join the process group torchrun describes (NCCL on CUDA, Gloo on CPU); one device per local rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(), resolve_device(device_choice, gpu_id)
    env = DistEnv(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    device = resolve_device(device_choice, gpu_id)
    if device.type == "cuda":
        device = torch.device("cuda", process_gpu(env.local_rank, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)  # NCCL: bound to this GPU
    return env, device


def _initialized() -> bool:
    """Whether this process is part of a process group (False when launched without torchrun)."""
    return dist.is_available() and dist.is_initialized()


def cleanup() -> None:
    if _initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (nothing to do for one process)."""
    if _initialized():
        dist.barrier()


@contextlib.contextmanager
def node_main_first(env: DistEnv) -> Iterator[None]:
    """Run the block in the first process of every machine before the others run it.

    For work that fills a per-machine cache or folder (downloads, generated data): the first process does
    it, the rest find it done. Every process must enter the block; it costs one barrier.
    """
    if not env.is_node_main:
        barrier()
    yield
    if env.is_node_main:
        barrier()


def from_process_zero(make: Callable[[], T], device: torch.device) -> T:
    """``make()`` run on process 0 alone, its result sent (pickled) to every process; one process just runs it.
    An exception ``make()`` raises is raised on every process.

    For files that only process 0's machine has, such as the checkpoints it wrote.
    """
    if not _initialized():
        return make()
    box = [None]
    if dist.get_rank() == 0:
        try:
            box = [(True, make())]
        except Exception as exc:  # sent too: every process stops with it, none waits for a result never coming
            box = [(False, exc)]
    dist.broadcast_object_list(box, src=0, device=device)
    made, value = box[0]
    if not made:
        raise value
    return value


def gather_to_process_zero(obj: T) -> Optional[List[T]]:
    """Every process's ``obj`` (pickled), in rank order, on process 0 and None on the others; ``[obj]`` for one
    process. Every process must call it."""
    if not _initialized():
        return [obj]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_buffers_(module: torch.nn.Module) -> None:
    """Copy process 0's buffers (BatchNorm running statistics) to every process, in place."""
    if _initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (nothing to do for one process)."""
    if _initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduce_step_flags(loss: float, flags: Sequence[bool], device: torch.device) -> "tuple[float, list]":
    """One collective per step: the mean loss over processes, and each flag OR-ed over processes.

    Every process then takes the same decision (stop on NaN, stop on a signal) at the same step.
    """
    values = torch.tensor([0.0 if loss != loss else loss, *[float(f) for f in flags]], dtype=torch.float64,
                          device=device)
    all_reduce_sum_(values)
    world = dist.get_world_size() if _initialized() else 1
    return float(values[0]) / world, [bool(v > 0) for v in values[1:].tolist()]
