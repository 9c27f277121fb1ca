"""--amp auto and --channels_last auto: what each kind of hardware gets, and what is printed."""
import argparse
import glob
import os

import pytest
import torch

import main as train_script
import predict as predict_script
from tests.conftest import ROOT
from utils.runtime import device as device_utils
from utils.config import parse_with_config
from utils.runtime.device import resolve_amp, resolve_channels_last

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


@pytest.fixture
def gpu(monkeypatch):
    """Pretend to run on a GPU of compute capability ``major``: gpu(8) has native bfloat16, gpu(7) does not
    (is_bf16_supported() would still say yes there, counting emulation)."""
    def fake_gpu(major: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: including_emulation or major >= 8)
    return fake_gpu


def test_amp_auto_on_cuda_trains_in_bf16_where_native_and_infers_in_fp32(gpu):
    gpu(8)
    chosen, note = resolve_amp("auto", CUDA, device_utils.TRAIN)
    assert chosen == "bf16" and note.startswith("--amp auto: bf16 for training (this GPU has native bfloat16")
    assert "1.65x faster than fp32 on an H200" in note
    chosen, note = resolve_amp("auto", CUDA, device_utils.INFER)
    assert chosen == "off" and "173.7 vs 132.6 images/s" in note
    gpu(7)  # Volta/Turing: bf16 only emulated; fp16 unmeasured, so fp32 with advice
    chosen, note = resolve_amp("auto", CUDA, device_utils.TRAIN)
    assert chosen == "off" and "no native bfloat16" in note and "--amp fp16 --channels_last" in note


def test_explicit_bf16_on_a_gpu_without_native_bf16_is_refused(gpu):
    gpu(7)
    with pytest.raises(ValueError, match="Ampere or newer"):
        device_utils.check_amp(CUDA, "bf16")


def test_training_and_evaluation_each_get_their_pick_on_cuda(gpu):
    gpu(8)
    opts, lines = argparse.Namespace(amp="auto", channels_last="auto"), []
    device_utils.resolve_speed_options(opts, CUDA, lines.append, device_utils.TRAIN)
    assert (opts.amp, opts.channels_last, opts.eval_amp) == ("bf16", True, "off")
    assert [line.split(" (")[0] for line in lines] == ["--amp auto: bf16 for training", "--amp auto: off for inference",
                                                     "--channels_last auto: on"]
    opts = argparse.Namespace(amp="auto", channels_last="auto")  # --test_only and predict.py
    device_utils.resolve_speed_options(opts, CUDA, lambda line: None, device_utils.INFER)
    assert (opts.amp, opts.channels_last, opts.eval_amp) == ("off", False, "off")
    opts = argparse.Namespace(amp="fp16", channels_last="auto")  # given: training and evaluation alike
    device_utils.resolve_speed_options(opts, CUDA, lambda line: None, device_utils.TRAIN)
    assert (opts.amp, opts.channels_last, opts.eval_amp) == ("fp16", True, "fp16")


def test_explicit_bf16_on_a_cpu_without_native_bf16_runs_after_a_warning(cpu_probes):
    cpu_probes("AVX2", False)
    chosen, note = resolve_amp("bf16", CPU)
    assert chosen == "bf16"
    assert note.startswith("warning: --amp bf16 is emulated on this CPU (AVX2") and "slower than fp32" in note
    cpu_probes("AVX512", True, True, True)
    assert resolve_amp("bf16", CPU) == ("bf16", None)
    for amp in ("off", "fp16"):
        assert resolve_amp(amp, CPU) == (amp, None)


def test_channels_last_auto_is_on_for_cpus_and_goes_with_mixed_precision_on_cuda():
    assert resolve_channels_last("auto", CPU) == (True, "--channels_last auto: on (faster on CPUs)")
    assert resolve_channels_last("auto", CPU, "bf16")[0] is True
    assert resolve_channels_last("auto", CUDA, "off") == (False, "--channels_last auto: off (fp32 on CUDA)")
    for amp in ("bf16", "fp16"):
        on_cuda, note = resolve_channels_last("auto", CUDA, amp)
        assert on_cuda is True and f"with --amp {amp} on CUDA" in note
    assert resolve_channels_last(False, CPU) == (False, None)
    assert resolve_channels_last(True, CUDA) == (True, None)


@pytest.mark.parametrize("choice,iterations,expected", [
    ("auto", 300, False), ("auto", 999, False), ("auto", 1000, True), ("auto", 30000, True),
    (True, 60, True), (False, 30000, False)])
def test_cudnn_autotuning_is_on_only_where_it_pays_back(choice, iterations, expected):
    enabled, note = device_utils.resolve_cudnn_benchmark(choice, CUDA, iterations)
    assert enabled is expected
    assert (note is not None) == (choice == "auto")
    assert device_utils.resolve_cudnn_benchmark(choice, CPU, iterations) == (False, None)  # nothing to tune


def test_num_workers_follow_the_cores_on_a_gpu(monkeypatch):
    monkeypatch.setattr(device_utils, "usable_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert device_utils.resolve_num_workers(None, CUDA) == (15, "--num_workers: 15 (16 cores for 1 GPU process(es))")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc_per_node 4: each process gets its share
    assert device_utils.resolve_num_workers(None, CUDA)[0] == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert device_utils.resolve_num_workers(None, CUDA)[0] == 1
    monkeypatch.setattr(device_utils, "usable_cores", lambda: 96)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert device_utils.resolve_num_workers(None, CUDA)[0] == device_utils.GPU_WORKERS_MAX
    assert device_utils.resolve_num_workers(None, CPU) == (device_utils.CPU_WORKERS_MAX, None)
    assert device_utils.resolve_num_workers(0, CUDA) == (0, None)  # given: kept


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
    device_utils.resolve_speed_options(opts, CPU, lines.append, device_utils.TRAIN)
    assert (opts.amp, opts.channels_last, opts.eval_amp) == ("off", True, "off")
    assert lines == ["--amp auto: off (this CPU has AVX2 and no native bfloat16)",
                     "--channels_last auto: on (faster on CPUs)"]


@pytest.mark.parametrize("visible,index", [(8, 3), (1, 0)])
def test_each_torchrun_process_takes_its_local_rank_s_gpu_among_those_it_sees(monkeypatch, visible, index):
    """torchrun shows every process each GPU, so local rank 3 takes cuda:3; a launcher that shows each process
    its own GPU alone (SLURM's GPU binding) makes that GPU cuda:0 in every process. (No GPU here: faked.)"""
    from utils.runtime import distributed
    for name, value in (("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "3")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **options: calls.append((backend, options["device_id"])))
    env, device = distributed.init_distributed("cuda", "0", 60)
    assert (env.rank, env.local_rank, env.world_size) == (3, 3, 4)
    assert device == torch.device("cuda", index) and calls == [device, ("nccl", device)]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # 4 processes on a machine of 2 GPUs
    with pytest.raises(distributed.DeviceError, match=r"^process 3 of this machine has no GPU of its own: 2 are "
                                                      r"visible; start at most 2 processes per machine"):
        distributed.init_distributed("cuda", "0", 60)
