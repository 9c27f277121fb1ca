"""main.py on tiny data: train, checkpoint, resume, interrupt, evaluate, configs and bad input."""
import functools
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main as train_script
import network
from datasets import VOCSegmentation, make_demo_dataset
from metrics import StreamSegMetrics
from tests.conftest import ROOT
from tests.helpers import signal_group_when, write_voc
from utils import ext_transforms as et
from utils.constants import IMAGENET_MEAN, IMAGENET_STD

MODEL = "deeplabv3plus_mobilenet"


@pytest.fixture
def voc(tmp_path):
    write_voc(tmp_path / "data", names_train=[f"t{i}" for i in range(6)], names_val=["v0", "v1", "v2"],
              size=(48, 40))
    return tmp_path


def _args(root, *extra):
    return ["--data_root", str(root / "data"), "--dataset", "voc", "--model", MODEL, "--output_stride", "16",
            "--no-pretrained_backbone", "--crop_size", "32", "--batch_size", "2", "--num_workers", "0",
            "--checkpoint_dir", str(root / "ck"), "--results_dir", str(root / "res"), "--print_interval", "1",
            *extra]


def _sigterm_in_step(monkeypatch, step: int):
    """Send this process SIGTERM during training step ``step`` (as a scheduler would); returns the real step."""
    calls = []
    real_step = train_script.forward_loss

    def step_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_script, "forward_loss", step_then_sigterm)
    return real_step


def _ckpt(root, kind="latest"):
    return str(root / "ck" / f"{kind}_{MODEL}_voc_os16.pth")


def test_train_writes_original_format_checkpoints_and_resumes(voc, capsys):
    assert train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "2")) == 0
    out = capsys.readouterr().out
    assert "images/s" in out and "lr=" in out and "background" in out  # log line and class IoU table
    report = out[out.index("\nTime: "):]  # the time report ends the run
    for phase in ("start-up", "warm-up steps", "evaluation", "checkpoint writes", "peak resident memory"):
        assert phase in report
    latest = torch.load(_ckpt(voc), weights_only=True)
    assert {"cur_itrs", "model_state", "optimizer_state", "scheduler_state", "best_score"} <= set(latest)
    assert latest["class_names"][:2] == ["background", "aeroplane"]  # what predict.py and the export draw with
    assert latest["palette"][:2] == [[0, 0, 0], [128, 0, 0]] and len(latest["palette"]) == 21
    assert latest["cur_itrs"] == 4 and os.path.isfile(_ckpt(voc, "best"))

    assert train_script.main(_args(voc, "--total_itrs", "6", "--val_interval", "2", "--lr", "0.02",
                                   "--weight_decay", "5e-4", "--ckpt", _ckpt(voc), "--continue_training")) == 0
    out = capsys.readouterr().out
    assert "restored from" in out
    assert ("Resuming with this run's settings from iteration 5: --total_itrs 4 -> 6, --lr 0.01 -> 0.02, "
            "--weight_decay 0.0001 -> 0.0005") in out
    resumed = torch.load(_ckpt(voc), weights_only=True)
    assert resumed["cur_itrs"] == 6
    assert resumed["scheduler_state"]["last_epoch"] == 6
    assert resumed["optimizer_state"]["state"]  # momentum buffers carried over
    groups = resumed["optimizer_state"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.002, 0.02])
    assert [g["weight_decay"] for g in groups] == [5e-4, 5e-4]


