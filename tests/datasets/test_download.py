"""Download (md5, resume, no network), extraction that cannot escape its folder, and the preparation lock."""
import hashlib
import io
import os
import tarfile
import threading
import time
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datasets.utils import DatasetError, download_url, extract_archive
from utils.io.locks import file_lock


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www (supports no Range: full responses)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(www))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_checks_md5(server, tmp_path):
    www, url = server
    payload = b"voc" * 1000
    (www / "data.tar").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    path = download_url(f"{url}/data.tar", str(tmp_path / "dl"), md5=md5)
    assert open(path, "rb").read() == payload
    with pytest.raises(DatasetError, match="wrong md5"):
        download_url(f"{url}/data.tar", str(tmp_path / "dl2"), md5="0" * 32)
    assert not os.path.exists(tmp_path / "dl2" / "data.tar.part")


def test_download_restarts_a_partial_file_when_ranges_are_not_supported(server, tmp_path):
    www, url = server
    payload = bytes(range(256)) * 10
    (www / "f.bin").write_bytes(payload)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "f.bin.part").write_bytes(b"garbage")
    path = download_url(f"{url}/f.bin", str(tmp_path / "dl"), md5=hashlib.md5(payload).hexdigest())
    assert open(path, "rb").read() == payload


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves ``bytes=N-`` ranges with 206, as servers that allow resuming do; records the ranges asked for."""

    ranges = []

    def do_GET(self):
        header = self.headers.get("Range")
        if not header:
            return super().do_GET()
        start = int(header.split("=")[1].rstrip("-"))
        RangeHandler.ranges.append(start)
        data = open(self.translate_path(self.path), "rb").read()
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


def test_download_resumes_a_partial_file_with_ranges(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    payload = bytes(range(256)) * 40
    (www / "big.tar").write_bytes(payload)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        (tmp_path / "dl").mkdir()
        (tmp_path / "dl" / "big.tar.part").write_bytes(payload[:3000])  # an interrupted earlier download
        path = download_url(f"http://127.0.0.1:{httpd.server_address[1]}/big.tar", str(tmp_path / "dl"),
                            md5=hashlib.md5(payload).hexdigest())
    finally:
        httpd.shutdown()
    assert RangeHandler.ranges == [3000]
    assert open(path, "rb").read() == payload


def test_no_network_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot download http://127.0.0.1:9/x.tar .*by hand to"):
        download_url("http://127.0.0.1:9/x.tar", str(tmp_path), timeout=2)


def _tar_with(tmp_path, name, link=False):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo(name)
        if link:
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            info.size = 3
            tf.addfile(info, io.BytesIO(b"bad"))
    return str(path)


def test_tar_path_traversal_and_links_are_refused(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="outside"):
        extract_archive(_tar_with(tmp_path, "../escape.txt"), str(out))
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(DatasetError, match="link"):
        extract_archive(_tar_with(tmp_path, "inside/link", link=True), str(out))


def test_zip_traversal_refused_and_normal_archives_extract(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", "bad")
    with pytest.raises(DatasetError, match="outside"):
        extract_archive(str(evil), str(tmp_path / "out"))
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("VOCdevkit/VOC2012/x.txt", "ok")
    extract_archive(str(good), str(tmp_path / "out"))
    assert (tmp_path / "out" / "VOCdevkit" / "VOC2012" / "x.txt").read_text() == "ok"


def test_exclusive_lock_makes_a_second_holder_wait(tmp_path):
    """Two holders (separate opens, as two machines on a shared folder would be) take turns."""
    lock = str(tmp_path / "data" / ".prepare.lock")  # the folder does not exist yet
    events = []

    def second():
        with file_lock(lock):
            events.append(("second", time.monotonic()))

    with file_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        events.append(("first releases", time.monotonic()))
    thread.join(timeout=10)
    assert [name for name, _ in events] == ["first releases", "second"]


def test_exclusive_lock_in_a_folder_that_cannot_be_written_still_runs_the_block(tmp_path):
    (tmp_path / "file").write_text("")
    ran = []
    with file_lock(str(tmp_path / "file" / ".prepare.lock")):  # its folder cannot exist
        ran.append(True)
    assert ran == [True]
