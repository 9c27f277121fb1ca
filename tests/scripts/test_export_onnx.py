"""tools/export_onnx.py and predict.py --onnx: every backbone family exports with dynamic sizes and matches PyTorch,
the metadata, predict's outputs, and the one-line errors (missing packages, bad files, PyTorch-only options)."""
import argparse
import os
import signal
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import network
import predict
from datasets import DatasetError
from network.trained_model import ModelSpec
from tests.conftest import ROOT
from tests.helpers import repeated_blocks_dropped, signal_group_when
from tools import export_onnx
from network.backbone.hrnetv2 import StageModule
from network.backbone.resnet import BasicBlock, Bottleneck
from network.backbone.xception import Block as XceptionBlock
from network.fusion import fold_batchnorm
from utils.inference.predictor import normalize
from utils.inference.onnx_model import ONNX_PIP, OnnxMetadata, OnnxSegmenter

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

MODEL = "deeplabv3plus_mobilenet"
CLASS_NAMES = ["background", "crack, wide", "rust"]  # a comma: the names are stored as JSON, not joined
CHECK_SIZES = ["96x64", "97x75", "64x96"]  # the first is also the traced example; 97x75 is no multiple of 32
# The family exports keep one of each run of these blocks (those that keep their input's shape): every kind of layer,
# resize and fusion of the family is traced, checked by the same command, in a fraction of the time.
FAMILY_BLOCKS = (BasicBlock, Bottleneck, StageModule, XceptionBlock)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)  # the same random weights each time: _checkpoint's are the reference's
    return network.build_model(name, 3, 16, pretrained_backbone=False).eval()


