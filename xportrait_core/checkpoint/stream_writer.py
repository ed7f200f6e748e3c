"""Write a ``.safetensors`` file one tensor at a time.

The format is small: an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
byte range; plus ``__metadata__``), then the raw little-endian bytes. Writing it directly lets the
converter cast and write each tensor and drop it before reading the next, instead of building a
multi-GB dict first. Output goes to a temporary name and is renamed when complete.

Reading a memory-mapped source still pulls its pages into this process; `MappedFilePages` hands
those pages back after each tensor so the resident size stays near one tensor, not the file.
"""
from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

SAFETENSORS_CODES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                     torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                     torch.uint8: "U8", torch.bool: "BOOL"}
MADV_DONTNEED = 4  # Linux value; the page release only runs where /proc/self/maps exists


@dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: its name, final dtype and shape, and how to read the source."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    read: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * torch.empty((), dtype=self.dtype).element_size()


def write_safetensors(path: str | os.PathLike, entries: Iterable[TensorEntry], metadata: dict[str, str],
                      on_tensor: Callable[[TensorEntry], None] | None = None,
                      pages: "MappedFilePages | None" = None) -> Path:
    """Stream `entries` into `path` atomically; `on_tensor` is called after each one is written."""
    path, entries = Path(path), list(entries)
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for entry in entries:
        if entry.dtype not in SAFETENSORS_CODES:
            raise ValueError(f"{entry.name}: dtype {entry.dtype} cannot be stored in safetensors")
        header[entry.name] = {"dtype": SAFETENSORS_CODES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keeps the data section 8-byte aligned, as the format asks
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            for entry in entries:
                source = entry.read()
                tensor = source.to(entry.dtype).contiguous()
                if tuple(tensor.shape) != entry.shape:
                    raise ValueError(f"{entry.name}: source has shape {list(tensor.shape)}, "
                                     f"expected {list(entry.shape)}")
                out.write(_raw_bytes(tensor))
                if pages is not None:
                    pages.release(source)
                del source, tensor
                if on_tensor is not None:
                    on_tensor(entry)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    if sys.byteorder != "little":
        raise RuntimeError("safetensors output needs a little-endian machine")
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


class MappedFilePages:
    """Gives back the resident pages of a memory-mapped file once a tensor from it is written.

    Only ranges this process maps from that very file are touched (read from /proc/self/maps), so
    ordinary in-memory tensors are never affected; the pages stay valid and re-read on access.
    """

    def __init__(self, path: str | os.PathLike):
        self._ranges = _file_mappings(Path(path).resolve())
        self._madvise = _libc_madvise() if self._ranges else None
        self._page = os.sysconf("SC_PAGE_SIZE") if self._ranges else 1

    def release(self, tensor: torch.Tensor) -> None:
        if self._madvise is None or tensor.device.type != "cpu":
            return
        start = tensor.untyped_storage().data_ptr()
        end = start + tensor.untyped_storage().nbytes()
        if not any(lo <= start and end <= hi for lo, hi in self._ranges):
            return
        first = start - start % self._page
        self._madvise(ctypes.c_void_p(first), ctypes.c_size_t(end - first), MADV_DONTNEED)


def _file_mappings(path: Path) -> list[tuple[int, int]]:
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def _libc_madvise():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    function.restype = ctypes.c_int
    return function
