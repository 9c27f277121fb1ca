"""Print the Mean IoU and each class's IoU of several evaluations (their metrics.json) side by side.

Usage: python tools/compare_metrics.py LABEL=results/run_a/metrics.json LABEL=results/run_b/metrics.json ...
"""
import json
import sys
from typing import List, Optional, Tuple


def read_runs(specs: List[str]) -> List[Tuple[str, dict]]:
    """(label, metrics.json content) per ``LABEL=PATH``; ValueError naming what cannot be read."""
    runs = []
    for spec in specs:
        label, _, path = spec.rpartition("=")
        try:
            with open(path) as f:
                runs.append((label or path, json.load(f)))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
    return runs


def table(runs: List[Tuple[str, dict]]) -> str:
    """Rows: Mean IoU, then each class's IoU (of the first run's classes); columns: the runs."""
    column = max(12, *(len(label) + 2 for label, _ in runs))

    def cell(value: Optional[float]) -> str:
        return f"{value:>{column}.4f}" if value is not None else f"{'-':>{column}}"

    width = max(len("Mean IoU"), *(len(name) for name in runs[0][1]["class_names"])) + 2
    lines = [" " * width + "".join(f"{label:>{column}}" for label, _ in runs),
             f"{'Mean IoU':<{width}}" + "".join(cell(report["summary"].get("Mean IoU")) for _, report in runs)]
    for name in runs[0][1]["class_names"]:
        lines.append(f"{name:<{width}}" + "".join(cell(report["per_class"].get(name, {}).get("IoU"))
                                                  for _, report in runs))
    return "\n".join(lines)


def main(argv=None) -> int:
    specs = sys.argv[1:] if argv is None else argv
    if not specs or specs[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if specs else 1
    try:
        print(table(read_runs(specs)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