def test_test_only_equals_direct_metrics(voc, capsys):
    assert train_script.main(_args(voc, "--total_itrs", "2", "--val_interval", "2")) == 0
    capsys.readouterr()
    assert train_script.main(_args(voc, "--test_only", "--ckpt", _ckpt(voc), "--save_val_results",
                                   "--amp", "off", "--no-channels_last")) == 0
    printed = float(next(line for line in capsys.readouterr().out.splitlines()
                         if line.startswith("Mean IoU")).split(":")[1])
    model = network.build_model(MODEL, 21, 16, pretrained_backbone=False)
    model.load_state_dict(torch.load(_ckpt(voc), weights_only=True)["model_state"])
    model.eval()
    transform = et.ExtCompose([et.ExtToTensor(), et.ExtNormalize(IMAGENET_MEAN, IMAGENET_STD)])
    val = VOCSegmentation(str(voc / "data"), image_set="val", transform=transform)
    hist = np.zeros((21, 21))
    with torch.no_grad():
        for index, (image, target) in enumerate(val):
            pred = model(image[None]).argmax(1)[0].numpy()
            t = target.numpy()
            drawn = {kind: np.asarray(Image.open(voc / "res" / f"{index}_{kind}.png")) for kind in ("pred", "target")}
            assert np.array_equal(drawn["pred"], val.cmap[pred]) and np.array_equal(drawn["target"], val.cmap[t])
            keep = t < 21
            np.add.at(hist, (t[keep], pred[keep]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    assert printed == pytest.approx(np.nanmean(iu), abs=1e-6)
    assert sorted(os.listdir(voc / "res"))[:4] == ["0_image.png", "0_overlay.png", "0_pred.png", "0_target.png"]


def test_validation_autotunes_cudnn_only_for_one_input_size(voc):
    """cuDNN autotuning searches again for every new input size: on for training crops, and in validation
    only with --crop_val (VOC's validation images come in many sizes), and never when the run does not autotune."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.backends.cudnn.benchmark)
            return torch.zeros(x.shape[0], 21, *x.shape[2:])

    transform = et.ExtCompose([et.ExtToTensor(), et.ExtNormalize(IMAGENET_MEAN, IMAGENET_STD)])
    loader = torch.utils.data.DataLoader(VOCSegmentation(str(voc / "data"), image_set="val", transform=transform))
    previous = torch.backends.cudnn.benchmark
    try:
        for flag, autotuned in (("--no-crop_val", True), ("--crop_val", True), ("--crop_val", False)):
            torch.backends.cudnn.benchmark = autotuned
            opts = train_script.get_argparser().parse_args(_args(voc, flag, "--amp", "off"))
            opts.num_classes, opts.eval_amp, opts.cudnn_benchmark = 21, "off", autotuned  # as configure() sets them
            predictor = train_script.build_predictor(opts, Recorder(), torch.device("cpu"))
            train_script.evaluate(opts, predictor, loader, torch.device("cpu"), StreamSegMetrics(21))
            assert torch.backends.cudnn.benchmark is autotuned  # the training setting is back
    finally:
        torch.backends.cudnn.benchmark = previous
    assert seen == [False] * 3 + [True] * 3 + [False] * 3


def test_a_checkpoint_saved_before_its_scheduler_s_step_resumes_on_schedule(voc):
    """The original saved latest_* before its scheduler's step, so its last_epoch is one behind cur_itrs: a resume
    from it takes the rate of the next iteration, as from this project's files, not the one before (which lagged
    for the rest of the run, in the original's own resume too)."""
    assert train_script.main(_args(voc, "--total_itrs", "3", "--val_interval", "100")) == 0
    checkpoint = torch.load(_ckpt(voc), weights_only=True)
    checkpoint["scheduler_state"]["last_epoch"] -= 1
    checkpoint["scheduler_state"]["_step_count"] -= 1
    torch.save(checkpoint, str(voc / "as_the_original.pth"))
    ends = {}
    for name, start in (("ours", _ckpt(voc)), ("original", str(voc / "as_the_original.pth"))):
        assert train_script.main(_args(voc, "--total_itrs", "5", "--val_interval", "100", "--ckpt", start,
                                       "--continue_training", "--checkpoint_dir", str(voc / name))) == 0
        ends[name] = torch.load(voc / name / f"latest_{MODEL}_voc_os16.pth", weights_only=True)
    assert ends["ours"]["scheduler_state"]["last_epoch"] == ends["original"]["scheduler_state"]["last_epoch"] == 5
    assert all(torch.equal(value, ends["original"]["model_state"][key])
               for key, value in ends["ours"]["model_state"].items())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_saves_a_resumable_checkpoint(voc, signum):
    """Ctrl-C and job schedulers signal the DataLoader workers too: they must not take the run down."""
    cmd = [sys.executable, os.path.join(ROOT, "main.py"),
           *_args(voc, "--total_itrs", "10000", "--val_interval", "10000", "--num_workers", "2")]
    code, out = signal_group_when(cmd, lambda out: "Itrs 3/" in out, signum, cwd=ROOT)
    assert code == 0, out
    assert f"{signum.name} received: saved" in out and "--continue_training" in out and "Traceback" not in out
    saved = torch.load(_ckpt(voc), weights_only=True)["cur_itrs"]
    assert 3 <= saved < 10000
    assert train_script.main(_args(voc, "--total_itrs", str(saved + 1), "--val_interval", "10000",
                                   "--ckpt", _ckpt(voc), "--continue_training")) == 0
    assert torch.load(_ckpt(voc), weights_only=True)["cur_itrs"] == saved + 1


SLOW_DATA = ("import sys, time\nimport main\n"
             "def slow(*args, **kwargs):\n    print('reading the data', flush=True); time.sleep(120)\n"
             "main.load_data = slow\nsys.exit(main.main(sys.argv[1:]))\n")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_training_stops_in_one_line_and_leaves_no_folders(voc, signum):
    """A signal while the run sets up (here while it reads the data, after its output folders were made) has no
    step to finish: the run stops at once with the status a shell reports for it, in one line, not a traceback,
    and the folders it made for its outputs go."""
    cmd = [sys.executable, "-c", SLOW_DATA, *_args(voc, "--total_itrs", "1")]
    code, out = signal_group_when(cmd, lambda out: "reading the data" in out, signum, cwd=ROOT)
    assert code == 128 + signum, out
    assert out.strip().splitlines()[-1] == (f"{signum.name} received: stopped; every file written so far is whole "
                                            "(a signal during training saves a resumable checkpoint first)")
    assert "Traceback" not in out and sorted(os.listdir(voc)) == ["data"]


KILLED_WORKER = ("import os, signal, sys, time, multiprocessing\nimport main\nstep = main.forward_loss\n"
                 "def killing(*args, **kwargs):\n"
                 "    os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL); time.sleep(5)\n"
                 "    return step(*args, **kwargs)\n"
                 "main.forward_loss = killing\nsys.exit(main.main(sys.argv[1:]))\n")


def test_a_killed_worker_is_one_line_that_says_what_to_do(voc):
    """The out-of-memory killer may take a DataLoader worker; PyTorch raises wherever the run is: one line."""
    done = subprocess.run([sys.executable, "-c", KILLED_WORKER, *_args(voc, "--total_itrs", "2", "--num_workers", "2")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(r"error: a DataLoader worker \(pid \d+\) was killed by signal Killed; .*--num_workers", last)


def test_nan_loss_stops_with_a_clear_message(voc, capsys, monkeypatch):
    class NaNLoss(torch.nn.Module):
        def forward(self, outputs, labels):
            return outputs.sum() * float("nan")

    monkeypatch.setattr(train_script, "build_criterion", lambda *args, **kwargs: NaNLoss())
    assert train_script.main(_args(voc, "--total_itrs", "3")) == 1
    err = capsys.readouterr().err
    assert "loss is nan at iteration 1" in err and "lower --lr" in err
    assert not os.path.exists(_ckpt(voc))


def test_missing_ckpt_is_an_error_not_a_retrain(voc, capsys):
    assert train_script.main(_args(voc, "--ckpt", str(voc / "nope.pth"), "--total_itrs", "1")) == 1
    assert "nope.pth does not exist" in capsys.readouterr().err


def test_a_batch_of_one_is_a_clear_error(voc, capsys):
    assert train_script.main(_args(voc, "--batch_size", "1", "--total_itrs", "1")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: a batch of 1 image per process cannot train BatchNorm") and "--batch_size 2" in err
    assert "\n" not in err


def test_num_classes_conflict_and_missing_data(voc, tmp_path, capsys):
    assert train_script.main(_args(voc, "--num_classes", "5", "--total_itrs", "1")) == 1
    assert "--num_classes 5 does not match" in capsys.readouterr().err
    assert train_script.main(["--data_root", str(tmp_path / "none"), "--no-pretrained_backbone", "--checkpoint_dir",
                              str(tmp_path / "ck"), "--results_dir", str(tmp_path / "res")]) == 1
    assert "pass --download" in capsys.readouterr().err


def test_config_file_values_and_precedence(voc, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("total_itrs: 2\nval_interval: 1000\nlr: 0.5\n")
    assert train_script.main(_args(voc, "--config", str(cfg), "--lr", "0.001")) == 0
    out = capsys.readouterr().out
    assert "Itrs 2/2" in out and "lr=0.000" in out  # 0.001 * poly, not 0.5


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(ROOT, "configs"))))
def test_shipped_configs_are_valid(name):
    opts = train_script.parse_with_config(train_script.get_argparser(),
                                          ["--config", os.path.join(ROOT, "configs", name)])
    assert opts.model in network.MODELS and opts.dataset in train_script.DATASETS


def test_resumed_run_equals_uninterrupted_run(voc, tmp_path, monkeypatch):
    """Data order and augmentation depend on (seed, epoch, sample) and RNG state is restored: exact resume.

    The loss scaler that --amp fp16 uses on CUDA is switched on here too (scaling by powers of two is exact
    in fp32), growing every 2 steps: its scale must resume where it stopped, not restart at 2**16."""
    real_scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler",
                        lambda device, enabled: real_scaler(device, enabled=True, growth_interval=2))
    straight = tmp_path / "straight"
    assert train_script.main(_args(voc, "--total_itrs", "5", "--val_interval", "100",
                                   "--checkpoint_dir", str(straight))) == 0
    real_step = _sigterm_in_step(monkeypatch, 2)
    assert train_script.main(_args(voc, "--total_itrs", "5", "--val_interval", "100")) == 0
    assert torch.load(_ckpt(voc), weights_only=True)["cur_itrs"] == 2
    monkeypatch.setattr(train_script, "forward_loss", real_step)
    assert train_script.main(_args(voc, "--total_itrs", "5", "--val_interval", "100", "--ckpt", _ckpt(voc),
                                   "--continue_training")) == 0
    a = torch.load(straight / f"latest_{MODEL}_voc_os16.pth", weights_only=True)
    b = torch.load(_ckpt(voc), weights_only=True)
    assert a["cur_itrs"] == b["cur_itrs"] == 5
    assert a["scaler_state"] == b["scaler_state"] and a["scaler_state"]["scale"] == 2.0 ** 18  # grew at steps 2, 4
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key


def test_init_from_reports_filled_and_initialised(voc, tmp_path, capsys):
    # v3 head: the v3+ decoder stays initialised
    source = network.build_model("deeplabv3_mobilenet", 21, 16, pretrained_backbone=False)
    path = tmp_path / "v3.pth"
    torch.save({"model_state": source.state_dict()}, path)
    assert train_script.main(_args(voc, "--total_itrs", "1", "--init_from", str(path))) == 0
    out = capsys.readouterr().out
    filled, total = map(int, re.search(r"filled (\d+) of (\d+) tensors", out).groups())
    assert 0 < filled < total and "initialised: classifier.project.0" in out


def test_flags_override_booleans_set_in_a_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("channels_last: true\ncrop_val: true\n")
    opts = train_script.parse_with_config(train_script.get_argparser(),
                                          ["--config", str(cfg), "--no-channels_last"])
    assert opts.channels_last is False and opts.crop_val is True


def _validation_scoring(monkeypatch, mean_iou: float) -> None:
    """Make every validation report ``mean_iou`` (the real one runs; only its score is replaced)."""
    real = train_script.evaluate

    def scored(*args, **kwargs):
        score, samples = real(*args, **kwargs)
        return {**score, "Mean IoU": mean_iou}, samples

    monkeypatch.setattr(train_script, "evaluate", scored)


def test_a_resume_never_replaces_best_with_a_worse_model(voc, capsys, monkeypatch):
    _validation_scoring(monkeypatch, 0.5)
    assert train_script.main(_args(voc, "--total_itrs", "2", "--val_interval", "2")) == 0
    assert torch.load(_ckpt(voc), weights_only=True)["best_score"] == 0.5  # latest knows the new best
    with open(voc / "res" / "metrics.json") as f:  # the scores' files: latest_* and the best_* saved from it
        info = json.load(f)["info"]
    assert (info["checkpoint"], info["best_checkpoint"]) == (_ckpt(voc), _ckpt(voc, "best"))
    best = torch.load(_ckpt(voc, "best"), weights_only=True)
    stale = torch.load(_ckpt(voc), weights_only=True)
    stale["best_score"] = 0.0  # as a latest_* saved before that validation holds it, written as this project
    torch.save(stale, str(voc / "stale.pth"))  # writes every checkpoint: a new file renamed over the old one
    os.replace(voc / "stale.pth", _ckpt(voc))
    capsys.readouterr()
    _validation_scoring(monkeypatch, 0.3)
    assert train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "2", "--ckpt", _ckpt(voc),
                                   "--continue_training")) == 0
    assert "New best" not in capsys.readouterr().out
    with open(voc / "res" / "metrics.json") as f:
        assert json.load(f)["info"]["best_checkpoint"] is None  # not the best: best_* holds other weights
    kept = torch.load(_ckpt(voc, "best"), weights_only=True)
    assert kept["cur_itrs"] == best["cur_itrs"] == 2 and kept["best_score"] == 0.5
    assert torch.load(_ckpt(voc), weights_only=True)["best_score"] == 0.5


