"""--continue_training takes the settings of the run it resumes from its checkpoint: the command that main.py
prints when stopped (--ckpt ... --continue_training, nothing else) continues that run as it was; a value given
again, on the command line or in --config, is applied and said."""
import shutil

import pytest
import torch

import main as train_script
from tests.helpers import write_voc
from utils.runtime.resume import SETTINGS_KEY

MODEL = "deeplabv3plus_mobilenet"


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """A run of 2 iterations with settings other than the defaults: (root, a copy of its latest checkpoint)."""
    root = tmp_path_factory.mktemp("resume")
    write_voc(root / "data", names_train=[f"t{i}" for i in range(6)], names_val=["v0"], size=(48, 40))
    assert train_script.main(["--data_root", str(root / "data"), "--model", MODEL, "--no-pretrained_backbone",
                              "--num_workers", "0", "--checkpoint_dir", str(root / "ck"), "--results_dir",
                              str(root / "res"), "--lr", "0.02", "--weight_decay", "5e-4", "--batch_size", "3",
                              "--crop_size", "32", "--total_itrs", "2", "--val_interval", "2"]) == 0
    start = root / "start.pth"
    shutil.copy(root / "ck" / f"latest_{MODEL}_voc_os16.pth", start)
    return root, str(start)


def _resumed(root):
    return torch.load(root / "ck" / f"latest_{MODEL}_voc_os16.pth", weights_only=True)


def test_the_printed_resume_command_continues_the_run_as_it_was(started, capsys, monkeypatch):
    root, start = started
    monkeypatch.chdir(root)  # another folder: the data and output folders come from the checkpoint too
    capsys.readouterr()
    assert train_script.main(["--ckpt", start, "--continue_training", "--total_itrs", "3", "--num_workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "Resuming with this run's settings from iteration 3: --total_itrs 2 -> 3\n" in out
    taken = next(line for line in out.splitlines() if line.startswith(f"Settings from {start}"))
    for setting in ("--lr 0.02", "--weight_decay 0.0005", "--batch_size 3", "--crop_size 32", "--val_interval 2",
                    f"--data_root {root / 'data'}", f"--checkpoint_dir {root / 'ck'}"):
        assert setting in taken
    assert "global batch 3 = 1 x 3" in out
    resumed = _resumed(root)
    assert resumed["cur_itrs"] == 3
    groups = resumed["optimizer_state"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.002, 0.02])  # not the default 0.01
    assert [g["weight_decay"] for g in groups] == [5e-4, 5e-4]
    assert resumed[SETTINGS_KEY]["batch_size"] == 3 and resumed[SETTINGS_KEY]["total_itrs"] == 3


def test_values_given_again_are_applied_and_said(started, tmp_path, capsys):
    root, start = started
    config = tmp_path / "more.yaml"
    config.write_text("lr: 0.05\n")
    assert train_script.main(["--config", str(config), "--ckpt", start, "--continue_training", "--total_itrs", "3",
                              "--batch_size", "2", "--num_workers", "0"]) == 0
    out = capsys.readouterr().out
    assert ("Resuming with this run's settings from iteration 3: --total_itrs 2 -> 3, --lr 0.02 -> 0.05, "
            "--batch_size 3 -> 2\n") in out
    assert "global batch 2 = 1 x 2" in out
    resumed = _resumed(root)
    assert [g["initial_lr"] for g in resumed["optimizer_state"]["param_groups"]] == pytest.approx([0.005, 0.05])
    assert resumed[SETTINGS_KEY]["batch_size"] == 2 and resumed[SETTINGS_KEY]["lr"] == 0.05


def test_a_weights_only_file_cannot_be_resumed(started, tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    torch.save({"model_state": torch.load(started[1], weights_only=True)["model_state"]}, weights)
    assert train_script.main(["--ckpt", str(weights), "--continue_training", "--results_dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"error: --continue_training needs a full training checkpoint; {weights} holds "
                                       "only weights (start a new run from them with --init_from)\n")
