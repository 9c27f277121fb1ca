"""Write the synthetic multi-band GeoTIFF dataset (your-own-data layout) of ``make demo-geo`` and a larger scene.

Usage: python tools/make_geo_dataset.py [--root datasets/data/geo_demo] [--num_train 96] [--num_val 24]
       [--size 128] [--scene_size 1024] [--seed 0]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    stop_quietly_while_starting()

from datasets.geo_demo import BAND_NAMES, CLASS_NAMES, SCENE_FILE, STAMP_FILE, make_geo_dataset  # noqa: E402
from datasets.utils import DatasetError, run_generating_tool  # noqa: E402
from utils.io.raster import RasterError  # noqa: E402
from utils.io.stop_signals import exit_keeping_status  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="datasets/data/geo_demo", help="folder to write (kept if already complete)")
    parser.add_argument("--num_train", type=int, default=96)
    parser.add_argument("--num_val", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="tile side in pixels")
    parser.add_argument("--scene_size", type=int, default=1024, help="side of the scene to predict, in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run_generating_tool(lambda: write(args), args.root, STAMP_FILE)


def write(args: argparse.Namespace) -> int:
    """Write the dataset of ``args`` unless it is there, and print what it holds; the exit status."""
    try:
        root = make_geo_dataset(args.root, args.num_train, args.num_val, args.size, args.scene_size, args.seed)
    except (DatasetError, RasterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{root}: {args.num_train} train + {args.num_val} val tiles of {args.size}x{args.size}, 4 bands uint16 "
          f"({', '.join(BAND_NAMES)}), classes {', '.join(CLASS_NAMES)}; scene to predict: "
          f"{os.path.join(root, SCENE_FILE)} ({args.scene_size}x{args.scene_size})")
    return 0


if __name__ == "__main__":
    exit_keeping_status(main())
