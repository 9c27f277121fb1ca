"""The one table of optional packages agrees with the requirements files and with what is installed; a missing
package is one line naming what needs it and the pip command."""
import importlib.metadata
import os
import re
import sys

import pytest

from tests.conftest import ROOT
from utils.io.optional_packages import PINS, import_optional, not_installed, optional_module, pip_install


def _requirement_lines():
    lines = []
    for name in ("requirements.txt", "requirements-dev.txt"):
        with open(os.path.join(ROOT, name)) as f:
            lines += [line.split("#")[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("-")]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_pin_of_the_table_is_the_one_in_the_requirements_files():
    pinned = {_canonical(line.split("==")[0]): line for line in _requirement_lines() if "==" in line}
    for module, requirement in PINS.items():
        name = _canonical(requirement.split("==")[0])
        assert pinned.get(name) == requirement, f"{module}: the table says {requirement}, the files {pinned.get(name)}"


@pytest.mark.parametrize("module", sorted(PINS))
def test_each_module_is_installed_by_its_requirement_at_the_pinned_version(module):
    name, version = PINS[module].split("==")
    distributions = [_canonical(d) for d in importlib.metadata.packages_distributions().get(module, [])]
    assert _canonical(name) in distributions, f"{module} is installed by {distributions}, not {name}"
    assert importlib.metadata.version(name) == version


def test_the_pip_command_pins_and_keeps_the_options():
    assert pip_install("av") == "pip install av==18.1.0"
    assert pip_install("onnx", "onnxruntime") == "pip install onnx==1.23.2 onnxruntime==1.32.0"
    assert pip_install("segmentation_models_pytorch") == "pip install --no-deps segmentation-models-pytorch==0.6.0"


def test_a_missing_package_is_one_line_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # as if not installed: importing it raises ImportError
    assert optional_module("av") is None
    with pytest.raises(KeyError, match="^'av is not installed; it is needed for videos: pip install av==18.1.0'$"):
        import_optional("av", "videos", KeyError)
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    with pytest.raises(SystemExit) as stopped:  # a script's way out: the line goes to stderr, exit status 1
        import_optional("onnxruntime.quantization", "INT8", SystemExit, with_packages=("onnx", "onnxruntime"))
    assert stopped.value.code == not_installed("onnxruntime", "INT8", "onnx", "onnxruntime") == (
        "onnxruntime is not installed; it is needed for INT8: pip install onnx==1.23.2 onnxruntime==1.32.0")


def test_an_installed_package_is_the_module_itself():
    import json

    assert import_optional("json", "nothing", RuntimeError, package="av") is json


def test_an_installed_package_that_fails_to_import_says_why(monkeypatch):
    """A version that does not fit (an ImportError other than a missing module) is not called "not installed"."""
    real = importlib.import_module

    def broken(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("cannot import name 'InferenceSession' from partially initialized module")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(SystemExit) as stopped:
        import_optional("onnxruntime", "ONNX", SystemExit)
    assert stopped.value.code == ("onnxruntime is installed but cannot be imported (cannot import name "
                                  "'InferenceSession' from partially initialized module); it is needed for ONNX: "
                                  "pip install onnxruntime==1.32.0")
