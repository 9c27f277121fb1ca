"""Start-up: the wall time of ``python main.py --help`` and ``python predict.py --help`` (every import the script
makes, and its argument parser), ours beside the original's, taking turns.

Usage: python bench/startup.py [--original PATH/TO/DeepLabV3Plus-Pytorch] [--rounds 7]
Without --original only ours are timed. Each figure is the fastest of --rounds runs (the machine's speed drifts);
the ratio is the original's time over ours.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.original import REPO, best_of_interleaved, original_env, skip_reason  # noqa: E402
from utils.runtime.device import hardware_name  # noqa: E402

SCRIPTS = ("main.py", "predict.py")


def main() -> None:
    """Time each script's --help, ours and (with --original) the original's, and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", default=None, help="a checkout of VainF/DeepLabV3Plus-Pytorch")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"{hardware_name(torch.device('cpu'))}, torch {torch.__version__}; fastest of {args.rounds} runs")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {f"ours {script}": ([os.path.join(REPO, script), "--help"], tmp) for script in SCRIPTS}
        reasons = {script: skip_reason(args.original, script) for script in SCRIPTS}
        env = original_env(tmp) if not all(reasons.values()) else {}
        for script, reason in reasons.items():
            if reason:
                print(f"original {script}: skipped, {reason}")
            else:
                runs[f"original {script}"] = ([os.path.join(os.path.abspath(args.original), script), "--help"],
                                              os.path.abspath(args.original), env)
        seconds = best_of_interleaved(runs, args.rounds)
    for script in SCRIPTS:
        ours, theirs = seconds[f"ours {script}"], seconds.get(f"original {script}")
        versus = f"   original {theirs:5.2f} s   {theirs / ours:4.2f}x" if theirs else ""
        print(f"{script:11s} --help: ours {ours:5.2f} s{versus}")


if __name__ == "__main__":
    main()
