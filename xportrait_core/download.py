"""Resumable, verified model downloads with the standard library only.

Bytes go to ``<dest>.part``; a rerun (or an automatic retry after a dropped connection) asks
for the rest with an HTTP ``Range`` header. The finished file is hashed when a sha256 is known
and only then renamed to its final name, so a file under the final name is always complete.
Where a file's size is known, a server that offers another size is refused before any byte is
written (an error page, a different build, a moved mirror), and the finished file is checked too.

    python -m xportrait_core.download --models-dir COMFYUI/models [--name model_state-415001.th]
                                      [--url MIRROR_URL] [--sha256 HEX] [--timeout SECONDS]

fetches the known files into ``COMFYUI/models/xportrait/``; it exits with status 1 and says where
to get the file by hand when the download fails. The loader nodes' `download` choice uses
`source_of`, where the environment variable ``XPORTRAIT_DOWNLOAD_SOURCES`` can name a mirror
(see `SOURCES_ENV`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path

CHUNK = 1 << 20
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ByteSize:
    """A file's size: exact where it is published, else the narrowest range the known facts allow."""

    low: int
    high: int  # inclusive

    def __contains__(self, size: object) -> bool:
        return isinstance(size, int) and self.low <= size <= self.high

    def __str__(self) -> str:
        return f"{self.low:,} bytes" if self.low == self.high else f"{self.low:,} to {self.high:,} bytes"


@dataclass(frozen=True)
class KnownFile:
    name: str
    url: str
    sha256: str | None  # None: not published, so only the size can be judged
    approx_bytes: int
    size: ByteSize | None = None


#: The release's fp32 tensors alone: 3,067,384,227 parameters and buffers at 4 bytes plus the
#: int64 CLIP position ids (tests check this against the architecture). A smaller file is cut short.
CHECKPOINT_TENSOR_BYTES = 12_269_537_524

KNOWN_FILES = {
    # sha256 as the Hugging Face mirror's Git LFS record states it. The mirror shows the size only
    # rounded ("12.3 GB", decimal units), so the exact byte count is unverified: the accepted
    # range runs from the tensors' own bytes to the end of that rounding.
    "model_state-415001.th": KnownFile(
        "model_state-415001.th",
        "https://huggingface.co/fffiloni/X-Portrait/resolve/main/model_state-415001.th",
        "19326da4667e3503f8f7b524f5baf57faf15bd2a373a416935a1834ae1ec7080", 12_271_000_000,
        ByteSize(CHECKPOINT_TENSOR_BYTES, 12_349_999_999)),
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
             progress: Progress | None = None, timeout: float = 30.0, retries: int = 3,
             size: ByteSize | None = None, verify_progress: Progress | None = None) -> Path:
    """Fetch `url` to `dest_path` (kept as is when it already exists) and return the path.

    A dropped connection is resumed up to `retries` times; after that the ``.part`` file stays
    and calling again continues where it stopped. With `size`, a server offering a file of
    another size is refused before anything is written, and so is a finished file of another size.
    `verify_progress` follows the hashing of the finished file (a minute for the 12 GB checkpoint).
    """
    dest = Path(dest_path)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_into(url, part, progress, timeout, size)
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
    if size is not None and (got_bytes := part.stat().st_size) not in size:
        part.unlink()
        raise DownloadError(f"{dest.name} from {url} is {got_bytes:,} bytes, expected {size}: it is not the known "
                            f"file; the partial file was deleted")
    if sha256:
        got = sha256_file(part, verify_progress)
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
    return download(known.url, Path(folder) / name, known.sha256, progress, timeout, size=known.size)


#: Names another source for known files, for a local mirror or a test server. A JSON object:
#: ``{"model_state-415001.th": {"url": "https://mirror/...", "sha256": "<64 hex>", "bytes": 12345}}``.
#: Only files of `KNOWN_FILES` can be named, and every download stays hash-checked: without
#: "sha256" the pinned digest and size still apply; with it (another build of the file) the
#: given digest and, if stated, the exact "bytes" are checked instead.
SOURCES_ENV = "XPORTRAIT_DOWNLOAD_SOURCES"


def source_of(name: str, environ: Mapping[str, str] | None = None) -> KnownFile | None:
    """Where `name` is fetched from: its `KNOWN_FILES` entry, replaced as `SOURCES_ENV` says;
    None for a file with no known source."""
    known = KNOWN_FILES.get(name)
    if known is None:
        return None
    raw = (os.environ if environ is None else environ).get(SOURCES_ENV, "").strip()
    if not raw:
        return known
    try:
        table = json.loads(raw)
    except ValueError as error:
        raise DownloadError(f"{SOURCES_ENV} is not valid JSON ({error}); unset it to use the known sources") from None
    if not isinstance(table, dict):
        raise DownloadError(f"{SOURCES_ENV} must be a JSON object of file name -> {{\"url\": ...}}")
    unknown = sorted(set(table) - set(KNOWN_FILES))
    if unknown:
        raise DownloadError(f"{SOURCES_ENV} names {', '.join(unknown)}; only these files can be downloaded: "
                            f"{', '.join(KNOWN_FILES)}")
    entry = table.get(name)
    if entry is None:
        return known
    url, digest, exact = (entry.get(key) if isinstance(entry, dict) else None for key in ("url", "sha256", "bytes"))
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise DownloadError(f"{SOURCES_ENV}: the entry of {name} needs an http(s) \"url\"")
    if digest is None:
        if exact is not None:
            raise DownloadError(f"{SOURCES_ENV}: \"bytes\" of {name} replaces the known size only together "
                                "with its \"sha256\" (another build of the file)")
        return replace(known, url=url)
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest)):
        raise DownloadError(f"{SOURCES_ENV}: \"sha256\" of {name} must be 64 hexadecimal digits")
    if exact is not None and (not isinstance(exact, int) or isinstance(exact, bool) or exact <= 0):
        raise DownloadError(f"{SOURCES_ENV}: \"bytes\" of {name} must be a positive whole number")
    return replace(known, url=url, sha256=digest.lower(), approx_bytes=exact or known.approx_bytes,
                   size=ByteSize(exact, exact) if exact else None)


class _Interrupted(Exception):
    def __init__(self, have: int, reason: str):
        self.have, self.reason = have, reason


class _Unreachable(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _fetch_into(url: str, part: Path, progress: Progress | None, timeout: float, size: ByteSize | None) -> None:
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
        if size is not None and total is not None and total not in size:
            # Checked before the part file is opened: a wrong file never mixes with a good partial one.
            raise DownloadError(f"{url} offers {part.name.removesuffix('.part')} as {total:,} bytes, expected {size}: "
                                "it is not the known file (an error page, another build or a moved mirror); "
                                "nothing was written")
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
    parser.add_argument("--sha256", help="expect this digest instead of the known one (another build of the file); "
                                         "the known size is then not enforced either; one --name only")
    args = parser.parse_args(argv)
    names = args.name or list(KNOWN_FILES)
    if args.url and len(names) != 1:
        parser.error("--url replaces the address of one file: give exactly one --name with it")
    if args.sha256 and len(names) != 1:
        parser.error("--sha256 replaces the digest of one file: give exactly one --name with it")
    from .progress import ProgressLine

    folder = args.models_dir / "xportrait"
    for name in names:
        known = KNOWN_FILES[name]
        progress = ProgressLine()
        try:
            path = download(args.url or known.url, folder / name, args.sha256 or known.sha256,
                            lambda done, total: progress(name, done, total or known.approx_bytes), args.timeout,
                            size=None if args.sha256 else known.size)
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