def test_a_validation_writes_the_weights_once_and_best_shares_them(voc, monkeypatch):
    """One checkpoint write per validation: on a new best, the weights are written as best_* and latest_* becomes a
    second name of that file (a hard link), so it costs no second write; the next latest_* is a new file, and best_*
    keeps the best weights."""
    writes = []
    real = train_script.save_checkpoint
    monkeypatch.setattr(train_script, "save_checkpoint", lambda state, path: writes.append(path) or real(state, path))
    _validation_scoring(monkeypatch, 0.5)
    assert train_script.main(_args(voc, "--total_itrs", "2", "--val_interval", "2")) == 0
    assert writes == [_ckpt(voc, "best")] and os.path.samefile(_ckpt(voc), _ckpt(voc, "best"))
    best = torch.load(_ckpt(voc, "best"), weights_only=True)
    assert (best["cur_itrs"], best["best_score"]) == (2, 0.5)
    _validation_scoring(monkeypatch, 0.25)
    assert train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "2", "--ckpt", _ckpt(voc),
                                   "--continue_training")) == 0
    assert writes == [_ckpt(voc, "best"), _ckpt(voc)] and not os.path.samefile(_ckpt(voc), _ckpt(voc, "best"))
    assert torch.load(_ckpt(voc, "best"), weights_only=True)["cur_itrs"] == 2
    assert torch.load(_ckpt(voc), weights_only=True)["cur_itrs"] == 4


