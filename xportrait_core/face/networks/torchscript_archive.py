"""Read the named tensors out of a TorchScript archive without running any of its code.

`torch.jit.load` compiles and runs the TorchScript program stored in the archive. We only need
the weights, so `archive/data.pkl` (the pickled module tree) is unpickled with an allow-list:
module objects become inert attribute bags, tensors are rebuilt from the archive's raw storage
records (`archive/data/<key>`), and any other global the pickle names is refused. Nothing the
file contains is imported or called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class TorchScriptArchiveError(ValueError):
    """The file is not a TorchScript archive this reader understands, or asks for code."""


class _ScriptObject:
    """Stand-in for a scripted module: pickle's BUILD hands it the attribute dict; no behaviour.
    One subclass per TorchScript type name (pickle's NEWOBJ instantiates the class it was given
    without calling __init__)."""

    type_name = ""

    def __setstate__(self, state) -> None:
        self.attributes = state if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _identity(value, *_ignored):
    # torch.jit._pickle.build_intlist and friends wrap a plain list; restore_type_tag adds a type
    # string. The value itself is all we need.
    return value


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_ignored) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, read_record):
        super().__init__(io.BytesIO(data))
        self._read_record = read_record
        self._storages: dict[str, torch.Tensor] = {}
        self._types: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            type_name = f"{module}.{name}"
            if type_name not in self._types:
                self._types[type_name] = type(name, (_ScriptObject,), {"type_name": type_name})
            return self._types[type_name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag"):
            return _identity
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise TorchScriptArchiveError(
            f"the archive's data.pkl refers to {module}.{name}, which a weights-only reader does not "
            f"allow; re-download the file or use the package's plain state_dict release")

    def persistent_load(self, record):
        if not (isinstance(record, tuple) and len(record) == 5 and record[0] == "storage"):
            raise TorchScriptArchiveError(f"unexpected persistent record {record!r} in data.pkl")
        _, storage_type, key, _location, numel = record
        if not isinstance(storage_type, _StorageType):
            raise TorchScriptArchiveError(f"storage {key} has no known element type")
        if key not in self._storages:
            raw = bytearray(self._read_record(f"data/{key}"))
            flat = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
            if flat.numel() < numel:
                raise TorchScriptArchiveError(f"storage {key} holds {flat.numel()} elements, data.pkl says {numel}")
            self._storages[key] = flat
        return self._storages[key]


def _flatten(node, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for name, value in getattr(node, "attributes", {}).items():
        key = f"{prefix}{name}"
        if isinstance(value, torch.Tensor):
            out[key] = value.clone()
        elif isinstance(value, _ScriptObject):
            _flatten(value, key + ".", out)


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True when `path` is a zip with a TorchScript module tree (data.pkl beside constants.pkl)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/data.pkl") for n in names) and any(n.endswith("/constants.pkl") for n in names)


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archived module tree, keyed like a `state_dict`
    ("conv2.downsample.0.weight"), as CPU tensors; little-endian archives only."""
    if not zipfile.is_zipfile(path):
        raise TorchScriptArchiveError(f"{path} is not a zip archive (TorchScript files are zips)")
    with zipfile.ZipFile(path) as archive:
        roots = sorted({n.split("/", 1)[0] for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1})
        if len(roots) != 1:
            raise TorchScriptArchiveError(f"{path} has no single top-level data.pkl; is it a TorchScript archive?")
        root = roots[0]
        byteorder = f"{root}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
            raise TorchScriptArchiveError(f"{path} stores big-endian tensors, which this reader does not convert")
        unpickler = _WeightsUnpickler(archive.read(f"{root}/data.pkl"), lambda name: archive.read(f"{root}/{name}"))
        tree = unpickler.load()
    if not isinstance(tree, _ScriptObject):
        raise TorchScriptArchiveError(f"{path}: data.pkl does not hold a module")
    tensors: dict[str, torch.Tensor] = {}
    _flatten(tree, "", tensors)
    return tensors


# ComfyUI shows an error's type as module.name: a short, readable type instead of the pack's path.
TorchScriptArchiveError.__module__ = "xportrait"
