"""--amp auto and --channels_last auto: what each kind of hardware gets, and what is printed."""
import argparse
import glob
import os

import pytest
import torch

import main as train_script
import predict as predict_script
from tests.conftest import ROOT
from utils import device as device_utils
from utils.config import parse_with_config
from utils.device import resolve_amp, resolve_channels_last

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cpu_probes(monkeypatch):
    """Set what the CPU probes report: fake_cpu(capability, mkldnn_bf16, avx512_bf16, amx)."""
    def fake_cpu(capability: str, mkldnn_bf16: bool, avx512_bf16: bool = False, amx: bool = False) -> None:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    return fake_cpu


@pytest.mark.parametrize("probes,amp,reason", [
    (("AVX2", False), "off", "this CPU has AVX2 and no native bfloat16"),
    (("AVX512", True, True, True), "bf16", "this CPU has native bfloat16: AVX512 with AMX"),
    (("AVX512", True, True, False), "bf16", "this CPU has native bfloat16: AVX512 with AVX512-BF16"),
    # AVX-512 without BF16 (Skylake, Cascade Lake): oneDNN runs bf16 there, but emulated
    (("AVX512", True, False, False), "off", "this CPU has AVX512 and no native bfloat16"),
    # ONEDNN_MAX_CPU_ISA=AVX2 on an AMX machine: oneDNN says no, and so does auto
    (("AVX2", False, True, True), "off", "this CPU has AVX2 and no native bfloat16"),
])
def test_amp_auto_on_each_cpu_kind(cpu_probes, probes, amp, reason):
    cpu_probes(*probes)
    chosen, note = resolve_amp("auto", CPU)
    assert chosen == amp
    assert note == f"--amp auto: {amp} ({reason})"


def test_amp_auto_keeps_cuda_in_fp32_until_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    chosen, note = resolve_amp("auto", CUDA)
    assert chosen == "off" and "not yet checked correct on CUDA" in note


def test_explicit_bf16_on_a_cpu_without_native_bf16_runs_after_a_warning(cpu_probes):
    cpu_probes("AVX2", False)
    chosen, note = resolve_amp("bf16", CPU)
    assert chosen == "bf16"
    assert note.startswith("warning: --amp bf16 is emulated on this CPU (AVX2") and "slower than fp32" in note
    cpu_probes("AVX512", True, True, True)
    assert resolve_amp("bf16", CPU) == ("bf16", None)
    for amp in ("off", "fp16"):
        assert resolve_amp(amp, CPU) == (amp, None)


def test_channels_last_auto_is_on_for_cpus_and_off_on_cuda():
    assert resolve_channels_last("auto", CPU) == (True, "--channels_last auto: on (faster on CPUs)")
    on_cuda, note = resolve_channels_last("auto", CUDA)
    assert on_cuda is False and "README: Known issues" in note
    assert resolve_channels_last(False, CPU) == (False, None)
    assert resolve_channels_last(True, CUDA) == (True, None)


@pytest.mark.parametrize("script", [train_script, predict_script])
@pytest.mark.parametrize("argv,amp,channels_last", [
    ([], "auto", "auto"),
    (["--channels_last"], "auto", True),
    (["--no-channels_last", "--amp", "off"], "off", False),
    (["--channels_last", "false", "--amp", "bf16"], "bf16", False),
    (["--channels_last", "auto"], "auto", "auto"),
])
def test_speed_flags_parse_in_both_scripts(script, argv, amp, channels_last):
    required = ["--input", "x", "--ckpt", "y"] if script is predict_script else []
    opts = script.get_argparser().parse_args(required + argv)
    assert (opts.amp, opts.channels_last) == (amp, channels_last)


def test_a_bad_channels_last_value_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        train_script.get_argparser().parse_args(["--channels_last", "sometimes"])
    assert "'sometimes' is not one of auto, true, false" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_every_config_leaves_speed_to_the_hardware(config):
    opts = parse_with_config(train_script.get_argparser(), ["--config", config])
    assert opts.amp == "auto" and opts.channels_last == "auto"


def test_resolve_speed_options_prints_each_choice_once(cpu_probes):
    cpu_probes("AVX2", False)
    opts, lines = argparse.Namespace(amp="auto", channels_last="auto"), []
    device_utils.resolve_speed_options(opts, CPU, lines.append)
    assert (opts.amp, opts.channels_last) == ("off", True)
    assert lines == ["--amp auto: off (this CPU has AVX2 and no native bfloat16)",
                     "--channels_last auto: on (faster on CPUs)"]
