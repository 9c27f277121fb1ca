"""Multi-band imagery in the folder layout: band selection, nodata, band statistics, and the one-line errors."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DatasetError, FolderSegmentation
from datasets.band_stats import STATS_DIR, compute_band_stats, load_band_stats, resolve_band_spec
from datasets.raster_folder import RasterFolderSegmentation, holds_rasters
from metrics import StreamSegMetrics
from tests.helpers import UTM_33N, grid, write_raster_folder
from utils.loss import build_criterion
from utils.io.raster import RasterError, RasterFile, write_raster


@pytest.fixture
def folder(tmp_path):
    return write_raster_folder(str(tmp_path / "data"))


def _raw(path, bands):
    with RasterFile(path) as src:
        return src.read(bands)[0]


def test_bands_are_read_in_the_order_asked(folder):
    dataset = RasterFolderSegmentation(folder, "train", bands=(4, 2))
    image, _ = dataset[1]
    assert image.dtype == np.float32 and image.shape == (2, 32, 32)
    raw = _raw(dataset.images[1], (1, 2, 3, 4))
    assert np.array_equal(image, raw[[3, 1]])
    assert RasterFolderSegmentation(folder, "train").bands == (1, 2, 3, 4) and dataset.file_bands == 4


def test_nodata_pixels_are_ignored_in_the_loss_and_the_metrics_whatever_the_mask_says(folder):
    dataset = RasterFolderSegmentation(folder, "train")
    _, mask = dataset[0]
    target = np.asarray(mask)
    stored = np.asarray(dataset.read_mask(0))
    assert (target[:4, :4] == 255).all() and (stored[:4, :4] != 255).all()  # the mask names classes there
    assert np.array_equal(target[4:], stored[4:]) and np.array_equal(dataset.load_target(0), target)
    labels = torch.from_numpy(target.astype(np.int64))[None]
    logits = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    changed = logits.clone()
    changed[:, :, :4, :4] = torch.tensor([-50.0, 50.0, 0.0]).view(1, 3, 1, 1)
    criterion = build_criterion("cross_entropy")
    assert torch.equal(criterion(logits, labels), criterion(changed, labels))
    metrics = StreamSegMetrics(3)
    metrics.update(labels, changed.argmax(1))
    assert int(metrics.confusion_matrix.sum()) == 32 * 32 - 16


def test_band_statistics_are_computed_once_over_valid_pixels_and_cached(folder):
    dataset = RasterFolderSegmentation(folder, "train")
    mean, std = load_band_stats(dataset, log=print)
    pixels = np.concatenate([_raw(path, (1, 2, 3, 4)).reshape(4, -1) for path in dataset.images], axis=1).astype(float)
    valid = (pixels != 0).any(axis=0)  # all but tile 0's nodata corner
    assert (~valid).sum() == 16
    np.testing.assert_allclose(mean, pixels[:, valid].mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(std, pixels[:, valid].std(axis=1), rtol=1e-6)
    assert len(os.listdir(os.path.join(folder, STATS_DIR))) == 2  # the cache and its lock
    assert load_band_stats(RasterFolderSegmentation(folder, "train"), log=print) == (mean, std)
    assert compute_band_stats(RasterFolderSegmentation(folder, "train", bands=(2,)))[0] == (mean[1],)


def test_the_spec_prints_its_bands_and_takes_explicit_statistics(folder, tmp_path, capsys):
    stats = tmp_path / "stats.yaml"
    stats.write_text("mean: [1, 2, 3, 4]\nstd: [5, 6, 7, 8]\n")
    dataset = RasterFolderSegmentation(folder, "train", bands=(4, 3, 2))
    spec = resolve_band_spec(dataset, stats_file=str(stats))
    assert (spec.mean, spec.std, spec.nodata, spec.rgb_bands) == ((4.0, 3.0, 2.0), (8.0, 7.0, 6.0), 0.0, (4, 3, 2))
    assert "Bands: 3 bands of 4: band 4 mean 4 std 8" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="--rgb_bands 1,2,3 must be three of the bands read \\(4,3,2\\)"):
        resolve_band_spec(dataset, (1, 2, 3), str(stats))


def _break(folder, what):
    image, mask = os.path.join(folder, "images", "t001.tif"), os.path.join(folder, "masks", "t001.tif")
    labels = np.zeros((1, 32, 32), np.uint8)
    if what == "bands differ":
        write_raster(image, np.ones((3, 32, 32), np.uint16), UTM_33N, grid(500320.0))
    elif what == "mask size":
        write_raster(mask, np.zeros((1, 30, 32), np.uint8), UTM_33N, grid(500320.0))
    elif what == "mask shifted":
        write_raster(mask, labels, UTM_33N, grid(500330.0))
    elif what == "CRS":
        write_raster(mask, labels, "EPSG:32632", grid(500320.0))
    elif what == "NaN":
        values = np.ones((4, 32, 32), np.float32)
        values[2, 5, 5] = np.nan
        write_raster(image, values, UTM_33N, grid(500320.0))
    return image, mask


@pytest.mark.parametrize("what, named, message", [
    ("bands differ", "image", "has 3 bands but .* has 4; every image must have the same bands"),
    ("mask size", "mask", "is 32x30 but image .* is 32x32"),
    ("mask shifted", "mask", "has another geotransform than image"),
    ("CRS", "mask", "has CRS EPSG:32632 but image .* has EPSG:32633"),
    ("NaN", "image", "has NaN pixels that are not its nodata"),
])
def test_bad_input_is_one_line_naming_the_file(folder, what, named, message):
    image, mask = _break(folder, what)
    with pytest.raises((DatasetError, RasterError), match=message) as caught:
        RasterFolderSegmentation(folder, "train")[1]
    assert (image if named == "image" else mask) in str(caught.value) and "\n" not in str(caught.value)


def test_a_band_out_of_range_names_the_file(folder):
    with pytest.raises(DatasetError, match="band 5 \\(--bands\\) does not exist: image .*t000.tif has 4 band"):
        RasterFolderSegmentation(folder, "train", bands=(5, 1))


def test_geotiffs_are_imagery_and_pictures_stay_pictures(folder, tmp_path):
    assert holds_rasters(folder)
    pictures = tmp_path / "pictures"
    (pictures / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pictures / "images" / "a.tif")
    assert not holds_rasters(str(pictures))


def test_gray_16_bit_pngs_are_one_band_when_asked(tmp_path):
    root = tmp_path / "gray"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    values = (np.arange(24 * 20).reshape(20, 24) * 100).astype(np.uint16)
    Image.fromarray(values).save(root / "images" / "a.png")
    Image.fromarray(np.ones((20, 24), np.uint8)).save(root / "masks" / "a.png")
    (root / "classes.yaml").write_text("names: [background, cell]\n")
    image, mask = RasterFolderSegmentation(str(root), "train", bands=(1,))[0]
    assert image.shape == (1, 20, 24) and np.array_equal(image[0], values) and np.asarray(mask).max() == 1
    rgb, _ = FolderSegmentation(str(root), "train")[0]  # without --bands: 8-bit RGB, as before
    assert rgb.mode == "RGB"
