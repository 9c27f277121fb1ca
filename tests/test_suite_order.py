"""The suite's own set-up: the files that conftest.py starts first exist (a renamed file would silently lose its
place at the front)."""
import os

from tests.conftest import LONGEST_FILES, ROOT


def test_every_file_started_first_exists():
    missing = [path for path in LONGEST_FILES if not os.path.isfile(os.path.join(ROOT, "tests", path))]
    assert not missing, f"tests/conftest.py LONGEST_FILES names files that are gone: {missing}"