def test_the_logged_loss_is_the_mean_of_the_steps_since_the_last_line_across_a_validation(voc, capsys, monkeypatch):
    """Steps of known loss 1, 2, 3, 4; a validation after step 3 does not restart the average of the line at 4."""
    real, losses = train_script.forward_loss, iter([1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(train_script, "forward_loss", lambda *args: real(*args) * 0 + next(losses))
    assert train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "3", "--print_interval", "2")) == 0
    out = capsys.readouterr().out
    assert "Itrs 2/4, Loss=1.500000, " in out and "Itrs 4/4, Loss=3.500000, " in out
    assert "Validation at iteration 3" in out


def test_focal_gamma_0_trains_as_cross_entropy(voc, capsys):
    """The original's focal_loss had gamma 0: --focal_gamma 0 reproduces its runs, the default 2 does not."""
    losses = {}
    for name, extra in (("ce", ()), ("focal0", ("--loss_type", "focal_loss", "--focal_gamma", "0")),
                        ("focal2", ("--loss_type", "focal_loss"))):
        assert train_script.main(_args(voc, "--total_itrs", "1", "--val_interval", "100", "--amp", "off",
                                       "--checkpoint_dir", str(voc / name), *extra)) == 0
        losses[name] = float(re.search(r"Loss=([0-9.]+)", capsys.readouterr().out).group(1))
    assert losses["focal0"] == losses["ce"] and losses["focal2"] < losses["ce"]


