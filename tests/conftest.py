"""Make the repository root importable (``network``, ``datasets``, ``utils``, ...) from every test; shared fixtures."""
import os
import sys
import urllib.error

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


@pytest.fixture(autouse=True)
def default_image_pixel_limit(monkeypatch):
    """Each test starts with the default --max_image_pixels: the scripts set it for the whole process (and the
    processes it starts) in an environment variable, which this restores afterwards."""
    from utils.io.image_limit import LIMIT_VARIABLE

    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)