def _checkpoint(folder, name: str, class_names=None) -> str:
    path = os.path.join(folder, f"{name}.pth")
    torch.save({"model_state": _model(name).state_dict(), "model_name": name, "output_stride": 16,
                "separable_conv": False, **({"class_names": class_names} if class_names else {})}, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """deeplabv3plus_mobilenet exported once for the tests that use the file: (checkpoint, .onnx file)."""
    folder = tmp_path_factory.mktemp("onnx")
    ckpt = _checkpoint(folder, MODEL, CLASS_NAMES)
    output = str(folder / "model.onnx")
    assert export_onnx.main(["--ckpt", ckpt, "--output", output, "--check_sizes", *CHECK_SIZES]) == 0
    return ckpt, output


def test_export_checks_three_sizes_and_writes_the_file(exported, capsys, tmp_path, monkeypatch):
    with open(exported[1], "rb") as f:
        data = f.read()
    monkeypatch.setattr(export_onnx, "export_bytes", lambda *args: data)  # the printed checks, without exporting again
    output = tmp_path / "again.onnx"
    assert export_onnx.main(["--ckpt", exported[0], "--output", str(output), "--check_sizes", *CHECK_SIZES,
                             "--calibration_images", "8"]) == 0
    printed = capsys.readouterr()
    assert printed.err == "warning: --calibration_images is not used: --int8 is off\n"
    lines = printed.out.splitlines()
    checks = [line for line in lines if "argmax agreement" in line]
    assert [line.split(":")[0] for line in checks] == ["96x64, batch 2", "97x75, batch 1", "64x96, batch 1"]
    assert all(line.endswith(": ok") for line in checks)
    assert output.read_bytes() == data and lines[-1].startswith(f"wrote {output}")


# MobileNetV2 with the v3+ head is the `exported` fixture's; the plain v3 head comes with ResNet here
@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3plus_hrnetv2_32", "deeplabv3plus_xception"])
def test_every_backbone_family_exports_and_matches_pytorch(tmp_path, name, capsys, monkeypatch):
    ckpt = _checkpoint(tmp_path, name)
    load = export_onnx.load_model_of

    def one_of_each_repeated_block(opts):  # HRNet-W32's export: 16 s instead of 60 (AVX2 EPYC)
        model, spec = load(opts)
        kinds = {type(module) for module in model.modules()} | {torch.nn.Identity}
        assert repeated_blocks_dropped(model, torch.zeros(1, 3, 96, 80), FAMILY_BLOCKS) > 0
        assert {type(module) for module in model.modules()} | {torch.nn.Identity} == kinds
        return model, spec

    monkeypatch.setattr(export_onnx, "load_model_of", one_of_each_repeated_block)
    output = tmp_path / "model.onnx"
    # xception's unpadded stem and dilated exit flow need about 71 px at output stride 16
    assert export_onnx.main(["--ckpt", ckpt, "--output", str(output), "--check_sizes", "96x80", "97x81"]) == 0
    checks = [line for line in capsys.readouterr().out.splitlines() if "argmax agreement" in line]
    assert len(checks) == 2 and all(line.endswith(": ok") for line in checks) and output.exists()


def test_the_file_runs_at_any_batch_and_size(exported):
    model = OnnxSegmenter(exported[1])
    graph = onnx.load(exported[1], load_external_data=False).graph
    for value in (graph.input[0], graph.output[0]):
        dims = [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
    reference = fold_batchnorm(_model(MODEL))
    generator = torch.Generator().manual_seed(1)
    for shape in [(2, 3, 77, 50), (1, 3, 129, 65), (3, 3, 64, 64), (1, 3, 40, 30)]:
        images = normalize(torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8))
        with torch.no_grad():
            expected = reference(images)
        got = model(images)
        assert got.shape == expected.shape == (shape[0], 3, *shape[2:])
        assert (got - expected).abs().max() < 1e-4


def test_metadata_says_what_the_model_is_and_takes(exported):
    props = {p.key: p.value for p in onnx.load(exported[1], load_external_data=False).metadata_props}
    assert props["model_name"] == MODEL and props["num_classes"] == "3" and props["output_stride"] == "16"
    assert props["mean"] == "[0.485, 0.456, 0.406]" and props["std"] == "[0.229, 0.224, 0.225]"
    assert "NCHW" in props["input"] and "(pixel / 255 - mean) / std" in props["input"]
    meta = OnnxMetadata.from_props(props, "model.onnx")
    assert meta.class_names == tuple(CLASS_NAMES)
    assert onnx.load(exported[1], load_external_data=False).opset_import[0].version >= 17
    # no palette recorded in that checkpoint: the VOC colours of its three indices, as predict.py would draw them
    assert meta.palette == ((0, 0, 0), (128, 0, 0), (0, 128, 0))


def test_classes_yaml_colours_go_into_the_file_and_predict_draws_with_them(exported, tmp_path, capsys, monkeypatch):
    graph = onnx.load(exported[1])
    del graph.metadata_props[:]
    monkeypatch.setattr(export_onnx, "onnx_graph", lambda *args: graph)  # the same model's graph, traced once
    classes = tmp_path / "classes.yaml"
    classes.write_text("names: [sky, road, car]\npalette: [[10, 20, 30], [200, 0, 0], [0, 0, 250]]\n")
    output = str(tmp_path / "m.onnx")
    assert export_onnx.main(["--ckpt", exported[0], "--output", output, "--classes", str(classes), "--dataset",
                             "cityscapes", "--check_sizes", *CHECK_SIZES]) == 0
    assert capsys.readouterr().err == "warning: --dataset is not used: --classes gives the names and colours to record\n"
    meta = OnnxSegmenter(output).metadata
    assert meta.class_names == ("sky", "road", "car") and meta.palette == ((10, 20, 30), (200, 0, 0), (0, 0, 250))
    images = _images(tmp_path / "in", ((96, 64),))
    capsys.readouterr()
    assert _predict(images, tmp_path / "out", "--onnx", output) == 0
    assert "note" not in capsys.readouterr().out  # the file's own colours: no VOC fall-back
    with Image.open(tmp_path / "out" / "0.png") as img:
        assert {tuple(c) for c in np.asarray(img.convert("RGB")).reshape(-1, 3)} <= {(10, 20, 30), (200, 0, 0),
                                                                                     (0, 0, 250)}


def test_class_names_come_from_the_flags_else_the_checkpoint_else_indices(tmp_path, capsys):
    spec = ModelSpec(MODEL, 16, False, 3)
    classes = tmp_path / "classes.yaml"
    classes.write_text("names: [sky, road, car]\n")

    def names(spec, classes=None, dataset=None):
        return export_onnx.classes_of(argparse.Namespace(classes=classes, dataset=dataset, ckpt="m.pth"), spec).names

    assert names(spec) == ("0", "1", "2")
    assert "note: m.pth does not name its classes; the file calls them 0..2" in capsys.readouterr().out
    assert names(spec, classes=str(classes)) == ("sky", "road", "car")
    assert names(ModelSpec(MODEL, 16, False, 3, ("a", "b", "c"))) == ("a", "b", "c")
    assert names(ModelSpec(MODEL, 16, False, 3, ("a", "b", "c")), classes=str(classes)) == ("sky", "road", "car")
    assert names(ModelSpec(MODEL, 16, False, 21), dataset="voc")[:2] == ("background", "aeroplane")
    with pytest.raises(DatasetError, match="--dataset cityscapes names 19 classes but the checkpoint m.pth "
                                           "predicts 3"):
        names(spec, dataset="cityscapes")


def _images(folder, sizes=((96, 64), (97, 75), (70, 90), (96, 64))):
    folder.mkdir()
    for seed, (w, h) in enumerate(sizes):
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            folder / f"{seed}.png")
    return folder


