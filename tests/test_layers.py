"""The packages import downward only: utils/ and metrics/ import no other package of ours; datasets/ and network/
import utils/ but not each other or the scripts; tools/ never import bench/."""
import ast
import glob
import os

import pytest

from tests.conftest import ROOT

OURS = {"utils", "metrics", "datasets", "network", "tools", "bench", "main", "predict"}
MAY_IMPORT = {"utils": set(), "metrics": set(), "datasets": {"utils"}, "network": {"utils"},
              "tools": {"utils", "metrics", "datasets", "network", "main", "predict", "tools"}}


def _imported_packages(path: str):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                yield top, node.lineno


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_run_downward(package):
    wrong = [f"{os.path.relpath(path, ROOT)}:{line} imports {top}"
             for path in glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)
             for top, line in _imported_packages(path) if top != package and top not in MAY_IMPORT[package]]
    assert not wrong, wrong
