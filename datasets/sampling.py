"""Reproducible sampling: batch order and augmentation depend on (seed, epoch, sample) only.

So a run gives the same batches with any number of DataLoader workers or processes, and a resumed
run continues with exactly the batches an uninterrupted run would have seen.
"""
import random
from typing import Iterator, List

import numpy as np
import torch
from torch.utils import data

__all__ = ["ShardedRandomSampler", "ShardSampler", "SeededSamples"]


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike ``hash``)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ShardedRandomSampler(data.Sampler):
    """Per-epoch permutation of full global batches, split across processes; can start mid-epoch.

    Global batch ``b`` is ``perm[b*B:(b+1)*B]``; process ``r`` of ``W`` takes its positions ``r, r+W, ...``
    so the union over processes is the global batch. The partial last batch is dropped. Yields
    ``(epoch, index)`` keys for :class:`SeededSamples`, so the epoch reaches persistent workers too.
    """

    def __init__(self, length: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if global_batch % world_size:
            raise ValueError(f"the global batch {global_batch} must be divisible by the {world_size} processes")
        self.length, self.global_batch = length, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.length // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(self.length, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch)))
        used = perm[self.start_batch * self.global_batch: self.batches_per_epoch * self.global_batch]
        return iter([(self.epoch, i) for i in used[self.rank::self.world_size].tolist()])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.global_batch // self.world_size


class ShardSampler(data.Sampler):
    """Every ``world_size``-th index starting at ``rank``, in order, without padding: each sample once overall."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices: List[int] = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededSamples(data.Dataset):
    """Wrap a dataset, indexed by ``(epoch, index)``, so each item's augmentation is seeded by (seed, epoch, index).

    The caller's own random streams (Python's and torch's) are left as they were.
    """

    def __init__(self, dataset: data.Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        seed = _mix(self.seed, epoch, index)
        python_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            torch.default_generator.manual_seed(seed)  # the CPU's alone: torch.manual_seed would reseed the GPUs too
            item = self.dataset[index]
        random.setstate(python_state)
        return item

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
