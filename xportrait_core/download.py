"""Resumable, verified model downloads with the standard library only.

Bytes go to ``<dest>.part``; a rerun (or an automatic retry after a dropped connection) asks
for the rest with an HTTP ``Range`` header. The finished file is hashed when a sha256 is known
and only then renamed to its final name, so a file under the final name is always complete.

    python -m xportrait_core.download --models-dir COMFYUI/models [--name model_state-415001.th]
                                      [--url MIRROR_URL] [--timeout SECONDS]

fetches the known files into ``COMFYUI/models/xportrait/``; it exits with status 1 and says where
to get the file by hand when the download fails.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

CHUNK = 1 << 20
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class KnownFile:
    name: str
    url: str
    sha256: str | None  # None: not published, so only the size can be judged
    approx_bytes: int


KNOWN_FILES = {
    "model_state-415001.th": KnownFile(
        "model_state-415001.th",
        "https://huggingface.co/fffiloni/X-Portrait/resolve/main/model_state-415001.th",
        None, 12_300_000_000),
}


class DownloadError(RuntimeError):
    """A download that did not produce a verified file."""


class OfflineError(DownloadError):
    """The server could not be reached at all; the user has to fetch the file by hand."""


def sha256_file(path: str | os.PathLike, progress: Progress | None = None) -> str:
    """Hex sha256 of a file, read in chunks so a 12 GB file needs no memory."""
    digest, done, total = hashlib.sha256(), 0, os.path.getsize(path)
    with open(path, "rb") as f:
        while chunk := f.read(8 * CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def download(url: str, dest_path: str | os.PathLike, sha256: str | None = None,
             progress: Progress | None = None, timeout: float = 30.0, retries: int = 3) -> Path:
    """Fetch `url` to `dest_path` (kept as is when it already exists) and return the path.

    A dropped connection is resumed up to `retries` times; after that the ``.part`` file stays
    and calling again continues where it stopped.
    """
    dest = Path(dest_path)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_into(url, part, progress, timeout)
            break
        except _Interrupted as stop:
            attempt += 1
            if attempt > retries:
                raise DownloadError(
                    f"download of {dest.name} from {url} stopped after {stop.have} bytes ({stop.reason}); "
                    f"the partial file {part} is kept: run the download again to resume it") from None
        except _Unreachable as error:
            if attempt:  # it answered earlier in this call, so the link dropped rather than being absent
                raise DownloadError(
                    f"download of {dest.name} from {url} was interrupted ({error.reason}); the partial file "
                    f"{part} is kept: run the download again to resume it") from None
            raise OfflineError(
                f"cannot reach the server for {dest.name} ({error.reason}). Download it by hand from "
                f"{url} and put it into the folder {dest.parent} as {dest.name}") from None
    if sha256:
        got = sha256_file(part)
        if got.lower() != sha256.lower():
            part.unlink()
            raise DownloadError(f"{dest.name} is corrupt: sha256 expected {sha256.lower()}, got {got}; "
                                f"the partial file was deleted, run the download again")
    os.replace(part, dest)
    return dest


def download_known(name: str, folder: str | os.PathLike, progress: Progress | None = None,
                   timeout: float = 30.0) -> Path:
    """Download one of `KNOWN_FILES` into `folder`."""
    if name not in KNOWN_FILES:
        raise ValueError(f"no download source known for {name!r}; known files: {', '.join(KNOWN_FILES)}")
    known = KNOWN_FILES[name]
    return download(known.url, Path(folder) / name, known.sha256, progress, timeout)


class _Interrupted(Exception):
    def __init__(self, have: int, reason: str):
        self.have, self.reason = have, reason


class _Unreachable(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _fetch_into(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the part file is already whole
            return
        raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise _Unreachable(str(getattr(error, "reason", error))) from None
    with response:
        resumed = response.status == 206
        if have and not resumed:
            have = 0  # the server ignored Range and sends everything again
        total = _total_size(response, have)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    have += len(chunk)
                    if progress:
                        progress(have, total)
        except (OSError, HTTPException, socket.timeout) as error:
            raise _Interrupted(have, f"{type(error).__name__}: {error}") from None
    if total is not None and have < total:
        raise _Interrupted(have, f"connection closed at {have} of {total} bytes")


def _total_size(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xportrait_core.download",
                                     description="Download the X-Portrait model files into MODELS_DIR/xportrait/.")
    parser.add_argument("--models-dir", required=True, type=Path,
                        help="ComfyUI's models folder; files go into its xportrait/ subfolder")
    parser.add_argument("--name", action="append", choices=list(KNOWN_FILES),
                        help=f"file to fetch (repeatable; default all: {', '.join(KNOWN_FILES)})")
    parser.add_argument("--url", help="fetch from this address (a mirror) instead of the known one; one --name only")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server (default 30)")
    args = parser.parse_args(argv)
    names = args.name or list(KNOWN_FILES)
    if args.url and len(names) != 1:
        parser.error("--url replaces the address of one file: give exactly one --name with it")
    from .progress import ProgressLine

    folder = args.models_dir / "xportrait"
    for name in names:
        known = KNOWN_FILES[name]
        progress = ProgressLine()
        try:
            path = download(args.url or known.url, folder / name, known.sha256,
                            lambda done, total: progress(name, done, total or known.approx_bytes), args.timeout)
        except DownloadError as error:
            progress.finish()
            print(f"error: {error}", file=sys.stderr)
            return 1
        progress.finish()
        print(f"{name}  {path}  ({path.stat().st_size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ComfyUI shows an error's type as module.name: short, readable types instead of the pack's path.
DownloadError.__module__ = "xportrait"
OfflineError.__module__ = "xportrait"
