"""Band specs, statistics and previews of multi-band imagery (utils.bands), and reading rasters (utils.raster)."""
import argparse

import numpy as np
import pytest
import torch

from utils.io.bands import (BandSpec, BandStats, band_list, default_rgb_bands, normalize_bands, read_band_stats_file,
                            stretch_to_uint8)
from utils.io.raster import RasterError, RasterFile, write_raster


def test_band_lists_are_1_based_unique_numbers():
    assert band_list("4,3,2") == (4, 3, 2) and band_list("1") == (1,)
    for bad in ("0,1", "a,b", "2,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            band_list(bad)


def test_statistics_merged_image_by_image_equal_those_of_all_pixels_at_once():
    rng = np.random.default_rng(0)
    pixels = rng.normal(3000, 40, (2, 5000)) + np.array([[0.0], [20000.0]])  # 16-bit-like values, small spread
    whole, parts = BandStats(2), BandStats(2)
    whole.add(pixels)
    for chunk in np.array_split(pixels, 7, axis=1):
        part = BandStats(2)
        part.add(chunk)
        parts.merge(part)
    parts.add(pixels[:, :0])  # an image whose every pixel is nodata
    np.testing.assert_allclose(parts.result(), whole.result(), rtol=1e-12)
    np.testing.assert_allclose(whole.result()[0], pixels.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(whole.result()[1], pixels.std(axis=1), rtol=1e-9)


def test_band_stats_file_takes_one_value_per_file_band_or_per_band_read(tmp_path):
    path = tmp_path / "s2.yaml"
    path.write_text("mean: [10, 20, 30, 40]\nstd: [1, 2, 3, 4]\n")
    assert read_band_stats_file(str(path), (4, 2), 4) == ((40.0, 20.0), (4.0, 2.0))
    path.write_text("mean: [40, 20]\nstd: [4, 2]\n")
    assert read_band_stats_file(str(path), (4, 2), 4) == ((40.0, 20.0), (4.0, 2.0))
    path.write_text("mean: [1, 2, 3]\nstd: [1, 1, 1]\n")
    with pytest.raises(ValueError, match="one per band of the files \\(4\\) or per band read \\(2\\)"):
        read_band_stats_file(str(path), (4, 2), 4)


def test_rgb_bands_default_to_those_described_so_else_the_first_three():
    assert default_rgb_bands((1, 2, 3, 4), ("B", "G", "R", "NIR")) == (3, 2, 1)
    assert default_rgb_bands((2, 3, 4, 8), ("Blue", "Green", "Red", "NIR")) == (4, 3, 2)
    assert default_rgb_bands((5, 6, 7), ("", "", "")) == (5, 6, 7)
    assert default_rgb_bands((1, 2), ("", "")) is None


def test_a_spec_survives_its_record_and_normalises_per_band():
    spec = BandSpec((4, 3, 2), 13, (10.0, 20.0, 30.0), (2.0, 4.0, 5.0), 0.0, (4, 3, 2), ("B4", "B3", "B2"))
    assert BandSpec.from_record(spec.to_record()) == spec and spec.rgb_positions == (0, 1, 2)
    values = torch.tensor([12.0, 28.0, 40.0]).view(1, 3, 1, 1)
    assert normalize_bands(values, spec).flatten().tolist() == [1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="3 bands but 2 means"):
        BandSpec.from_record({**spec.to_record(), "mean": [1, 2]})


def test_stretch_maps_the_2_and_98_percentiles_to_black_and_white():
    values = np.arange(100, dtype=np.float32).reshape(1, 10, 10) * 7
    out = stretch_to_uint8(values)
    assert out[0, 0, 0] == 0 and out[0, -1, -1] == 255 and out.dtype == np.uint8
    valid = np.ones((10, 10), bool)
    valid[0] = False
    assert (stretch_to_uint8(values, valid)[0, 0] == 0).all()


def test_nodata_is_where_every_band_read_holds_it_and_other_nans_are_refused(tmp_path):
    values = np.ones((2, 3, 4), np.float32)
    values[:, 0, 0] = np.nan  # nodata in both bands
    values[0, 1, 1] = np.nan  # in one band only: not nodata, so a NaN that cannot be used
    path = str(tmp_path / "f.tif")
    write_raster(path, values, nodata=float("nan"))
    with RasterFile(path) as src:
        with pytest.raises(RasterError, match="f.tif has NaN pixels that are not its nodata"):
            src.read((1, 2), nodata=src.nodata_values((1, 2)))
        read, missing = src.read((2,), nodata=src.nodata_values((2,)))
    assert missing[0, 0] and missing.sum() == 1 and read[0, 0, 0] == 0 and read.dtype == np.float32


def test_without_rasterio_the_error_is_one_line_with_the_pip_command(monkeypatch):
    import sys

    from utils.io.raster import import_rasterio

    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if it were not installed
    with pytest.raises(RasterError, match="^rasterio is not installed; it is needed for multi-band and GeoTIFF "
                                          "imagery: pip install rasterio==1.4.4$"):
        import_rasterio()