def test_a_signal_in_a_validation_step_still_validates(voc, capsys, monkeypatch):
    """The step a signal arrives in ends as usual: at a validation step that includes the validation (a resume
    starts after it and would never come back to it)."""
    _sigterm_in_step(monkeypatch, 2)
    assert train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "2")) == 0
    out = capsys.readouterr().out
    assert "Validation at iteration 2" in out and "SIGTERM received: saved" in out
    saved = torch.load(_ckpt(voc), weights_only=True)
    assert saved["cur_itrs"] == 2  # best_* too when the 2-step model scored above 0 (it depends on the CPU's kernels)
    assert os.path.isfile(_ckpt(voc, "best")) == (saved["best_score"] > 0)
    assert (f"New best Mean IoU {saved['best_score']:.4f}" in out) == (saved["best_score"] > 0)


def test_a_stop_at_a_validation_step_saves_before_validating(voc, monkeypatch):
    """A signal's grace period may end during the validation (or the validation may fail): the trained steps are
    already in latest_*."""
    _sigterm_in_step(monkeypatch, 2)

    def failing(*args, **kwargs):
        raise RuntimeError("the validation died")

    monkeypatch.setattr(train_script, "evaluate", failing)
    with pytest.raises(RuntimeError, match="the validation died"):
        train_script.main(_args(voc, "--total_itrs", "4", "--val_interval", "2"))
    assert torch.load(_ckpt(voc), weights_only=True)["cur_itrs"] == 2


