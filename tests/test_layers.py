"""The packages import downward only: utils/ and metrics/ import no other package of ours; datasets/ and network/
import utils/ but not each other or the scripts; tools/ never import bench/. Inside utils/ the same holds floor by
floor: the root modules, then io/, then runtime/ and reporting/, then inference/ (as each __init__ says)."""
import ast
import glob
import os
import subprocess
import sys

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


UTILS_ROOT = {"config", "constants", "ext_transforms", "loss", "scheduler", "utils", "visualizer"}
UTILS_MAY_IMPORT = {"root": {"root"}, "io": {"root", "io"}, "runtime": {"root", "io", "runtime"},
                    "reporting": {"root", "io", "reporting"},
                    "inference": {"root", "io", "runtime", "reporting", "inference"}}


def _utils_floor(module: str) -> str:
    """The floor of ``utils.X[.Y]`` (or of the file utils/X[/Y].py): a sub-package's name, or "root"."""
    part = module.split(".")[1] if "." in module else ""
    return part if part in UTILS_MAY_IMPORT else "root"


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_run_downward(package):
    wrong = [f"{os.path.relpath(path, ROOT)}:{line} imports {top}"
             for path in glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)
             for top, line in _imported_packages(path) if top != package and top not in MAY_IMPORT[package]]
    assert not wrong, wrong


def test_utils_floors_import_downward():
    wrong = []
    for path in glob.glob(os.path.join(ROOT, "utils", "**", "*.py"), recursive=True):
        module = os.path.splitext(os.path.relpath(path, ROOT))[0].replace(os.sep, ".")
        tree = ast.parse(open(path).read(), path)
        imported = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert all(node.level == 0 for node in imported), f"{module}: relative import (write utils.X in full)"
        for node in imported:
            if node.module == "utils":
                targets = [f"utils.{alias.name}" for alias in node.names]
            elif node.module and node.module.startswith("utils."):
                targets = [node.module]
            else:
                continue
            for target in targets:
                if _utils_floor(target) not in UTILS_MAY_IMPORT[_utils_floor(module)]:
                    wrong.append(f"{module}:{node.lineno} imports {target}")
    assert not wrong, wrong


def test_utils_root_holds_the_original_helpers_and_at_most_a_few_more():
    modules = {os.path.splitext(name)[0] for name in os.listdir(os.path.join(ROOT, "utils")) if name.endswith(".py")}
    assert modules - {"__init__"} == UTILS_ROOT and len(modules) <= 8
    for package in UTILS_MAY_IMPORT.keys() - {"root"}:
        doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, "utils", package, "__init__.py")).read()))
        assert doc and "May import" in doc and len(doc.splitlines()) == 2, package


def test_the_scripts_import_neither_torchvision_nor_torch_s_compiler():
    """torchvision's package import loads torch._dynamo (about 2 s a process on a laptop CPU): the scripts and
    tools start without it (and a one-process training run on the CPU never loads it:
    tests/utils/test_training_utils.py)."""
    scripts = ["main", "predict"] + sorted(f"tools.{os.path.splitext(name)[0]}" for name in os.listdir(
        os.path.join(ROOT, "tools")) if name.endswith(".py") and name != "__init__.py")
    code = f"import sys\nfor name in {scripts!r}: __import__(name)\nprint(sorted(m for m in ('torchvision', " \
           f"'torch._dynamo') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_original_s_package_names_are_there_and_load_on_first_use():
    """A fork's main.py calls utils.set_bn_momentum and utils.PolyLR (the original's utils/__init__.py imported them);
    here they are imported when first read, so that importing one module of utils imports no other."""
    code = ("import sys, torch\nimport utils.constants\n"
            "print(sorted(m for m in sys.modules if m.startswith('utils.')))\n"
            "import utils\nfrom utils import loss, scheduler, utils as helpers, visualizer\n"
            "assert utils.PolyLR is scheduler.PolyLR and utils.FocalLoss is loss.FocalLoss\n"
            "assert utils.Visualizer is visualizer.Visualizer and utils.mkdir is helpers.mkdir\n"
            "assert utils.set_bn_momentum is helpers.set_bn_momentum and utils.fix_bn is helpers.fix_bn\n"
            "image = torch.rand(3, 4, 4)\nmean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]\n"
            "normalised = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]\n"
            "assert torch.allclose(utils.denormalize(normalised, mean, std), image, atol=1e-6)\n"
            "assert torch.allclose(utils.Denormalize(mean, std)(normalised), image, atol=1e-6)\n"
            "assert not hasattr(utils, 'set_bn') and {'PolyLR', 'loss', 'mkdir'} <= set(dir(utils))\n"
            "namespace = {}\nexec('from utils import *', namespace)\nassert namespace['FocalLoss'] is loss.FocalLoss\n"
            "assert utils.ext_transforms.ExtCompose and utils.FocalLoss().gamma == 0  # the original's default\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "['utils.constants']", done.stdout + done.stderr
