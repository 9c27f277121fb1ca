"""tools/check_precision.py: the diagnostic for README "Known issues" runs and measures what it says."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_precision_check_reports_batchnorm_statistics_and_scores(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "check_precision.py"), "--device", "cpu",
         "--model", "deeplabv3plus_mobilenet", "--settings", "fp32", "fp32+cl", "bf16+cl", "--steps", "2",
         "--batch", "2", "--crop", "64", "--num_val", "2", "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["fp32", "fp32+cl", "bf16+cl"]
    assert rows["fp32"]["bn_dev_step1"] == 0.0  # the reference against itself
    assert rows["fp32+cl"]["bn_dev_step1"] < 1e-3  # same arithmetic, another memory layout
    assert 1e-4 < rows["bf16+cl"]["bn_dev_step1"] < 0.2  # bf16 keeps about 3 significant digits
    for row in rows.values():
        assert set(row["mean_iou"]) == {"fp32", "fp32+cl", "bf16+cl"}
        assert all(0.0 <= v <= 1.0 for v in row["mean_iou"].values())
    assert "mean IoU evaluated as: fp32  fp32+cl  bf16+cl" in result.stdout
