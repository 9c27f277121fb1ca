"""predict.py on a large multi-band GeoTIFF scene: seconds per megapixel and peak resident memory on this machine.

Writes a --size x --size scene of --bands uint16 bands (a Sentinel-2 tile is 10980 x 10980: 0.9 GB raw for 4 bands)
as a tiled GeoTIFF, strip by strip, and a checkpoint of --model for those bands with random weights (BatchNorm
statistics and band statistics measured on a piece of the scene, as training leaves them), then runs predict.py as
a user would (--output label, its default window and stride) and reports the whole run's wall time, seconds per
megapixel and the peak resident memory of the predict.py process, against the target of --max_gib.
Usage: python bench/geotiff.py [--size 10980] [--bands 4] [--model deeplabv3plus_mobilenet] [--keep DIR]
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import network  # noqa: E402
from bench.onnx import calibrate_batchnorm  # noqa: E402
from bench.original import REPO  # noqa: E402
from bench.video import measured_run  # noqa: E402
from utils.io.bands import BandSpec, normalize_bands  # noqa: E402
from utils.runtime.device import hardware_name, resolve_amp, resolve_channels_last  # noqa: E402
from utils.io.raster import import_rasterio  # noqa: E402

CLASSES = 10  # a land-cover legend
STRIP_ROWS = 512
PIXEL_SIZE = 10.0
CALIBRATION_SIDE = 512  # the piece of the scene the statistics are measured on
MIB = 1024


def strip(top: int, rows: int, width: int, bands: int) -> np.ndarray:
    """Rows ``top:top + rows`` of the scene: smooth fields of different scales per band, and noise."""
    rng = np.random.default_rng(top)
    y = np.arange(top, top + rows, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    planes = [1500 + 800 * band + 600 * np.sin(x / (40 + 25 * band)) * np.cos(y / (55 + 15 * band))
              + rng.normal(0, 60, (rows, width)).astype(np.float32) for band in range(bands)]
    return np.clip(np.stack(planes), 1, 65535).astype(np.uint16)


def write_scene(path: str, size: int, bands: int) -> None:
    rasterio = import_rasterio()
    transform = rasterio.transform.Affine(PIXEL_SIZE, 0.0, 399960.0, 0.0, -PIXEL_SIZE, 5100000.0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint16",
                       crs="EPSG:32633", transform=transform, nodata=0, tiled=True, blockxsize=512,
                       blockysize=512) as dst:
        for top in range(0, size, STRIP_ROWS):
            rows = min(STRIP_ROWS, size - top)
            dst.write(strip(top, rows, size, bands), window=rasterio.windows.Window(0, top, size, rows))


def write_checkpoint(path: str, model_name: str, bands: int, size: int) -> None:
    side = min(CALIBRATION_SIDE, size)
    piece = torch.from_numpy(strip(0, side, size, bands)[:, :, :side]).float()
    flat = piece.flatten(1)
    half = side // 2
    quarters = torch.stack([piece[:, :half, :half], piece[:, :half, half:2 * half], piece[:, half:2 * half, :half],
                            piece[:, half:2 * half, half:2 * half]])  # BatchNorm needs a batch
    spec = BandSpec(tuple(range(1, bands + 1)), bands, tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist()),
                    0.0, (1, 2, 3) if bands >= 3 else None)
    torch.manual_seed(0)
    model = network.build_model(model_name, CLASSES, 16, pretrained_backbone=False, in_channels=bands)
    calibrate_batchnorm(model, quarters, prepare=lambda values: normalize_bands(values, spec))
    torch.save({"model_state": model.state_dict(), "model_name": model_name, "input_bands": spec.to_record()}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="scene side in pixels")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--model", default="deeplabv3plus_mobilenet")
    parser.add_argument("--max_gib", type=float, default=3.0, help="the peak resident memory target")
    parser.add_argument("--keep", default=None, metavar="DIR", help="write (or reuse) the scene and checkpoint here")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    amp, _ = resolve_amp("auto", cpu)
    layout = "channels_last" if resolve_channels_last("auto", cpu)[0] else "NCHW"
    print(f"{hardware_name(cpu)}, torch {torch.__version__}, rasterio {import_rasterio().__version__}; {args.model}, "
          f"{args.size}x{args.size} x {args.bands} bands uint16, {CLASSES} classes; predict.py's defaults here: "
          f"--amp {amp}, {layout}, windows of 513 every 341 pixels")
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.abspath(args.keep or tmp)
        os.makedirs(folder, exist_ok=True)
        scene = os.path.join(folder, f"scene_{args.size}_{args.bands}.tif")
        ckpt = os.path.join(folder, f"model_{args.bands}.pth")
        if not os.path.isfile(scene):
            write_scene(scene, args.size, args.bands)
        if not os.path.isfile(ckpt):
            write_checkpoint(ckpt, args.model, args.bands, args.size)
        seconds, peak_mib = measured_run([os.path.join(REPO, "predict.py"), "--input", scene, "--ckpt", ckpt,
                                          "--output", "label", "--save_val_results_to", os.path.join(tmp, "out")])
    megapixels = args.size * args.size / 1e6
    peak = peak_mib / MIB
    print(f"whole predict.py run (start-up included): {seconds:.1f} s, {seconds / megapixels:.2f} s per megapixel "
          f"({megapixels:.1f} MP); peak resident memory {peak:.2f} GiB "
          f"({'within' if peak < args.max_gib else 'OVER'} the {args.max_gib:g} GiB target)")


if __name__ == "__main__":
    main()
