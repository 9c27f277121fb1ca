"""tools/export_onnx.py --int8: static INT8 in QDQ form with per-channel weights, metadata that says so, predict.py
--onnx on it, and the one-line errors of its options."""
import argparse
import os
import re
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import network
import predict
from datasets.calibration import CalibrationImages, choose_calibration_images
from tools import export_onnx
from utils.io.image_limit import set_max_image_pixels
from utils.inference.predictor import normalize
from utils.inference.onnx_int8 import quantize_int8
from utils.inference.onnx_model import OnnxMetadata

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

MODEL = "deeplabv3plus_mobilenet"
NUM_CLASSES = 3
CHECK_SIZES = ["64x48", "48x64"]
MAX_TRAIN_STEPS, CHECK_EVERY = 152, 4
# What the trained model must show before the INT8 comparison means something: every class predicted on a fair share
# of the pixels, and most pixels won by a clear logit margin (INT8 rounding flips near ties, which is no error).
MIN_CLASS_SHARE = 0.15
MIN_MARGIN, MARGIN_QUANTILE = 1.0, 0.1


def _photo(seed: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Smooth colour regions with noise: activations with a realistic range, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 96, (height // 16, width // 16, 3), dtype=np.uint8)  # each region: one strong colour
    np.put_along_axis(small, rng.integers(0, 3, (height // 16, width // 16, 1)), 255, axis=2)
    image = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR)).astype(np.int16)
    return np.clip(image + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)


def _has_margins(model: torch.nn.Module, images: torch.Tensor) -> bool:
    """Whether ``model`` (in eval mode, as predict.py runs it) predicts every class on at least MIN_CLASS_SHARE of
    the pixels, with a top-1 over top-2 logit margin of MIN_MARGIN on all but MARGIN_QUANTILE of them."""
    with torch.no_grad():
        logits = model.eval()(images)
    model.train()
    labels = logits.argmax(1)
    shares = torch.stack([(labels == index).float().mean() for index in range(NUM_CLASSES)])
    top2 = logits.topk(2, dim=1).values
    margins = (top2[:, 0] - top2[:, 1]).flatten()
    return bool(shares.min() >= MIN_CLASS_SHARE and margins.quantile(MARGIN_QUANTILE) >= MIN_MARGIN)


def _settle_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` under the current weights, so that the
    model predicts in eval mode as it was just trained (an average over earlier steps' weights would not)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
    with torch.no_grad():
        model(images)


def _trained_model(photos: torch.Tensor) -> torch.nn.Module:
    """A model trained to tell reddish, greenish and bluish pixels apart, until it does so with margins: INT8
    rounding flips the labels of random weights, whose classes are near ties everywhere, but not of such a model.
    Trained until the margins hold rather than for a fixed number of steps, since the steps' outcome depends on the
    CPU's kernels (an AMX Xeon's fp32 convolutions land elsewhere than AVX2's)."""
    torch.manual_seed(0)
    model = network.build_model(MODEL, NUM_CLASSES, 16, pretrained_backbone=False).train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: after _settle_batchnorm, exactly one batch's statistics
    targets = photos.float().argmax(1)  # the strongest colour channel: three classes of similar size
    images = normalize(photos)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(1, MAX_TRAIN_STEPS + 1):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()
        if step % CHECK_EVERY == 0:  # settling and checking cost two forward passes: not after every step
            _settle_batchnorm(model, images)
            if _has_margins(model, images):
                return model.eval()
    raise AssertionError(f"the fixture's model did not predict all {NUM_CLASSES} classes with margins within "
                         f"{MAX_TRAIN_STEPS} steps; the INT8 comparison would mean nothing")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(checkpoint, calibration folder, int8 .onnx)."""
    folder = tmp_path_factory.mktemp("int8")
    photos = folder / "photos"
    photos.mkdir()
    for seed in range(6):
        Image.fromarray(_photo(seed)).save(photos / f"{seed}.png")
    model = _trained_model(torch.from_numpy(np.stack([_photo(seed) for seed in range(6)])).permute(0, 3, 1, 2))
    ckpt = folder / "model.pth"
    torch.save({"model_state": model.eval().state_dict(), "model_name": MODEL, "output_stride": 16}, ckpt)
    int8 = folder / "model_int8.onnx"
    assert export_onnx.main(["--ckpt", str(ckpt), "--check_sizes", *CHECK_SIZES, "--output", str(int8), "--int8",
                             "--calibration", str(photos)]) == 0
    return str(ckpt), photos, str(int8)


def test_int8_file_is_qdq_with_per_channel_weights_and_says_int8(files):
    model = onnx.load(files[2])
    metadata = OnnxMetadata.from_props({p.key: p.value for p in model.metadata_props}, "int8")
    assert (metadata.precision, metadata.model_name, metadata.num_classes) == ("int8", MODEL, NUM_CLASSES)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes = list(model.graph.node)
    assert any(node.op_type == "QuantizeLinear" for node in nodes)
    weight_dequantizers = [node for node in nodes if node.op_type == "DequantizeLinear"
                           and node.input[0] in initializers and len(initializers[node.input[0]].dims) == 4]
    assert weight_dequantizers  # the convolutions' weights are stored in int8 ...
    for node in weight_dequantizers:
        weight, scale = initializers[node.input[0]], initializers[node.input[1]]
        assert weight.data_type == onnx.TensorProto.INT8
        assert list(scale.dims) == [weight.dims[0]]  # ... with one scale per output channel
    weights = sum(tensor.dims[0] * int(np.prod(tensor.dims[1:])) for tensor in initializers.values()
                  if tensor.data_type == onnx.TensorProto.INT8)
    assert os.path.getsize(files[2]) < 2 * weights  # the weights are held once, in int8, not beside fp32 copies


def test_predict_runs_the_int8_file_close_to_fp32(files, tmp_path, capsys):
    outputs = {}
    for name, model in (("fp32", ["--ckpt", files[0], "--amp", "off"]), ("int8", ["--onnx", files[2]])):
        out = tmp_path / name
        assert predict.main(["--input", str(files[1]), *model, "--output", "label", "--num_workers", "0",
                             "--save_val_results_to", str(out)]) == 0
        outputs[name] = np.stack([np.asarray(Image.open(out / f"{seed}_label.png")) for seed in range(6)])
    assert "6 done, 0 skipped" in capsys.readouterr().out
    assert len(np.unique(outputs["fp32"])) == NUM_CLASSES
    assert (outputs["int8"] == outputs["fp32"]).mean() > 0.95


@pytest.mark.parametrize("flags, message", [
    (["--int8"], "error: --int8 needs --calibration DIR (a few dozen images like those you will predict on)"),
    (["--calibration", "photos"], "error: --calibration is for --int8; add --int8 or drop it"),
    (["--int8", "--calibration", "photos", "--calibration_images", "0"],
     "error: --calibration_images must be positive, not 0"),
])
def test_int8_options_are_one_line_errors(files, tmp_path, capsys, flags, message):
    out = tmp_path / "m.onnx"
    assert export_onnx.main(["--ckpt", files[0], "--output", str(out), *flags]) == 1
    assert capsys.readouterr().err.strip() == message and not out.exists()


def test_calibration_without_decodable_images_is_one_line(files, tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert export_onnx.main(["--ckpt", files[0], "--output", str(tmp_path / "m.onnx"), "--int8", "--calibration",
                             str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"skipped: cannot decode calibration image {tmp_path / 'bad' / 'broken.png'}: ")
    assert err[1] == (f"error: --calibration {tmp_path / 'bad'} holds no calibration image that can be decoded and is "
                      "large enough for the model; give a few dozen images like those you will predict on")


def test_calibration_images_are_spread_over_the_folder_and_too_small_ones_skipped(tmp_path, capsys):
    folder = tmp_path / "cal"
    for part in ("a", "b", "c"):  # three scenes of five images each
        (folder / part).mkdir(parents=True)
        for index in range(5):
            Image.fromarray(_photo(index)).save(folder / part / f"{index}.png")
    Image.fromarray(_photo(0)[:2, :2]).save(folder / "b" / "2.png")  # an icon among the photos
    images = choose_calibration_images(str(folder), 7, smallest=8, max_pixels=64 * 48)
    err = capsys.readouterr().err.strip()
    assert err == (f"skipped: calibration image {folder / 'b' / '2.png'}: an image of 2x2 is smaller than this model "
                   "takes: at least 8x8 pixels")
    assert len(images) == 6 and all(image.shape[0] == 1 and image.dtype == np.float32 for image in images)
    first, last = (export_onnx.normalize(torch.from_numpy(_photo(i)).permute(2, 0, 1)[None]).numpy() for i in (0, 4))
    assert np.array_equal(images[0], first) and np.array_equal(images[-1], last)  # a/0.png ... c/4.png


@pytest.fixture(scope="module")
def near_tie():
    """A 1x1 convolution whose class 1 beats class 0 by 1e-4 everywhere: INT8 cannot tell them apart, so its labels
    (ties go to class 0) differ from fp32's on almost every pixel. (model, fp32 file's bytes, metadata)"""
    conv = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.copy_(torch.tensor([0.0, 1e-4]))
    metadata = OnnxMetadata("near_tie", 2, ("a", "b"), 16)
    return conv.eval(), export_onnx.export_bytes(conv.eval(), metadata, torch.zeros(2, 3, 16, 16)), metadata


class _Counted(CalibrationImages):
    """Calibration images that count how many of the arrays they returned are alive at once."""

    def __init__(self, *args):
        super().__init__(*args)
        self.alive, self.most_alive, self.reads, self.sizes = [], 0, 0, set()

    def __getitem__(self, index):
        image = super().__getitem__(index)
        self.alive = [ref for ref in self.alive if ref() is not None] + [weakref.ref(image)]
        self.most_alive, self.reads = max(self.most_alive, len(self.alive)), self.reads + 1
        self.sizes.add(image.shape)
        return image


def test_calibration_images_are_scaled_to_the_export_size_and_read_one_at_a_time(near_tie, tmp_path):
    """Twelve 320x240 photos (one JPEG stored sideways with an EXIF turn) calibrated at 64x48 pixels: each is decoded
    when ONNX Runtime asks for it, at most two arrays are alive at once, and each has at most 64x48 pixels."""
    files = []
    for seed in range(12):
        files.append(str(tmp_path / f"{seed}.png"))
        Image.fromarray(_photo(seed, 320, 240)).save(files[-1])
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees: stored 240x320, upright 320x240
    Image.fromarray(_photo(12, 240, 320)).save(tmp_path / "turned.jpg", exif=exif)
    files[5] = str(tmp_path / "turned.jpg")
    images = _Counted(files, 64 * 48)
    quantize_int8(near_tie[1], images, near_tie[2])
    assert images.reads == len(files) and images.most_alive <= 2
    assert images.sizes == {(1, 3, 48, 64)}


def test_few_calibration_images_and_a_low_int8_agreement_are_warned(near_tie, tmp_path, capsys):
    for seed in range(3):
        Image.fromarray(_photo(seed)).save(tmp_path / f"{seed}.png")
    opts = argparse.Namespace(calibration=str(tmp_path), calibration_images=32, check_sizes=[(64, 48)])
    calibration = export_onnx.choose_calibration(opts, near_tie[0])
    assert capsys.readouterr().err.strip() == (
        "warning: only 3 calibration image(s): ranges measured on so few may not cover the images you will predict "
        "on; give at least 8, a few dozen at best (--calibration, --calibration_images)")
    export_onnx.quantize(near_tie[1], calibration, near_tie[2], str(tmp_path / "m.onnx"))
    captured = capsys.readouterr()
    agreement = re.search(r"its labels equal fp32's on (\d+\.\d\d)% of the pixels of 3 of them", captured.out)
    assert agreement and float(agreement.group(1)) < 98
    assert captured.err.strip() == (
        f"warning: the INT8 labels equal fp32's on only {agreement.group(1)}% of the pixels of 3 calibration image(s), "
        "under 98%: check its validation score before deploying it, calibrate on more images like those you will "
        "predict on, or deploy the fp32 file")


def test_a_calibration_image_over_max_image_pixels_is_skipped_by_name(tmp_path, capsys):
    """What --max_image_pixels 3000 sets (export_onnx.run calls set_max_image_pixels): a 64x48 image, 3,072 pixels,
    is skipped before it is decoded; a 48x40 one is used."""
    Image.fromarray(_photo(0)).save(tmp_path / "a.png")
    Image.fromarray(_photo(1, 48, 40)).save(tmp_path / "b.png")
    set_max_image_pixels(3000)
    images = choose_calibration_images(str(tmp_path), 32, smallest=8, max_pixels=64 * 48)
    assert images.files == [str(tmp_path / "b.png")]
    assert capsys.readouterr().err.strip() == (
        f"skipped: calibration image {tmp_path / 'a.png'} is 64x48 = 3,072 pixels, more than --max_image_pixels 3000 "
        "(a guard against decompression bombs); if you trust the file, raise it or pass --max_image_pixels none")
