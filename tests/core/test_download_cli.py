"""`python -m xportrait_core.download` as a user runs it: a subprocess fetching from a local
HTTP server on 127.0.0.1 into MODELS/xportrait/, resuming a partial file, failing clearly offline."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.paths import REPO

NAME = "model_state-415001.th"
PAYLOAD = os.urandom(2 * (1 << 20) + 4321)
# The stand-in is not the real checkpoint, so the runs below name its digest (which also lifts
# the checkpoint's known size); the last test shows what happens without it.
STAND_IN = ("--sha256", hashlib.sha256(PAYLOAD).hexdigest())


@pytest.fixture
def mirror():
    """Serves PAYLOAD with Range support and remembers the Range header of every request."""
    ranges: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ranges.append(self.headers.get("Range", ""))
            start = int(ranges[-1].split("=")[1].rstrip("-")) if ranges[-1] else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
            self.send_header("Content-Length", str(len(PAYLOAD) - start))
            self.end_headers()
            self.wfile.write(PAYLOAD[start:])

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/mirror/{NAME}", ranges
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xportrait_core.download", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_fetches_into_the_xportrait_folder_with_progress(mirror, tmp_path):
    url, ranges = mirror
    done = run_cli("--models-dir", str(tmp_path), "--name", NAME, "--url", url, *STAND_IN)
    assert done.returncode == 0, done.stderr
    dest = tmp_path / "xportrait" / NAME
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "xportrait" / f"{NAME}.part").exists()
    assert NAME in done.stderr and "100.0%" in done.stderr, "no progress line"
    assert str(dest) in done.stdout
    again = run_cli("--models-dir", str(tmp_path), "--url", url, *STAND_IN)
    assert again.returncode == 0 and len(ranges) == 1, "a complete file must not be fetched again"


def test_cli_resumes_a_partial_download(mirror, tmp_path):
    url, ranges = mirror
    folder = tmp_path / "xportrait"
    folder.mkdir()
    (folder / f"{NAME}.part").write_bytes(PAYLOAD[:700_000])
    done = run_cli("--models-dir", str(tmp_path), "--url", url, *STAND_IN)
    assert done.returncode == 0, done.stderr
    assert ranges == ["bytes=700000-"]
    assert (folder / NAME).read_bytes() == PAYLOAD


def test_cli_offline_names_file_url_and_folder(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fffiloni/X-Portrait/resolve/main/{NAME}"
    done = run_cli("--models-dir", str(tmp_path), "--url", url, "--timeout", "5")
    assert done.returncode == 1
    assert NAME in done.stderr and url in done.stderr and str(tmp_path / "xportrait") in done.stderr
    assert "by hand" in done.stderr
    assert not (tmp_path / "xportrait" / NAME).exists()


def test_cli_refuses_a_mirror_that_serves_another_file(mirror, tmp_path):
    url, ranges = mirror
    done = run_cli("--models-dir", str(tmp_path), "--url", url)
    assert done.returncode == 1
    assert f"{len(PAYLOAD):,} bytes" in done.stderr and "not the known file" in done.stderr
    assert "nothing was written" in done.stderr and len(ranges) == 1
    folder = tmp_path / "xportrait"
    assert not (folder / NAME).exists() and not (folder / f"{NAME}.part").exists()