@pytest.mark.parametrize("broken", ["mask size", "tiny image"])
def test_a_failed_validation_keeps_the_steps_trained_before_it(voc, capsys, broken):
    """A validation file that cannot be used stops the run at its first validation: the steps trained before it
    are saved first (the original saved latest_* before each validation), and the error names the file."""
    voc_root = voc / "data" / "VOCdevkit" / "VOC2012"
    mask, image = voc_root / "SegmentationClass" / "v1.png", voc_root / "JPEGImages" / "v1.jpg"
    Image.new("P", (30, 20) if broken == "mask size" else (2, 2)).save(mask)
    if broken == "tiny image":  # whole images are validated: no crop pads it
        Image.new("RGB", (2, 2)).save(image)
    total = "4" if broken == "mask size" else "3"  # the tiny image at the final validation: nothing to resume
    assert train_script.main(_args(voc, "--total_itrs", total, "--val_interval", "3")) == 1
    out, err = capsys.readouterr()
    then = (f"resume with --ckpt {_ckpt(voc)} --continue_training (it validates next at the following interval)"
            if broken == "mask size" else f"evaluate them with --test_only --ckpt {_ckpt(voc)}")
    assert f"validation at iteration 3 failed: saved {_ckpt(voc)} first; once the problem below is fixed, {then}" in out
    assert err.count("\n") == 1 and err.startswith(
        f"error: mask {mask} is 30x20 but image " if broken == "mask size" else
        f"error: validation image {image}: an image of 2x2 is smaller than this model takes: at least ")
    assert torch.load(_ckpt(voc), weights_only=True)["cur_itrs"] == 3 and not os.path.exists(_ckpt(voc, "best"))


def test_a_checkpoint_of_other_class_names_is_not_resumed_and_its_scores_are_flagged(voc, capsys):
    """Same class count: classes in another order would train each class on another's pixels, so a resume is
    refused; a renamed class is a warning, and so is an evaluation, which scores each class under the data's name
    for its index."""
    assert train_script.main(_args(voc, "--total_itrs", "1", "--val_interval", "100")) == 0
    checkpoint = torch.load(_ckpt(voc), weights_only=True)
    names = checkpoint["class_names"]
    for kind, recorded in (("swapped", [names[0], names[2], names[1], *names[3:]]),
                           ("renamed", [names[0], "plane", *names[2:]])):
        torch.save({**checkpoint, "class_names": recorded}, str(voc / f"{kind}.pth"))
    capsys.readouterr()
    swapped, renamed = str(voc / "swapped.pth"), str(voc / "renamed.pth")
    assert train_script.main(_args(voc, "--total_itrs", "2", "--ckpt", swapped, "--continue_training")) == 1
    message = f"checkpoint {swapped} was trained on classes {[names[0], names[2], names[1], *names[3:]]}, but the " \
              f"data names {names}"
    assert capsys.readouterr().err == (f"error: {message}: 'aeroplane' is at another index; a resumed run keeps its "
                                       f"classes in their order: give it the data it was trained on, or start a new "
                                       f"run on these classes from it with --init_from {swapped}\n")
    assert train_script.main(_args(voc, "--test_only", "--ckpt", swapped)) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (f"warning: {message}: each class is scored under the data's "
                                                        "name for its index")
    assert train_script.main(_args(voc, "--total_itrs", "2", "--ckpt", renamed, "--continue_training")) == 0
    assert "under the data's name for its index" in capsys.readouterr().err