def _predict(images, out, *model_args):
    return predict.main(["--input", str(images), "--save_val_results_to", str(out), "--num_workers", "0",
                         "--output", "color", "label", "overlay", *model_args])


def _labels(folder):
    return {name: np.array(Image.open(folder / name)) for name in sorted(os.listdir(folder)) if "_label" in name}


@pytest.mark.parametrize("recipe, sizes", [
    ([], ((96, 64), (97, 75), (70, 90), (96, 64))),
    # one image, a few windows: PyTorch builds new oneDNN kernels for every window and scale shape
    (["--tta", "--tta_scales", "1.25", "--slide", "--window", "64", "--stride", "40"], ((97, 75),)),
])
def test_predict_through_onnx_equals_predict_through_pytorch(exported, tmp_path, capsys, recipe, sizes):
    """Same folder, same recipe, same output files; PyTorch in fp32 (--amp off), as ONNX Runtime computes."""
    images = _images(tmp_path / "in", sizes)
    assert _predict(images, tmp_path / "onnx", "--onnx", exported[1], *recipe) == 0
    assert "auto" not in capsys.readouterr().out  # --amp auto and --channels_last auto are off, quietly
    assert _predict(images, tmp_path / "torch", "--ckpt", exported[0], "--amp", "off", *recipe) == 0
    assert sorted(os.listdir(tmp_path / "onnx")) == sorted(os.listdir(tmp_path / "torch"))
    onnx_labels, torch_labels = _labels(tmp_path / "onnx"), _labels(tmp_path / "torch")
    agreement = np.mean(np.concatenate([(onnx_labels[n] == torch_labels[n]).ravel() for n in onnx_labels]))
    assert len(onnx_labels) == len(sizes) and agreement >= 0.999


