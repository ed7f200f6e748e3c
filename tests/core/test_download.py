"""Downloads against a local HTTP server: verified, resumable, atomic, and clear when offline."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from xportrait_core.download import KNOWN_FILES, ByteSize, DownloadError, OfflineError, download

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Serves PAYLOAD with Range support; can drop the first transfer half-way or ignore Range."""

    def __init__(self):
        self.requests: list[dict[str, str]] = []
        self.drop_first = False
        self.ignore_range = False
        self.omit_length = False  # like a server streaming without Content-Length
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append({"path": self.path, "range": self.headers.get("Range", "")})
                if self.path.endswith("/missing.th"):
                    self.send_error(404, "Not Found")
                    return
                start = 0
                requested = self.headers.get("Range", "")
                if requested and not owner.ignore_range:
                    start = int(requested.split("=")[1].rstrip("-"))
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                if not owner.omit_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.drop_first and len(owner.requests) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)


@pytest.fixture
def server():
    running = _Server()
    running.thread.start()
    try:
        yield running
    finally:
        running.httpd.shutdown()
        running.httpd.server_close()
        running.thread.join(timeout=5)


def test_download_verifies_reports_progress_and_renames(server, tmp_path):
    seen = []
    dest = tmp_path / "models" / "model_state-415001.th"
    path = download(f"{server.url}/model_state-415001.th", dest, sha256=DIGEST.upper(),
                    progress=lambda done, total: seen.append((done, total)))
    assert path == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "models" / "model_state-415001.th.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert download(f"{server.url}/other", dest) == dest and len(server.requests) == 1  # present: not fetched again


def test_hash_mismatch_deletes_the_part_file_and_names_both_hashes(server, tmp_path):
    dest = tmp_path / "model_state-415001.th"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as caught:
        download(f"{server.url}/model_state-415001.th", dest, sha256=wrong)
    message = str(caught.value)
    assert "model_state-415001.th is corrupt" in message and wrong in message and DIGEST in message
    assert not dest.exists() and not (tmp_path / "model_state-415001.th.part").exists()


def test_interrupted_download_is_kept_and_resumed_with_range(server, tmp_path):
    server.drop_first = True
    dest = tmp_path / "model_state-415001.th"
    part = tmp_path / "model_state-415001.th.part"
    with pytest.raises(DownloadError, match="partial file .* is kept: run the download again to resume it"):
        download(f"{server.url}/model_state-415001.th", dest, sha256=DIGEST, retries=0)
    half = part.stat().st_size
    assert 0 < half < len(PAYLOAD) and not dest.exists()
    download(f"{server.url}/model_state-415001.th", dest, sha256=DIGEST)
    assert server.requests[1]["range"] == f"bytes={half}-"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_dropped_connection_is_retried_within_one_call(server, tmp_path):
    server.drop_first = True
    dest = tmp_path / "f.bin"
    download(f"{server.url}/f.bin", dest, sha256=DIGEST)
    assert [r["range"] != "" for r in server.requests] == [False, True]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    part = tmp_path / "f.bin.part"
    part.write_bytes(PAYLOAD[:1000])
    download(f"{server.url}/f.bin", tmp_path / "f.bin", sha256=DIGEST)
    assert server.requests[0]["range"] == "bytes=1000-"
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.url}/missing.th", tmp_path / "missing.th")


def test_unreachable_server_names_file_url_and_folder(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fffiloni/X-Portrait/resolve/main/model_state-415001.th"
    folder = tmp_path / "models" / "xportrait"
    with pytest.raises(OfflineError) as caught:
        download(url, folder / "model_state-415001.th", timeout=5)
    message = str(caught.value)
    assert "model_state-415001.th" in message and url in message and str(folder) in message
    assert "by hand" in message


def test_known_checkpoint_has_its_digest_and_a_size_range_from_the_architecture():
    from math import prod

    from xportrait_core.checkpoint.architecture import FULL
    from xportrait_core.checkpoint.tiny import official_inventory
    known = KNOWN_FILES["model_state-415001.th"]
    assert known.url == "https://huggingface.co/fffiloni/X-Portrait/resolve/main/model_state-415001.th"
    assert len(known.sha256) == 64 and int(known.sha256, 16) >= 0 and known.sha256 == known.sha256.lower()
    # The release holds every official tensor in fp32 and the CLIP position ids in int64: no
    # complete file can be smaller; the mirror's rounded "12.3 GB" bounds it from above.
    tensors = sum(4 * prod(shape) for shape in official_inventory(FULL).values()) + 8 * 77
    assert known.size.low == tensors
    assert f"{known.size.low / 1e9:.1f}" == f"{known.size.high / 1e9:.1f}" == "12.3"
    assert known.approx_bytes in known.size and known.size.high + 1 not in known.size


def test_server_offering_another_size_is_refused_before_writing(server, tmp_path):
    dest = tmp_path / "model_state-415001.th"
    part = tmp_path / "model_state-415001.th.part"
    part.write_bytes(PAYLOAD[:1000])  # a good partial download must survive a wrong answer
    elsewhere = ByteSize(len(PAYLOAD) + 1, len(PAYLOAD) + 1000)
    with pytest.raises(DownloadError) as caught:
        download(f"{server.url}/model_state-415001.th", dest, sha256=DIGEST, size=elsewhere)
    message = str(caught.value)
    assert f"{len(PAYLOAD):,} bytes" in message and str(elsewhere) in message and "nothing was written" in message
    assert part.read_bytes() == PAYLOAD[:1000] and not dest.exists()
    download(f"{server.url}/model_state-415001.th", dest, sha256=DIGEST, size=ByteSize(len(PAYLOAD), len(PAYLOAD)))
    assert dest.read_bytes() == PAYLOAD


def test_finished_file_of_another_size_is_deleted_when_the_server_gave_no_length(server, tmp_path):
    server.omit_length = True
    dest = tmp_path / "model_state-415001.th"
    with pytest.raises(DownloadError, match=rf"is {len(PAYLOAD):,} bytes, expected .*partial file was deleted"):
        download(f"{server.url}/model_state-415001.th", dest, size=ByteSize(1, len(PAYLOAD) - 1))
    assert not dest.exists() and not (tmp_path / "model_state-415001.th.part").exists()
