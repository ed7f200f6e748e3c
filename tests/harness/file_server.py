"""A local HTTP file server for download tests: Range requests, a switch that cuts transfers
short, and a record of every request and of the body bytes each one was sent."""
from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    path: str
    range: str  # the Range header as received ("" when none)
    sent: int = 0  # body bytes written to the client


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 until `close`; use as a context manager.

    While `cut_after` is a number, each response stops after that many body bytes and the
    connection is closed, like a dropped link.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.cut_after: int | None = None
        self.requests: list[Served] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                record = Served(self.path, self.headers.get("Range", ""))
                owner.requests.append(record)
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = int(record.range.split("=")[1].split("-")[0]) if record.range else 0
                if start >= len(data) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if owner.cut_after is not None:
                    body = body[:owner.cut_after]
                    self.close_connection = True
                record.sent = len(body)  # counted before writing: the client may finish first
                self.wfile.write(body)
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def bytes_sent(self) -> int:
        return sum(r.sent for r in self.requests)

    def close(self) -> None:
        """Stop serving and free the port: from now on the address refuses connections."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FileServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def closed_port_url(path: str) -> str:
    """An address on 127.0.0.1 that nothing listens on: the download sees the machine offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def sources_env(name: str, url: str, sha256: str | None = None, size: int | None = None) -> str:
    """The value of XPORTRAIT_DOWNLOAD_SOURCES that points `name` at `url` (and another build's digest)."""
    entry: dict = {"url": url}
    if sha256 is not None:
        entry["sha256"] = sha256
    if size is not None:
        entry["bytes"] = size
    return json.dumps({name: entry})