def test_an_image_too_small_is_skipped_alike_by_onnx_and_pytorch(exported, tmp_path, capfd):
    """Both paths say the same `skipped:` line in our words and go on; ONNX Runtime prints no line of its own."""
    images = _images(tmp_path / "in", ((96, 64), (1, 1)))
    skipped = {}
    for label, model_args in (("onnx", ["--onnx", exported[1]]), ("torch", ["--ckpt", exported[0], "--amp", "off"])):
        assert _predict(images, tmp_path / label, *model_args) == 1
        out, err = capfd.readouterr()
        assert "1 done, 1 skipped" in out
        skipped[label] = err.strip()
    assert skipped["onnx"] == skipped["torch"], skipped
    assert skipped["onnx"].startswith(f"skipped: {images / '1.png'}: an image of 1x1 is smaller than this model takes")
    assert "onnxruntime" not in skipped["onnx"] and "\n" not in skipped["onnx"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_failed_export_leaves_no_folder_made_for_output(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    assert export_onnx.main(["--ckpt", str(missing), "--output", str(tmp_path / "runs" / "model.onnx")]) == 1
    assert f"{missing} does not exist" in capsys.readouterr().err and os.listdir(tmp_path) == []


SLOW_EXPORT = ("import sys, time\nfrom tools import export_onnx\n"
               "def slow(*args, **kwargs):\n    print('exporting', flush=True); time.sleep(120)\n"
               "export_onnx.export_bytes = slow\nsys.exit(export_onnx.main(sys.argv[1:]))\n")


def test_ctrl_c_during_an_export_is_one_line_and_writes_nothing(exported, tmp_path):
    output = tmp_path / "runs" / "model.onnx"
    cmd = [sys.executable, "-c", SLOW_EXPORT, "--ckpt", exported[0], "--output", str(output), "--check_sizes", "96x64"]
    code, printed = signal_group_when(cmd, lambda printed: "exporting" in printed, signal.SIGINT, cwd=ROOT)
    assert code == 128 + signal.SIGINT and "Traceback" not in printed, printed
    assert printed.strip().splitlines()[-1] == f"SIGINT received: stopped; nothing was written to {output}"
    assert os.listdir(tmp_path) == []


def test_missing_onnx_packages_name_the_pip_command(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it raises ImportError
    assert _predict(_images(tmp_path / "in"), tmp_path / "out", "--onnx", exported[1]) == 1
    assert _one_line_error(capsys) == f"error: onnxruntime is not installed; it is needed for the ONNX features: {ONNX_PIP}"
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert export_onnx.main(["--ckpt", exported[0], "--output", str(tmp_path / "m.onnx")]) == 1
    assert _one_line_error(capsys) == f"error: onnxscript is not installed; it is needed for the ONNX features: {ONNX_PIP}"
    assert not (tmp_path / "m.onnx").exists()


def test_bad_or_foreign_onnx_files_are_one_line_errors(exported, tmp_path, capsys):
    images = _images(tmp_path / "in")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(open(exported[1], "rb").read()[:5000])
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(exported[1])
    del model.metadata_props[:]
    onnx.save(model, foreign)
    expected = {corrupt: f"error: {corrupt} is not a readable ONNX model (",
                foreign: f"error: {foreign} has no model_name, num_classes, class_names, output_stride, mean, std in "
                         "its metadata: it was not exported by tools/export_onnx.py",
                tmp_path / "missing.onnx": f"error: ONNX model {tmp_path / 'missing.onnx'} does not exist"}
    for path, start in expected.items():
        assert _predict(images, tmp_path / "out", "--onnx", str(path)) == 1
        assert _one_line_error(capsys).startswith(start)


def _with_metadata(proto, num_classes: int) -> bytes:
    """``proto`` carrying this project's metadata for ``num_classes`` classes, as an export writes it."""
    metadata = OnnxMetadata(MODEL, num_classes, tuple(f"class {i}" for i in range(num_classes)), 16)
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def _one_conv_graph(channels_in: int, stride: int):
    """A float (N, channels_in, H, W) -> (N, 3, ?, ?) graph of one 1x1 convolution, built with onnx.helper."""
    helper = onnx.helper
    weight = onnx.numpy_helper.from_array(np.ones((3, channels_in, 1, 1), np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weight"], ["logits"], strides=[stride, stride])], "one_conv",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", channels_in, "height", "width"])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3, None, None])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_predict_refuses_onnx_files_that_do_not_segment(tmp_path, capsys):
    """A classifier exported as the export exports (with our metadata), a graph for 1-channel images, and one whose
    scores come out at half the image's size: each is one line, before or at the first image, and nothing is drawn."""
    classifier = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                     torch.nn.Linear(4, 3)).eval()
    metadata = OnnxMetadata(MODEL, 3, ("a", "b", "c"), 16)
    exported_classifier = export_onnx.export_bytes(classifier, metadata, torch.zeros(2, 3, 16, 16))
    (tmp_path / "classifier.onnx").write_bytes(exported_classifier)
    (tmp_path / "gray.onnx").write_bytes(_with_metadata(_one_conv_graph(1, 1), 3))
    (tmp_path / "coarse.onnx").write_bytes(_with_metadata(_one_conv_graph(3, 2), 3))
    images = _images(tmp_path / "in", sizes=((32, 24),))
    expected = {
        "classifier.onnx": "is not a segmentation model: it returns tensor(float) (batch, 3), not (N, 3, H, W) class "
                           "scores for the 3 classes its metadata names; export a segmentation checkpoint with "
                           "tools/export_onnx.py",
        "gray.onnx": "takes tensor(float) (batch, 1, height, width), not float32 (N, 3, H, W) RGB images; predict.py "
                     "needs a segmentation model exported by tools/export_onnx.py",
        "coarse.onnx": "returned scores of shape (1, 3, 12, 16) for images of shape (1, 3, 24, 32), not (1, 3, 24, 32) "
                       "(one score per class and pixel); export a segmentation checkpoint with tools/export_onnx.py"}
    for name, message in expected.items():
        assert _predict(images, tmp_path / "out", "--onnx", str(tmp_path / name)) == 1
        assert _one_line_error(capsys) == f"error: {tmp_path / name} {message}"
        assert not (tmp_path / "out" / "0.png").exists()


