"""Every function of the project, tests included, fits on a screen: at most MAX_LINES lines from its ``def`` to
its last line (docstring and comments count). A longer one is split by concern, as main.get_argparser is into
argument groups."""
import ast
import glob
import os

from tests.conftest import ROOT

MAX_LINES = 60
SKIPPED_FOLDERS = (".venv", ".cache", ".git", "datasets/data", "checkpoints", "results")


def _project_files():
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        relative = os.path.relpath(path, ROOT)
        if not relative.startswith(SKIPPED_FOLDERS):
            yield relative


def _long_functions(relative: str):
    with open(os.path.join(ROOT, relative), encoding="utf-8") as f:
        tree = ast.parse(f.read(), relative)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_LINES:
                yield f"{relative}:{node.lineno} {node.name} ({length} lines)"


def test_every_function_is_at_most_60_lines():
    files = list(_project_files())
    assert {"main.py", "predict.py", os.path.join("utils", "io", "atomic.py")} <= set(files)
    assert [line for relative in files for line in _long_functions(relative)] == []


def test_the_check_finds_a_long_function(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.test_function_length.ROOT", str(tmp_path))
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert list(_long_functions("long.py")) == [f"long.py:1 long ({MAX_LINES + 1} lines)"]
