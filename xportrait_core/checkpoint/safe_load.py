"""Open model files without ever executing code from them.

``.th``/``.pt``/``.pth``/``.ckpt``/``.bin`` go through ``torch.load(weights_only=True)``,
memory-mapped when the file uses torch's zip format, so a 12 GB checkpoint costs address space,
not RAM. A pickle that needs anything beyond tensors and plain containers is refused; there is
deliberately no unsafe fallback. ``.safetensors`` files open lazily: tensors are read on access.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..download import KNOWN_FILES
from .errors import CheckpointError

PICKLE_SUFFIXES = {".th", ".pt", ".pth", ".ckpt", ".bin"}
ZIP_MAGIC = b"PK\x03\x04"
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


class SafetensorsFile(Mapping):
    """A lazy, read-only state dict over a ``.safetensors`` file; ``metadata`` is its header."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._handle = safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(_broken_message(self.path, str(error))) from None
        self._keys = list(self._handle.keys())
        self._key_set = frozenset(self._keys)
        self.metadata = self._handle.metadata() or {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._key_set:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the tensor
        return key in self._key_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        """The stored shape, read from the header only."""
        return tuple(self._handle.get_slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype, read from the header only."""
        return SAFETENSORS_DTYPES[self._handle.get_slice(key).get_dtype()]


def load_state_dict(path: str | os.PathLike) -> Mapping:
    """The file's state dict: a lazy `SafetensorsFile`, or a dict of memory-mapped tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    if path.suffix == ".safetensors":
        return SafetensorsFile(path)
    if path.suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name}: unknown model file type {path.suffix!r}; expected .safetensors "
                              f"or a torch file ({', '.join(sorted(PICKLE_SUFFIXES))})")
    return _load_torch(path)


def _load_torch(path: Path) -> dict:
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):  # the central directory sits at the end: a cut file lacks it
            raise CheckpointError(_broken_message(path, "its zip directory is missing"))
        mmap = True
    elif head[:1] == b"\x80":
        mmap = False  # torch's pre-1.6 format cannot be memory-mapped; it is read into RAM
    else:
        raise CheckpointError(_broken_message(path, _describe_foreign(head)))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise CheckpointError(_refusal_message(path, str(error))) from None
        raise CheckpointError(_broken_message(path, str(error).splitlines()[0])) from None
    except RuntimeError as error:
        text = str(error)
        if "weights_only" in text:  # e.g. a TorchScript archive
            raise CheckpointError(_refusal_message(path, text)) from None
        raise CheckpointError(_broken_message(path, text.splitlines()[0])) from None
    except (EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(_broken_message(path, f"{type(error).__name__}: {error}")) from None
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise CheckpointError(f"{path.name} holds a {type(loaded).__name__}, not a state dict of named "
                              "tensors; is it a model checkpoint?")
    return loaded


def _refusal_message(path: Path, detail: str) -> str:
    names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", detail)))
    what = f" ({', '.join(names)})" if names else ""
    return (f"{path.name} was refused for safety: it contains pickled Python objects other than tensors"
            f"{what}, and loading them could run code. This loader only reads weights; use the official "
            "model file or one written by `python -m xportrait_core.convert`.")


def _broken_message(path: Path, detail: str) -> str:
    size = path.stat().st_size if path.exists() else 0
    known = KNOWN_FILES.get(path.name)
    expected = f"expected ~{_gb(known.approx_bytes)} for {known.name}" if known else "expected a complete model file"
    return (f"{path.name} is a truncated or corrupt download: it is {_gb(size)} ({size} bytes), {expected} "
            f"({detail}). Delete it and download it again.")


def _describe_foreign(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer file, not the model: fetch the real file"
    if text.startswith((b"<", b"{")):
        return "it is a text/HTML page (likely an error page saved in place of the model)"
    return "it is neither a torch zip archive nor a torch pickle"


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
