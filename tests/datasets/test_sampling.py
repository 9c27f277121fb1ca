"""datasets/sampling.py: each training sample's random transforms follow its own seed and nothing else."""
import random

import torch
from torch.utils import data

from datasets.sampling import SeededSamples


class _Draws(data.Dataset):
    """Items that are random draws, as random crops and flips are."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return torch.rand(2), random.random()


def test_a_sample_s_seed_leaves_the_caller_s_streams_and_the_gpus_alone(monkeypatch):
    """With --num_workers 0 the samples are drawn in the training process, whose GPU dropout must not restart
    from each sample's seed (no GPU here: the GPU seeding calls are recorded)."""
    torch.manual_seed(0)
    random.seed(0)
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", seeded.append)
    samples = SeededSamples(_Draws(), seed=3)
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    first, again, next_epoch = samples[0, 1], samples[0, 1], samples[1, 1]
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert not torch.equal(first[0], next_epoch[0]) and first[1] != next_epoch[1]
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    assert seeded == []
