"""utils.config's record of the options a user gave (command line, --config), the unused-option warnings, the
range checks and the YAML files' one-line errors; utils.resume's settings for --continue_training; utils.device's
one-line device errors."""
import argparse
import io
import sys

import pytest
import torch

from datasets import DatasetError
from datasets.class_weights import read_class_weights
from datasets.folder import read_classes
from utils.config import ConfigError, check_ranges, given, given_on_command_line, parse_with_config, warn_unused
from utils.io.bands import read_band_stats_file
from utils.runtime.device import DeviceError, resolve_device, unused_gpu_id
from utils.runtime.resume import SETTINGS_KEY, RESUMED_OPTIONS, apply_recorded_settings, recorded_settings
from utils.scheduler import build_scheduler


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--crop_val", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--pretrained", nargs="?", const=True, default=None)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0])
    return p


def test_the_options_given_are_known_apart_from_defaults_and_config_values(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.5\nscales: [0.5, 1.0]\n")
    opts = parse_with_config(_parser(), ["--config", str(cfg), "--no-crop_val", "--pretrained", "--batch_size", "16"])
    assert (opts.lr, opts.scales, opts.batch_size, opts.crop_val, opts.pretrained) == (0.5, [0.5, 1.0], 16, False, True)
    assert [name for name in ("lr", "scales", "batch_size", "crop_val", "pretrained") if given(opts, name)] == [
        "lr", "scales", "batch_size", "crop_val", "pretrained"]  # a value equal to the default was still given
    assert [name for name in ("lr", "scales", "batch_size", "crop_val", "pretrained")
            if given_on_command_line(opts, name)] == ["batch_size", "crop_val", "pretrained"]
    assert "_command_line" not in vars(opts) and set(vars(opts)) == {"config", "lr", "batch_size", "crop_val",
                                                                     "pretrained", "scales"}
    plain = parse_with_config(_parser(), [])
    assert not any(given(plain, name) for name in vars(plain))
    parser = _parser()  # the parser keeps its defaults after the second parse
    parse_with_config(parser, ["--lr", "1"])
    assert parser.parse_args([]).lr == 0.01


def test_warnings_name_the_unused_options_of_the_command_line_only(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.5\n")
    opts = parse_with_config(_parser(), ["--config", str(cfg), "--batch_size", "4", "--scales", "1"])
    warn_unused(opts, [(("lr", "batch_size", "scales"), True, "nothing is trained"),
                       (("crop_val",), True, "not given"), (("batch_size",), False, "it is used")])
    assert capsys.readouterr().err == "warning: --batch_size, --scales are not used: nothing is trained\n"


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_an_infinite_value_is_refused_whatever_its_range(value):
    """--lr .inf is above 0: it passed, and the run stopped at its second step with a NaN loss."""
    for positive, non_negative in ((("lr",), ()), ((), ("lr",))):
        with pytest.raises(ConfigError, match=f"^--lr must be a finite number, not {value}$"):
            check_ranges(argparse.Namespace(lr=value), positive, non_negative)


@pytest.mark.parametrize("value, fits", [(0.0, True), (1.0, True), (0.5, True), (1.5, False), (-0.1, False),
                                         (float("nan"), False)])
def test_fractions_must_lie_within_0_and_1(value, fits):
    opts = argparse.Namespace(overlay_alpha=value)
    if fits:
        check_ranges(opts, (), fractions=("overlay_alpha",))
    else:
        with pytest.raises(ConfigError, match=f"--overlay_alpha must be between 0 and 1, not {value}"):
            check_ranges(opts, (), fractions=("overlay_alpha",))


def _original_state(policy: str):
    """The optimizer and scheduler state of the original's main.py (lr 0.02, weight decay 5e-4)."""
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.002},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.02}],
                                lr=0.02, momentum=0.9, weight_decay=5e-4)
    scheduler = build_scheduler(optimizer, policy, 3000, 700)
    return {"cur_itrs": 0, "model_state": {}, "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(), "best_score": 0.0}


@pytest.mark.parametrize("policy, schedule", [("poly", {"total_itrs": 3000}), ("step", {"step_size": 700})])
def test_a_checkpoint_without_a_record_tells_its_rate_decay_and_schedule(policy, schedule):
    settings, recorded = recorded_settings(_original_state(policy))
    assert not recorded and settings == {"lr_policy": policy, **schedule, "lr": 0.02, "weight_decay": 5e-4}


def test_settings_not_given_come_from_the_record_and_given_ones_are_reported():
    opts = parse_with_config(_parser_of(RESUMED_OPTIONS), ["--lr", "0.05", "--batch_size", "8", "--crop_size", "513"])
    record = {**vars(parse_with_config(_parser_of(RESUMED_OPTIONS), [])), "lr": 0.02, "batch_size": 16,
              "total_itrs": 6000, "crop_size": 513}
    del record["year"]  # a record from an older version
    changed, taken, missing = apply_recorded_settings(opts, recorded_settings({SETTINGS_KEY: record})[0])
    assert changed == ["--lr 0.02 -> 0.05", "--batch_size 16 -> 8"]  # --crop_size given as recorded: not said
    assert (opts.lr, opts.batch_size, opts.total_itrs, opts.crop_size) == (0.05, 8, 6000, 513)
    assert taken == ["--total_itrs 6000"] and missing == ["year"]


def _parser_of(names):
    """A parser with an option per name whose default is 1 (a list for eval_scales, strings for the rest)."""
    p = argparse.ArgumentParser()
    for name in names:
        kind = float if name in ("lr", "weight_decay") else int if name in ("batch_size", "crop_size",
                                                                            "total_itrs") else str
        p.add_argument(f"--{name}", type=kind, default=kind(1) if kind is not str else "x")
    return p


@pytest.mark.parametrize("device, message", [
    ("cuda:3", "--device cuda:3: choose the GPU with --gpu_id 3 (it sets CUDA_VISIBLE_DEVICES, as in the original) "
               "and --device cuda"),
    ("mps", "--device mps: Apple's MPS is not supported (CUDA GPUs and CPUs are); use --device cpu"),
    ("gpu", "--device 'gpu' is not one of auto, cpu, cuda"),
])
def test_devices_that_are_not_ours_are_refused_in_one_line(device, message):
    with pytest.raises(DeviceError) as err:
        resolve_device(device)
    assert str(err.value) == message


def test_gpu_id_says_when_it_does_not_pick_the_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu = torch.device("cpu")
    assert unused_gpu_id("cpu", "1", cpu) == "--device cpu runs on the CPU"
    assert unused_gpu_id("auto", "1", cpu) == "no CUDA device is visible (CUDA_VISIBLE_DEVICES=), so this run is " \
                                              "on the CPU"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert unused_gpu_id("auto", "1", torch.device("cuda")) == ("CUDA_VISIBLE_DEVICES=2, set in the environment, "
                                                                "chooses the GPU")
    assert unused_gpu_id("auto", "2", torch.device("cuda")) is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert unused_gpu_id("auto", "1", torch.device("cuda")) == ("under torchrun each process takes the GPU of its "
                                                                "LOCAL_RANK")


def _config_error(path: str) -> None:
    """parse_with_config's error (argparse prints it and exits) as an exception."""
    try:
        parse_with_config(_parser(), ["--config", path])
    except SystemExit:
        raise ConfigError(sys.stderr.getvalue().splitlines()[-1].split("error: ", 1)[1]) from None


@pytest.mark.parametrize("reader, name", [
    (_config_error, "config file"),
    (lambda path: read_classes(path), "classes file"),
    (lambda path: read_class_weights(path, ["a", "b"]), "--class_weights"),
    (lambda path: read_band_stats_file(path, [1, 2], 2), "--band_stats"),
])
def test_every_yaml_file_read_has_the_same_one_line_errors(tmp_path, monkeypatch, reader, name):
    """One reader (utils.config.read_yaml_file) for the config, classes, class-weight and band-statistics files."""
    path = tmp_path / "file.yaml"
    cases = [(lambda: None, "does not exist"),
             (lambda: path.mkdir(), "is a folder, not a file"),
             (lambda: (path.rmdir(), path.write_bytes(b"a: caf\xe9\n")),
              "is not UTF-8 text (byte 0xe9 at offset 6); save it as UTF-8"),
             (lambda: path.write_text("a: [1, 2\n"), "is not valid YAML (while parsing a flow sequence"),
             (lambda: path.write_text("a: 2024-13-45\n"), "is not valid YAML (month must be in 1..12)")]
    for make, message in cases:
        make()
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        with pytest.raises((ValueError, DatasetError)) as caught:
            reader(str(path))
        text = str(caught.value)
        assert text.startswith(f"{name} {path} {message}") and "\n" not in text, text
