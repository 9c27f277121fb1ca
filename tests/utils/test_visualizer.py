"""Visdom dashboards: offline server, the windows main.py draws, a real browser, and a missing server."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import main as train_script
from datasets import make_demo_dataset
from tests.conftest import ROOT
from tools.visdom_assets import install, visdom_static_dir
from utils.visualizer import Visualizer

VIS_ENV = "deeplab_test"
TOTAL_ITRS = 4
VAL_INTERVAL = 2
NUM_SAMPLES = 2
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, env_path: str) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "visdom.server", "-port", str(port), "--hostname", "127.0.0.1",
                               "-bind_local", "-env_path", env_path],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    pytest.fail("the Visdom server did not start within 60 s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    install(visdom_static_dir())  # offline assets from the npm registry (cached in .cache/npm)
    port = _free_port()
    proc = _start_server(port, str(tmp_path_factory.mktemp("visdom_env")))
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """A short training run drawing on the server; returns (stdout, windows by title)."""
    root = tmp_path_factory.mktemp("vis_data")
    make_demo_dataset(str(root), num_train=8, num_val=3, seed=2, as_voc=True)
    argv = ["--data_root", str(root), "--dataset", "voc", "--model", "deeplabv3plus_mobilenet", "--output_stride",
            "16", "--no-pretrained_backbone", "--crop_size", "64", "--batch_size", "2", "--num_workers", "0",
            "--checkpoint_dir", str(root / "ck"), "--results_dir", str(root / "res"), "--total_itrs", str(TOTAL_ITRS),
            "--val_interval", str(VAL_INTERVAL), "--print_interval", "2", "--enable_vis", "--vis_port", str(server),
            "--vis_env", VIS_ENV, "--vis_num_samples", str(NUM_SAMPLES)]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *argv], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower()
    import visdom

    client = visdom.Visdom(port=server, env=VIS_ENV, raise_exceptions=True, use_incoming_socket=False)
    windows = {w["title"]: w for w in json.loads(client.get_window_data(env=VIS_ENV)).values()}
    return result.stdout, windows


def _ys(window):
    return window["content"]["data"][0]["y"]


def test_dashboard_has_the_original_windows_with_the_right_content(trained):
    stdout, windows = trained
    expected = {"Options", "Loss", "LR", "Images/s", "[Val] Overall Acc", "[Val] Mean IoU", "[Val] Class IoU"}
    expected |= {f"Sample {k}" for k in range(NUM_SAMPLES)}
    assert expected <= set(windows), sorted(windows)
    # beside the original's windows: the class IoU as bars, and the row-normalised confusion matrix
    assert {"[Val] Class IoU (bars)", "[Val] Confusion Matrix"} <= set(windows)
    assert windows["[Val] Class IoU (bars)"]["content"]["data"][0]["type"] == "bar"
    heatmap = windows["[Val] Confusion Matrix"]["content"]["data"][0]
    assert heatmap["type"] == "heatmap" and len(heatmap["z"]) == 21 and "background" in heatmap["y"]
    assert len(_ys(windows["Loss"])) == TOTAL_ITRS
    printed = [float(v) for v in re.findall(r"^Mean IoU: ([0-9.]+)$", stdout, re.M)]
    assert len(printed) == TOTAL_ITRS // VAL_INTERVAL
    assert _ys(windows["[Val] Mean IoU"]) == pytest.approx(printed, abs=1e-6)
    assert "background" in windows["[Val] Class IoU"]["content"]
    assert "deeplabv3plus_mobilenet" in windows["Options"]["content"]
    for k in range(NUM_SAMPLES):  # image | target | prediction side by side, at the validation image's size
        window = windows[f"Sample {k}"]
        assert window["content"]["src"].startswith("data:image/png;base64,")
        assert window["width"] % 3 == 0 and window["width"] // 3 >= 170 and window["height"] >= 170


def test_dashboard_renders_in_a_real_browser(trained, server, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; `make test` does it when run as root)")
    _, windows = trained
    dom = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=10000", "--window-size=1600,1200", "--dump-dom",
                          f"http://127.0.0.1:{server}/env/{VIS_ENV}"],
                         capture_output=True, text=True, timeout=120).stdout
    plots = [t for t, w in windows.items() if w["type"] == "plot"]
    lines = [t for t in plots if windows[t]["content"]["data"][0]["type"] == "scatter"]
    assert dom.count('class="window"') == len(windows)
    assert dom.count('class="main-svg"') >= len(plots)            # plotly drew every plot
    assert len(re.findall(r'<path class="js-line"', dom)) >= len(lines)
    assert dom.count('src="data:image/png;base64,') == NUM_SAMPLES  # the sample images are shown
    assert "[Val] Mean IoU" in dom and "Class IoU" in dom


def test_no_server_warns_once_and_never_raises(capsys):
    vis = Visualizer(port=_free_port(), env="x")
    vis.vis_scalar("Loss", 1, 0.5)
    vis.vis_image("Sample 0", np.zeros((3, 4, 4), np.uint8))
    vis.vis_table("Options", {"a": 1})
    err = capsys.readouterr().err
    assert not vis.enabled
    assert err.count("warning:") == 1 and "training goes on without the dashboard" in err


def test_a_server_that_goes_away_disables_the_dashboard_once(tmp_path, capsys):
    port = _free_port()
    proc = _start_server(port, str(tmp_path))
    vis = Visualizer(port=port, env="gone")
    vis.vis_scalar("Loss", 1, 0.5)
    assert vis.enabled
    proc.kill()
    proc.wait()
    for i in range(3):
        vis.vis_scalar("Loss", 2 + i, 0.4)
    err = capsys.readouterr().err
    assert not vis.enabled and err.count("warning:") == 1 and "stopped answering" in err


def _frozen_after_first_request():
    """An HTTP server that answers its first request (Visdom's env) and then keeps the connections open without a
    reply, as a frozen server or a host gone behind an open connection does; (its port, a function that stops it)."""
    import http.server
    import threading

    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        answered = 0

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if Handler.answered:
                release.wait(60)
                return
            Handler.answered += 1
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"main")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop():
        release.set()
        server.shutdown()
    return server.server_address[1], stop


def test_a_server_that_stops_answering_disables_the_dashboard_instead_of_holding_training(capsys, monkeypatch):
    monkeypatch.setattr("utils.visualizer.REQUEST_TIMEOUT_S", 0.5)
    port, stop = _frozen_after_first_request()
    try:
        vis = Visualizer(port=port, host="http://127.0.0.1", env="frozen")
        assert vis.enabled
        began = time.time()
        for i in range(3):
            vis.vis_scalar("Loss", i, 0.5)
        assert time.time() - began < 5
    finally:
        stop()
    captured = capsys.readouterr()
    assert not vis.enabled and captured.err.count("warning:") == 1 and "stopped answering" in captured.err
    assert captured.out == ""  # Visdom's own lines are not shown


def test_training_without_a_server_finishes(tmp_path, capsys):
    make_demo_dataset(str(tmp_path), num_train=4, num_val=2, seed=3, as_voc=True)
    code = train_script.main(["--data_root", str(tmp_path), "--dataset", "voc", "--model", "deeplabv3plus_mobilenet",
                              "--no-pretrained_backbone", "--crop_size", "64", "--batch_size", "2", "--num_workers",
                              "0", "--checkpoint_dir", str(tmp_path / "ck"), "--results_dir", str(tmp_path / "res"),
                              "--total_itrs", "2", "--enable_vis", "--vis_port", str(_free_port())])
    assert code == 0
    assert capsys.readouterr().err.count("warning:") == 1
