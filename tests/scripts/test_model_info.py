"""tools/model_info.py: the counters agree with hand formulas, and the CLI prints the table."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

import network
from tests.conftest import ROOT
from tests.helpers import signal_group_when
from tools import model_info
from tools.model_info import activation_bytes, count_macs, count_parameters, without_batchnorm

FLOAT_BYTES = 4


def _on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return network.build_model(name, 21, 16, pretrained_backbone=False)


def test_parameters_are_weights_and_biases_not_running_statistics():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) == 8 * 3 * 9 + 8 + 2 * 8


def test_macs_of_convolutions_are_the_hand_formula_and_nothing_else_counts():
    strided = nn.Conv2d(16, 32, 3, stride=2, padding=1)  # 20x20 -> 10x10
    assert count_macs(strided, (2, 16, 20, 20)) == 2 * 10 * 10 * 32 * 16 * 3 * 3
    depthwise = nn.Conv2d(16, 16, 3, groups=16)  # 20x20 -> 18x18, one input channel per filter
    assert count_macs(depthwise, (1, 16, 20, 20)) == 18 * 18 * 16 * 1 * 3 * 3
    with_elementwise = nn.Sequential(strided, nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    assert count_macs(with_elementwise, (2, 16, 20, 20)) == count_macs(strided, (2, 16, 20, 20))


def test_counting_on_the_meta_device_matches_a_real_forward():
    real = network.build_model("deeplabv3plus_mobilenet", 21, 16, pretrained_backbone=False)
    assert count_macs(_on_meta("deeplabv3plus_mobilenet"), (1, 3, 64, 64)) == count_macs(real, (1, 3, 64, 64))


@pytest.mark.parametrize("name", ["deeplabv3plus_hrnetv2_32", "deeplabv3plus_tu-test_resnet"])
def test_the_batchnorms_count_no_macs(name):
    """The table counts without them (much faster on the meta device): the same MACs, timm's BatchNormAct2d too."""
    model = _on_meta(name)
    assert count_macs(without_batchnorm(_on_meta(name)), (1, 3, 64, 64)) == count_macs(model, (1, 3, 64, 64))
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_macs_grow_with_the_pixel_count():
    model = _on_meta("deeplabv3_resnet50")
    ratio = count_macs(model, (1, 3, 256, 256)) / count_macs(model, (1, 3, 128, 128))
    assert ratio == pytest.approx(4, rel=0.02)  # not exactly 4: the ASPP pooling branch is a constant


def test_cpu_activation_memory_is_the_tensors_saved_for_backward():
    batch, classes, side = 2, 5, 8
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, classes, 1))
    images = torch.randn(batch, 3, side, side)
    labels = torch.randint(0, classes, (batch, side, side))
    pixels = batch * side * side
    # BatchNorm's input, ReLU's output (the second convolution's input too) and the log-softmax of the loss
    expected = (4 + 4 + classes) * pixels * FLOAT_BYTES
    measured = activation_bytes(model, images, labels)
    assert expected <= measured <= expected + pixels * FLOAT_BYTES + 64  # + the loss's pixel mask, BatchNorm's stats


def test_one_entry_prints_every_figure(tmp_path):
    out = tmp_path / "info.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "model_info.py"), "--model", "deeplabv3plus_mobilenet",
         "--size", "64", "--seconds", "0.2", "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    title, header, line = result.stdout.strip().splitlines()[-3:]
    assert "64x64, 21 classes, output stride 16" in title and "CPU" in title
    assert header.split()[0] == "model" and "images/s" in header
    assert line.startswith("deeplabv3plus_mobilenet")
    row = json.loads(out.read_text())["rows"]["deeplabv3plus_mobilenet"]
    assert row["params_m"] == pytest.approx(5.23, abs=0.01)
    assert row["gmacs"] > 0 and row["activation_mib_per_image"] > 0 and row["images_per_s"] > 0
    # --amp and --channels_last as in predict.py: auto by default, and the choice is printed
    assert "--amp auto: " in result.stdout and "--channels_last auto: " in result.stdout
    report = json.loads(out.read_text())
    assert report["amp"] in ("off", "bf16") and f"amp {report['amp']}" in title


def test_speed_options_default_as_in_predict():
    import predict

    ours, theirs = model_info.get_argparser().parse_args(["--all"]), predict.get_argparser().parse_args(["--input", "x"])
    assert (ours.amp, ours.channels_last, ours.compile) == (theirs.amp, theirs.channels_last, theirs.compile)


def test_all_entries_without_speed_print_one_line_each(capsys):
    assert model_info.main(["--all", "--no-speed", "--size", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["model", "params", "(M)", "GMACs"]
    rows = lines[2:]
    assert [line.split()[0] for line in rows] == list(network.MODELS)
    assert all("input too small" in line for line in rows if "xception" in line)  # its stride-16 map is 4x4
    assert model_info.main(["--all", "--no-speed", "--size", "64", "--output_stride", "32"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]  # 32 is for timm encoders; HRNet works at its own
    assert all(("no output stride 32 for this entry" in line) != ("hrnetv2" in line) for line in rows)
    assert model_info.main(["--model", "deeplabv3plus_mobilenet", "--no-speed", "--output_stride", "32"]) == 1
    assert capsys.readouterr().err == ("error: deeplabv3plus_mobilenet supports --output_stride 8 or 16, not 32 (32 is "
                                       "for timm encoders that cannot dilate)\n")


def test_a_failed_measure_leaves_no_folder_made_for_json(tmp_path, capsys):
    out = tmp_path / "runs" / "cost.json"
    assert model_info.main(["--model", "deeplabv3plus_xception", "--no-speed", "--size", "64", "--json", str(out)]) == 1
    assert "cannot take 64x64 inputs" in capsys.readouterr().err and os.listdir(tmp_path) == []


SLOW_MEASURE = ("import sys, time\nfrom tools import model_info\n"
                "def slow(*args, **kwargs):\n    print('measuring', flush=True); time.sleep(120)\n"
                "model_info.measure = slow\nsys.exit(model_info.main(sys.argv[1:]))\n")


def test_a_signal_while_measuring_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "runs" / "cost.json"
    cmd = [sys.executable, "-c", SLOW_MEASURE, "--model", "deeplabv3plus_mobilenet", "--no-speed", "--json", str(out)]
    code, printed = signal_group_when(cmd, lambda printed: "measuring" in printed, signal.SIGTERM, cwd=ROOT)
    assert code == 128 + signal.SIGTERM and "Traceback" not in printed, printed
    assert printed.strip().splitlines()[-1] == f"SIGTERM received: stopped; nothing was written to {out}"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("size", ["0", "-3"])
def test_a_size_that_is_not_positive_is_a_one_line_error(capsys, size):
    assert model_info.main(["--model", "deeplabv3plus_mobilenet", "--size", size]) != 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == f"error: --size must be positive, not {size}"


def test_a_json_path_that_cannot_be_written_is_refused_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    for path, message in ((str(tmp_path), f"--json {tmp_path} is a folder; give a file name"),
                          (str(blocker / "x.json"), f"{blocker} is a file, not a folder")):
        assert model_info.main(["--all", "--no-speed", "--size", "64", "--json", path]) != 0
        captured = capsys.readouterr()
        assert captured.out == "" and message in captured.err and len(captured.err.strip().splitlines()) == 1
