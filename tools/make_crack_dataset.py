"""Write the synthetic crack dataset (your-own-data layout) and print how much of it is crack.

Usage: python tools/make_crack_dataset.py [--root datasets/data/cracks] [--num_train 160] [--num_val 40]
       [--size 160] [--seed 0]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # before torch loads (seconds): Ctrl-C or SIGTERM then ends it in one line
    from utils.io.stop_signals import stop_quietly_while_starting
    stop_quietly_while_starting()

from datasets.cracks import STAMP_FILE, crack_statistics, make_crack_dataset  # noqa: E402
from datasets.utils import DatasetError, run_generating_tool  # noqa: E402
from utils.io.stop_signals import exit_keeping_status  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="datasets/data/cracks", help="folder to write (kept if already complete)")
    parser.add_argument("--num_train", type=int, default=160)
    parser.add_argument("--num_val", type=int, default=40)
    parser.add_argument("--size", type=int, default=160, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run_generating_tool(lambda: write(args), args.root, STAMP_FILE)


def write(args: argparse.Namespace) -> int:
    """Write the dataset of ``args`` unless it is there, and print what it holds; the exit status."""
    try:
        root = make_crack_dataset(args.root, args.num_train, args.num_val, args.size, args.seed)
        share, empty, images = crack_statistics(root)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{root}: {args.num_train} train + {args.num_val} val images of {args.size}x{args.size}, "
          f"{share:.2%} of pixels crack, {empty} of {images} images without a crack")
    return 0


if __name__ == "__main__":
    exit_keeping_status(main())