def test_test_only_takes_the_model_that_the_checkpoint_records(voc, capsys):
    """No --model: the checkpoint's model and separable_conv, not main.py's default; a contradiction names both."""
    args = _args(voc, "--total_itrs", "1", "--val_interval", "1", "--separable_conv")
    args[args.index(MODEL)] = "deeplabv3_mobilenet"
    assert train_script.main(args) == 0
    ckpt = str(voc / "ck" / "latest_deeplabv3_mobilenet_voc_os16.pth")
    capsys.readouterr()
    plain = [a for a in _args(voc, "--test_only", "--ckpt", ckpt) if a not in ("--model", MODEL)]
    assert train_script.main(plain) == 0
    assert '"model": "deeplabv3_mobilenet"' in (voc / "res" / "metrics.json").read_text()
    capsys.readouterr()
    assert train_script.main(_args(voc, "--test_only", "--ckpt", ckpt)) == 1  # _args gives --model MODEL
    err = capsys.readouterr().err.strip()
    assert err == (f"error: checkpoint {ckpt} holds a deeplabv3_mobilenet but --model {MODEL} was given; drop --model "
                   "to use the checkpoint's (or --init_from to start another model from it)")
    assert train_script.main(plain + ["--no-separable_conv"]) == 1
    assert "was trained with separable_conv True but --no-separable_conv was given" in capsys.readouterr().err


def test_the_demo_keeps_to_its_own_folder_and_voc_says_when_it_reads_it(tmp_path, capsys, monkeypatch):
    """--dataset demo with the default layout never writes where real VOC lives; --dataset voc pointed at the
    demo's folder warns that its scores say nothing about VOC."""
    monkeypatch.setattr(train_script, "make_demo_dataset", functools.partial(make_demo_dataset, num_train=4,
                                                                             num_val=2))
    common = ["--model", MODEL, "--no-pretrained_backbone", "--crop_size", "32", "--batch_size", "2",
              "--num_workers", "0", "--total_itrs", "1", "--checkpoint_dir", str(tmp_path / "ck"),
              "--results_dir", str(tmp_path / "res")]
    assert train_script.main(["--dataset", "demo", "--data_root", str(tmp_path / "data"), *common]) == 0
    assert not (tmp_path / "data" / "VOCdevkit").exists()  # where --dataset voc reads
    assert (tmp_path / "data" / "demo" / "VOCdevkit" / "VOC2012" / "demo_version.txt").is_file()
    assert "warning" not in capsys.readouterr().err
    assert train_script.main(["--dataset", "voc", "--data_root", str(tmp_path / "data" / "demo"), *common]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "holds the synthetic demo data (demo_version.txt is there), not " \
                                          "Pascal VOC" in err


def test_the_evaluation_recipe_is_said_once_and_unused_window_flags_are_noted(voc, capsys):
    assert train_script.main(_args(voc, "--total_itrs", "1", "--val_interval", "1", "--amp", "off",
                                   "--no-channels_last")) == 0
    out = capsys.readouterr().out
    assert out.count("Evaluation: ") == 1 and "Evaluation: single scale, no flip, whole images; fp32" in out
    ckpt = _ckpt(voc)
    assert train_script.main(_args(voc, "--test_only", "--ckpt", ckpt, "--window", "64", "--stride", "32",
                                   "--eval_scales", "0.5", "1.0", "--eval_flip")) == 0
    out, err = capsys.readouterr()
    assert "warning: --window, --stride are not used: --eval_slide is off\n" in err
    assert "Evaluation: scales 0.5 1, flipped copies, whole images" in out
    assert "global batch" not in out and "Train set" not in out  # --test_only trains nothing
    assert train_script.main(_args(voc, "--test_only", "--ckpt", ckpt, "--eval_slide", "--window", "24",
                                   "--stride", "16")) == 0
    out, err = capsys.readouterr()
    assert "Evaluation: single scale, no flip, windows of 24 every 16 pixels" in out and "--window" not in err
    assert train_script.main(_args(voc, "--test_only", "--ckpt", ckpt, "--crop_val", "--amp", "off")) == 0
    assert ("Evaluation: single scale, no flip, images resized and centre-cropped to 32 (--crop_val); fp32"
            in capsys.readouterr().out)
    assert train_script.main(_args(voc, "--test_only", "--ckpt", ckpt, "--eval_slide", "--window", "2", "--stride",
                                   "2")) == 1  # every image would fail so: --window is to blame, not the first one
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: --window 2 is smaller than this model takes: ")
