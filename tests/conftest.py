"""Make the repository root importable (``network``, ``datasets``, ``utils``, ...) from every test; shared fixtures."""
import os
import shutil
import sys
import urllib.error
from typing import List

import pytest

# One thread per process, set before torch is imported (and inherited by the processes that tests start): `make test`
# runs two pytest processes on two cores, and the tests' tiny tensors gain nothing from a second thread, whose OpenMP
# spin-waits only take CPU time from the other process (several times the work on a busy machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: downloads and the timm hub fail as they do offline."""
    from network import weights

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(weights, "_hub_reachable", lambda: False)
    return tmp_path / "torch_home"


def default_output_folders() -> List[str]:
    """The folders main.py and predict.py write to when not told (--checkpoint_dir, --results_dir,
    --save_val_results_to), relative to where they run: in a clone, the user's own runs may have filled them."""
    import main
    import predict

    training = main.get_argparser()
    return [training.get_default("checkpoint_dir"), training.get_default("results_dir"),
            predict.get_argparser().get_default("save_val_results_to")]


def _repository_state(output_folders: List[str]) -> dict:
    """The repository's top-level names (Python's caches and hidden files aside) and what ``output_folders`` hold,
    with modification times."""
    state = {"": sorted(name for name in os.listdir(ROOT) if not name.startswith(".") and name != "__pycache__")}
    for folder in output_folders:
        if os.path.isdir(os.path.join(ROOT, folder)):
            state[folder] = sorted((entry.name, entry.stat().st_mtime_ns)
                                   for entry in os.scandir(os.path.join(ROOT, folder)))
    return state


@pytest.fixture(scope="session", autouse=True)
def repository_left_as_found():
    """Every test writes under its own temporary folder: a run that forgot --results_dir or --checkpoint_dir
    would write into the clone (over the user's own results) and race the other pytest process there."""
    output_folders = default_output_folders()
    before = _repository_state(output_folders)
    yield
    after = _repository_state(output_folders)
    changed = sorted(key or "the repository's top level" for key in set(before) | set(after)
                     if before.get(key) != after.get(key))
    assert not changed, f"the tests wrote into {ROOT}: {', '.join(changed)} changed (give every run folders " \
                        "under tmp_path)"


@pytest.fixture(scope="session", autouse=True)
def subprocess_temp_folder(tmp_path_factory):
    """The processes the tests start make their temporary files under pytest's folder (torchrun's agent leaves its
    log folders behind), which goes with it when the run passes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("subprocess_tmp")))
        yield


@pytest.fixture(scope="module", autouse=True)
def module_folders_removed(request, tmp_path_factory):
    """What a test file's module fixtures wrote (a trained checkpoint, exported models, hub caches: up to 600 MB a
    file) goes as soon as the file's tests have all passed, not at the end of the run, which once held 6.4 GB of
    them at once; `tmp_path_retention_policy = failed` (pytest.ini) does the same for each passing test's tmp_path.
    A file with a failure keeps its folders to look into. Whatever appeared under pytest's folder while the file
    ran goes: a session fixture's folder made there then would go after its first file (give it its own)."""
    basetemp = tmp_path_factory.getbasetemp()
    before = set(os.listdir(basetemp))
    failures_before = request.session.testsfailed
    yield
    if request.session.testsfailed == failures_before:
        for name in set(os.listdir(basetemp)) - before:
            path = os.path.join(basetemp, name)
            if os.path.islink(path):  # pytest's "<name>current" links to the newest folder of a name
                os.unlink(path)
            else:
                shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def default_image_pixel_limit(monkeypatch):
    """Each test starts with the default --max_image_pixels: the scripts set it for the whole process (and the
    processes it starts) in an environment variable, which this restores afterwards."""
    from utils.io.image_limit import LIMIT_VARIABLE

    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)


# The files that take longest, slowest first (pytest's --durations on the 2-core AVX2 machine; docs/testing.md).
# `make test` hands whole files to its two processes in collection order (pytest-xdist's --dist loadfile with
# --no-loadscope-reorder; by default it would start the files with the most tests first): started first, they run
# beside each other and the many short files fill in after them, so both processes finish together instead of one
# waiting for the other's last long file.
LONGEST_FILES = ("scripts/test_distributed.py", "scripts/test_export_onnx.py", "scripts/test_main.py",
                 "network/test_modeling.py", "scripts/test_onnx_int8.py", "scripts/test_evaluation.py",
                 "network/test_weights.py", "scripts/test_predict.py", "scripts/test_geotiff.py",
                 "scripts/test_video.py", "scripts/test_timm_entries.py", "scripts/test_flags.py",
                 "scripts/test_check_precision.py", "scripts/test_model_info.py", "utils/test_visualizer.py")


def pytest_collection_modifyitems(items):
    """Move the tests of LONGEST_FILES to the front, in that order; the others keep theirs."""
    def rank(item) -> int:
        path = os.path.relpath(str(item.path), os.path.join(ROOT, "tests")).replace(os.sep, "/")
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)
