"""Checkpoints as the original writes them (best_score a NumPy float64) load with weights_only=True; other
NumPy objects and foreign classes are still refused with one clear line."""
import argparse
import collections

import numpy as np
import pytest
import torch

from network import PretrainedWeightsError
from network.weights import read_state_dict
from tests.helpers import NUMPY1_SCALAR, NUMPY2_SCALAR, write_original_checkpoint
from utils.io.checkpoint import CheckpointError, load_checkpoint, torch_load

ORIGINAL_KEYS = {"cur_itrs", "model_state", "optimizer_state", "scheduler_state", "best_score"}


class TinySegmenter(torch.nn.Module):
    """The two parts the original's optimizer groups by (backbone at 0.1x the learning rate)."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, 4, 3)
        self.classifier = torch.nn.Conv2d(4, 2, 1)


@pytest.fixture(params=[NUMPY2_SCALAR, NUMPY1_SCALAR], ids=["numpy2_pickle", "numpy1_pickle"])
def original(request, tmp_path):
    """(path, the scalar's pickled global) for a tiny model's checkpoint in the original's format."""
    path = write_original_checkpoint(str(tmp_path / "best.pth"), TinySegmenter(),
                                     numpy1_pickle=request.param == NUMPY1_SCALAR)
    return path, request.param


def test_what_the_original_writes(original):
    path, scalar = original
    assert sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)) == [scalar.replace(" ", "."),
                                                                                 "numpy.dtype"]
    checkpoint = torch_load(path)
    assert set(checkpoint) == ORIGINAL_KEYS
    assert type(checkpoint["cur_itrs"]) is int
    assert isinstance(checkpoint["model_state"], collections.OrderedDict)
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["model_state"].values())
    assert set(checkpoint["optimizer_state"]) == {"state", "param_groups"}
    assert len(checkpoint["optimizer_state"]["param_groups"]) == 2
    assert checkpoint["scheduler_state"]["last_epoch"] == checkpoint["cur_itrs"] - 1  # saved before its step
    assert type(checkpoint["best_score"]) is np.float64 and checkpoint["best_score"] == 0.25


def test_both_readers_load_it_and_allow_nothing_for_longer(original):
    path, _ = original
    allowed = torch.serialization.get_safe_globals()
    assert load_checkpoint(path)["best_score"] == 0.25
    assert set(read_state_dict(path)) == set(TinySegmenter().state_dict())
    assert torch.serialization.get_safe_globals() == allowed


@pytest.mark.parametrize("value, refused", [
    (np.zeros(3), "numpy._core.multiarray._reconstruct"),
    (np.str_("text"), "StrDType"),
    (argparse.Namespace(lr=0.01), "argparse.Namespace"),
])
def test_other_objects_are_still_refused_in_one_line(tmp_path, value, refused):
    path = str(tmp_path / "other.pth")
    torch.save({"model_state": TinySegmenter().state_dict(), "extra": value}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"cannot read checkpoint {path}: it holds more than tensors") and "\n" not in message
    assert refused in message
    with pytest.raises(PretrainedWeightsError, match=f"cannot read weights file .*{refused}"):
        read_state_dict(path)
