"""Multi-band GeoTIFFs end to end: main.py records the bands in its checkpoint, predict.py writes georeferenced
label maps window by window (equal to predicting in memory), refuses inputs with other bands, and ONNX takes N bands.
"""

import re

import numpy as np
import pytest
import torch

import main as train_script
import predict
from network.trained_model import load_trained_model
from tests.helpers import UTM_33N, grid, write_raster_folder
from utils.io.bands import normalize_bands
from utils.io.checkpoint import load_checkpoint
from utils.inference.predictor import InferenceRecipe, SegmentationPredictor, sliding_window_labels
from utils.io.raster import RasterFile, write_raster

rasterio = pytest.importorskip("rasterio", reason="rasterio is a test dependency (requirements-dev.txt)")

MODEL = "deeplabv3plus_mobilenet"
SCENE = (260, 300)  # height, width: more than one label tile, windows that overlap unevenly
WINDOW, STRIDE = "128", "96"


def _train(root, *extra):
    args = ["--data_root", str(root / "data"), "--dataset", "folder", "--model", MODEL, "--output_stride", "16",
            "--no-pretrained_backbone", "--crop_size", "32", "--batch_size", "2", "--num_workers", "0",
            "--total_itrs", "2", "--val_interval", "2", "--checkpoint_dir", str(root / "ck"),
            "--results_dir", str(root / "res"), "--amp", "off", *extra]
    assert train_script.main(args) == 0
    return str(root / "ck" / f"best_{MODEL}_folder_os16.pth")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-band model trained for two steps on GeoTIFF tiles, and a georeferenced scene with a nodata corner."""
    root = tmp_path_factory.mktemp("geo")
    write_raster_folder(str(root / "data"))
    ckpt = _train(root)
    values = np.random.default_rng(5).integers(1000, 5000, (4, *SCENE)).astype(np.uint16)
    values[:, :10, :7] = 0
    scene = str(root / "scene.tif")
    write_raster(scene, values, UTM_33N, grid(600000.0, 5000000.0), nodata=0)
    return root, ckpt, scene


def test_training_prints_and_records_the_bands_and_their_normalisation(trained, tmp_path, capsys):
    checkpoint = load_checkpoint(trained[1])
    record = checkpoint["input_bands"]
    assert record["bands"] == [1, 2, 3, 4] and record["file_bands"] == 4 and record["nodata"] == 0.0
    assert len(record["mean"]) == 4 and 1000 < record["mean"][0] < 1200 and record["rgb_bands"] == [1, 2, 3]
    assert checkpoint["model_state"]["backbone.low_level_features.0.0.weight"].shape[1] == 4
    root = tmp_path
    write_raster_folder(str(root / "data"))
    record = load_checkpoint(_train(root, "--bands", "4,3,2"))["input_bands"]
    out = capsys.readouterr().out
    assert record["bands"] == [4, 3, 2] and "Bands: 3 bands of 4: band 4 mean" in out
    assert "Input bands: first convolution" not in out  # 3 bands, shown in their order: the RGB stem as it is


def _predict(root, ckpt_or_onnx, scene, *extra, flag="--ckpt"):
    out = root / "out"
    code = predict.main(["--input", scene, flag, ckpt_or_onnx, "--save_val_results_to", str(out), "--num_workers",
                         "0", "--window", WINDOW, "--stride", STRIDE, *extra])
    return code, out


def _labels(path):
    with RasterFile(path, "output") as src:
        return src.read((1,))[0][0], src.info


def test_the_label_map_is_a_georeferenced_tiled_deflate_geotiff_with_the_palette(trained, tmp_path):
    code, out = _predict(tmp_path, trained[1], trained[2], "--output", "label", "color", "overlay")
    assert code == 0
    labels, info = _labels(str(out / "scene_label.tif"))
    with rasterio.open(trained[2]) as scene, rasterio.open(out / "scene_label.tif") as written:
        assert written.crs == scene.crs and written.transform == scene.transform
        assert (written.width, written.height, written.count, written.dtypes[0]) == (300, 260, 1, "uint8")
        assert written.nodata == 255 and written.profile["tiled"] and written.profile["compress"] == "deflate"
        assert written.colormap(1)[0][:3] == (0, 0, 0) and written.colormap(1)[1][:3] == (128, 0, 0)  # VOC colours
    assert (labels[:10, :7] == 255).all() and (labels[10:] < 3).all() and (labels[:, 7:] < 3).all()
    from PIL import Image
    for name in ("scene.png", "scene_overlay.png"):
        with Image.open(out / name) as preview:
            assert preview.size == (300, 260)
    code, _ = _predict(tmp_path, trained[1], trained[2], "--output", "label", "color", "overlay")
    assert code == 0  # a rerun replaces its own label map and previews: they carry the mark


def test_windowed_prediction_from_the_file_equals_prediction_in_memory(trained, tmp_path):
    code, out = _predict(tmp_path, trained[1], trained[2], "--output", "label", "--amp", "off",
                         "--no-channels_last")
    assert code == 0
    opts = predict.get_argparser().parse_args(["--input", trained[2], "--ckpt", trained[1], "--amp", "off",
                                               "--no-channels_last"])
    predict.resolve_speed_options(opts, torch.device("cpu"))
    model, spec = predict.load_model(opts, torch.device("cpu"))  # as predict.py sets it up, fused activations too
    bands = spec.bands
    predictor = SegmentationPredictor(model, spec.num_classes, InferenceRecipe(),
                                      prepare=lambda values: normalize_bands(values, bands))
    with RasterFile(trained[2]) as src:
        values, missing = src.read(bands.bands, nodata=src.nodata_values(bands.bands))
    whole = torch.from_numpy(values)
    with torch.inference_mode():
        expected = sliding_window_labels(predictor.probabilities, whole, spec.num_classes, int(WINDOW), int(STRIDE),
                                         taper=True)
        expected[torch.from_numpy(missing)] = 255
        assert np.array_equal(_labels(str(out / "scene_label.tif"))[0], expected.numpy())
        # one window as large as the scene is the whole-image prediction
        code, out = _predict(tmp_path / "one", trained[1], trained[2], "--output", "label", "--amp", "off",
                             "--no-channels_last", "--window", "512")
        whole_image = predictor.labels(whole[None])[0]
        whole_image[torch.from_numpy(missing)] = 255
    assert code == 0 and np.array_equal(_labels(str(out / "scene_label.tif"))[0], whole_image.numpy())


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the plain TIFF, opened here
def test_inputs_with_other_bands_are_refused_and_a_scene_without_crs_gives_a_plain_tiff(trained, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_raster(str(inputs / "rgb.tif"), np.ones((3, 40, 40), np.uint16), UTM_33N, grid())
    write_raster(str(inputs / "plain.tif"), np.ones((4, 40, 40), np.uint16))
    write_raster(str(inputs / "strip.tif"), np.ones((4, 2, 40), np.uint16), UTM_33N, grid())  # a strip cut too thin
    code, out = _predict(tmp_path, trained[1], str(inputs), "--output", "label")
    captured = capsys.readouterr()
    assert code == 1 and "1 done, 2 skipped" in captured.out
    assert (f"skipped: input {inputs / 'rgb.tif'} has 3 band(s) but the model reads bands 1,2,3,4 of 4-band images"
            in captured.err)
    assert re.search(f"skipped: {re.escape(str(inputs / 'strip.tif'))}: an image of 40x2 is smaller than this model "
                     r"takes: at least \d+x\d+ pixels\n", captured.err)
    assert f"note: {inputs / 'plain.tif'} has no CRS: its label map plain_label.tif is a plain TIFF" in captured.out
    with rasterio.open(out / "plain_label.tif") as written:
        assert written.crs is None and (written.width, written.height) == (40, 40)
    assert not (out / "rgb_label.tif").exists()


def test_onnx_takes_the_bands_and_its_masks_agree_with_pytorch(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from tools import export_onnx
    from utils.inference.onnx_model import OnnxSegmenter

    output = str(tmp_path / "model.onnx")
    assert export_onnx.main(["--ckpt", trained[1], "--output", output, "--check_sizes", "64x64", "80x48"]) == 0
    metadata = OnnxSegmenter(output).metadata
    assert metadata.bands == load_trained_model(trained[1])[1].bands and metadata.mean == metadata.bands.mean
    code, onnx_out = _predict(tmp_path / "onnx", output, trained[2], "--output", "label", flag="--onnx")
    assert code == 0
    code, torch_out = _predict(tmp_path / "torch", trained[1], trained[2], "--output", "label", "--amp", "off")
    assert code == 0
    onnx_labels, torch_labels = (_labels(str(out / "scene_label.tif"))[0] for out in (onnx_out, torch_out))
    assert (onnx_labels == torch_labels).mean() >= 0.999
