"""Opening model files: weights only, memory-mapped, and clear about broken or unsafe files."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from xportrait_core.checkpoint.errors import CheckpointError
from xportrait_core.checkpoint.safe_load import SafetensorsFile, load_state_dict
from xportrait_core.checkpoint.tiny import build_random_checkpoint, save_official_th
from xportrait_core.checkpoint.validate import validate_checkpoint


class _CreatesMarker:
    """Unpickling this would create a file: proof of code execution if the loader were unsafe."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _make_marker_function():
    return "never called"


@pytest.fixture(scope="module")
def tiny_state():
    return build_random_checkpoint()


def test_official_th_roundtrip_is_memory_mapped_and_valid(tmp_path, tiny_state):
    path = tmp_path / "model_state-415001.th"
    save_official_th(path, tiny_state)
    loaded = load_state_dict(path)
    assert set(loaded) == set(tiny_state)
    key = "pose_control_model.zero_convs.3.0.weight"
    assert torch.equal(loaded[key], tiny_state[key]) and loaded[key].dtype == torch.float16
    assert loaded["betas"].dtype == torch.float32
    # a mapped tensor lives inside one shared mapping of the file, not in its own allocation
    size = os.path.getsize(path)
    pointers = [loaded[k].untyped_storage().data_ptr() for k in (key, "betas")]
    assert abs(pointers[0] - pointers[1]) < size
    validate_checkpoint(loaded, source=path.name)


def test_state_dict_wrapped_and_legacy_format_files_load(tmp_path, tiny_state):
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": tiny_state, "global_step": 415001}, wrapped)
    validate_checkpoint(load_state_dict(wrapped), source=wrapped.name)
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.arange(4.0)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict(legacy)["a"], torch.arange(4.0))


def test_truncated_download_names_size_and_expected_size(tmp_path, tiny_state):
    whole = tmp_path / "whole.th"
    save_official_th(whole, {k: v for k, v in list(tiny_state.items())[:50]})
    data = whole.read_bytes()
    cut = tmp_path / "model_state-415001.th"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as caught:
        load_state_dict(cut)
    message = str(caught.value)
    assert "model_state-415001.th is a truncated or corrupt download" in message
    assert f"({len(data) // 2} bytes)" in message and "expected ~12.3 GB for model_state-415001.th" in message
    other = tmp_path / "mine.pt"
    other.write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match=r"mine.pt is a truncated or corrupt download: it is 0.0 MB \(1000 bytes"):
        load_state_dict(other)


@pytest.mark.parametrize("payload", ["object", "function"])
def test_pickle_with_python_objects_is_refused_without_running_them(tmp_path, payload):
    marker = tmp_path / "code_ran"
    evil = _CreatesMarker(marker) if payload == "object" else _make_marker_function
    path = tmp_path / "model_state-415001.th"
    torch.save({"model.diffusion_model.out.2.bias": torch.zeros(4), "extra": evil}, path)
    with pytest.raises(CheckpointError) as caught:
        load_state_dict(path)
    message = str(caught.value)
    assert "model_state-415001.th was refused for safety" in message
    assert ("open" if payload == "object" else "_make_marker_function") in message
    assert not marker.exists()


@pytest.mark.parametrize("content, expected", [
    (b"<!DOCTYPE html><html><body>Repository not found</body></html>", "text/HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", "Git LFS pointer"),
    (b"\x00\x01garbage", "neither a torch zip archive nor a torch pickle"),
])
def test_foreign_files_are_described(tmp_path, content, expected):
    path = tmp_path / "model_state-415001.th"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        load_state_dict(path)


def test_wrong_suffix_missing_file_and_non_dict(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "absent.th")
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model file type '.npz'"):
        load_state_dict(odd)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_state_dict(listing)


def test_safetensors_open_lazily_with_metadata(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b": torch.ones(2)}, str(path),
              metadata={"xportrait.component": "temporal"})
    opened = load_state_dict(path)
    assert isinstance(opened, SafetensorsFile)
    assert opened.metadata == {"xportrait.component": "temporal"}
    assert list(opened) == ["a", "b"] and "a" in opened and "c" not in opened
    assert opened.shape("a") == (2, 3) and opened.dtype("a") == torch.float16
    assert torch.equal(opened["a"], torch.arange(6, dtype=torch.float16).reshape(2, 3))
    with pytest.raises(KeyError):
        opened["c"]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="cut.safetensors is a truncated or corrupt download"):
        load_state_dict(cut)