@pytest.mark.parametrize("flags, message", [
    (["--compile"], "--compile needs PyTorch"),
    (["--amp", "bf16"], "--amp bf16 needs PyTorch"),
    (["--channels_last"], "--channels_last needs PyTorch"),
    (["--device", "cuda"], "--device cuda needs PyTorch"),
    (["--device", "mps"], "--device mps needs PyTorch"),
    (["--model", "deeplabv3_mobilenet"], "--model comes from the ONNX file's metadata with --onnx; drop it"),
    (["--ckpt", "best.pth"], "--ckpt and --onnx are both given"),
])
def test_options_that_need_pytorch_are_one_line_errors(exported, tmp_path, capsys, flags, message):
    assert _predict(tmp_path, tmp_path / "out", "--onnx", exported[1], *flags) == 1
    assert _one_line_error(capsys).startswith(f"error: {message}")
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_predict_needs_one_model(tmp_path, capsys):
    assert _predict(tmp_path, tmp_path / "out") == 1
    assert _one_line_error(capsys) == ("error: give the model: --ckpt CHECKPOINT (PyTorch) or --onnx MODEL.onnx "
                                       "(ONNX Runtime)")


def test_a_failed_check_writes_nothing_and_keeps_an_older_file(exported, tmp_path, monkeypatch, capsys):
    with open(exported[1], "rb") as f:
        data = f.read()
    monkeypatch.setattr(export_onnx, "export_bytes", lambda *args: data)  # the file, without exporting again
    output = tmp_path / "model.onnx"
    output.write_bytes(b"an older export")
    assert export_onnx.main(["--ckpt", exported[0], "--output", str(output), "--check_sizes", "64x64",
                             "--max_logit_diff", "1e-300"]) == 1  # fp32 rounding alone exceeds it: every size fails
    printed = capsys.readouterr()
    assert "64x64, batch 2: max |logit difference|" in printed.out and printed.out.rstrip().endswith("FAILED")
    assert printed.err.strip() == ("error: the ONNX model differs from PyTorch at 64x64, batch 2; nothing was "
                                   f"written to {output}")
    assert output.read_bytes() == b"an older export" and os.listdir(tmp_path) == ["model.onnx"]


def test_an_output_that_is_the_checkpoint_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    ckpt = _checkpoint(str(tmp_path), MODEL)
    before = open(ckpt, "rb").read()
    os.symlink(tmp_path, tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    for output in (f"./{MODEL}.pth", str(tmp_path / "link" / f"{MODEL}.pth")):  # relative, and through a link
        assert export_onnx.main(["--ckpt", ckpt, "--output", output]) == 1
        assert capsys.readouterr().err.strip() == (
            f"error: --output {output} is the same file as --ckpt {ckpt}: writing it would destroy that input; "
            f"write to another file, e.g. {os.path.splitext(ckpt)[0]}.onnx")
    assert open(ckpt, "rb").read() == before
    os.makedirs(tmp_path / "other")
    other = _checkpoint(str(tmp_path / "other"), MODEL)  # another model's weights, where the file would go
    assert export_onnx.main(["--ckpt", ckpt, "--output", other]) == 1
    assert capsys.readouterr().err.strip() == (f"error: --output {other} is a PyTorch checkpoint: the ONNX file would "
                                               f"replace it; give another name, e.g. {os.path.splitext(other)[0]}.onnx")


def test_a_logit_limit_that_is_not_positive_is_one_line(exported, tmp_path, capsys):
    assert export_onnx.main(["--ckpt", exported[0], "--output", str(tmp_path / "m.onnx"), "--max_logit_diff",
                             "0"]) == 1
    assert capsys.readouterr().err.strip() == "error: --max_logit_diff must be positive, not 0.0"
