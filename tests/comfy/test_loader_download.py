"""The loaders' `download` choice, run by ComfyUI's executor against a local HTTP server that
serves a tiny checkpoint in the official format under the official name.

The server's address and the tiny file's sha256 and size reach the pack the documented way, through
XPORTRAIT_DOWNLOAD_SOURCES; the pinned source of the real checkpoint is not touched. Each test gets
a models/xportrait folder of its own as the only `xportrait` folder, so files other tests put under
the official name cannot stand in for the download.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.file_server import FileServer, closed_port_url, sources_env
from harness.recorder import network_weights, recorder_node, run_recorded
from xportrait_core.checkpoint.components import split_components
from xportrait_core.checkpoint.tiny import build_random_checkpoint, save_official_th

NAME = "model_state-415001.th"
URL_PATH = "/fffiloni/X-Portrait/resolve/main/" + NAME
ENV = "XPORTRAIT_DOWNLOAD_SOURCES"
RECORDER = "XPortraitDownloadRecorder"
#: every loader that reads the model file -> the components of its outputs
LOADERS = {"XPortraitLoadBaseModel": ("unet", "vae"), "XPortraitLoadTemporalModules": ("temporal",),
           "XPortraitLoadReferenceNet": ("reference_net",), "XPortraitLoadMotionControlNet": ("pose_controlnet",),
           "XPortraitLoadLocalControlNet": ("local_controlnet",), "XPortraitEmptyPrompt": ("empty_prompt",)}


_Recorder = recorder_node()


@dataclass
class Checkpoint:
    data: bytes
    sha256: str
    state: dict
    context: torch.Tensor  # the empty-prompt sidecar's embedding (the tiny model has no text encoder)


@pytest.fixture(scope="module")
def checkpoint(comfy, tmp_path_factory):
    from safetensors.torch import save_file
    root = tmp_path_factory.mktemp("download_source")
    state = build_random_checkpoint(seed=21)
    save_official_th(root / NAME, state)
    data = (root / NAME).read_bytes()
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(5))
    save_file({"context": context}, str(root / "context.safetensors"))
    comfy.nodes.NODE_CLASS_MAPPINGS[RECORDER] = _Recorder
    try:
        yield Checkpoint(data, hashlib.sha256(data).hexdigest(), state, context)
    finally:
        del comfy.nodes.NODE_CLASS_MAPPINGS[RECORDER]


@pytest.fixture
def folder(comfy, checkpoint, tmp_path):
    """A fresh models/xportrait, the only folder under `xportrait` while the test runs."""
    import folder_paths
    from safetensors.torch import save_file
    target = tmp_path / "models" / "xportrait"
    target.mkdir(parents=True)
    save_file({"context": checkpoint.context}, str(target / "model_state-415001.empty_prompt.safetensors"))
    paths = folder_paths.folder_names_and_paths["xportrait"][0]
    saved = list(paths)
    paths[:] = [str(target)]
    try:
        yield target
    finally:
        paths[:] = saved


@pytest.fixture
def server(checkpoint, monkeypatch):
    with FileServer({URL_PATH: checkpoint.data}) as running:
        monkeypatch.setenv(ENV, sources_env(NAME, running.url(URL_PATH), checkpoint.sha256, len(checkpoint.data)))
        yield running


def loaders_prompt(download: bool, loaders=tuple(LOADERS)):
    from comfy_execution.graph_utils import GraphBuilder
    g = GraphBuilder(prefix="dl")
    for node_id in loaders:
        extra = {} if node_id == "XPortraitEmptyPrompt" else {"weight_dtype": "fp32"}
        loader = g.node(node_id, model_file=NAME, download=download, **extra)
        for index, component in enumerate(LOADERS[node_id]):
            g.node(RECORDER, value=loader.out(index), tag=component)
    return g.finalize()


def run(comfy, prompt):
    return run_recorded(comfy, _Recorder, prompt)


def assert_loaded_from(checkpoint: Checkpoint, built: dict):
    assert set(built) == {c for outputs in LOADERS.values() for c in outputs}
    parts = split_components(checkpoint.state)
    for component, obj in built.items():
        if component == "empty_prompt":
            assert torch.equal(obj[0][0], checkpoint.context)
            continue
        got = network_weights(component, obj)
        assert sorted(got) == sorted(parts[component]), component
        for key, value in parts[component].items():
            assert torch.equal(got[key].cpu(), value.to(got[key].dtype)), f"{component}.{key}"


def errors_of(result) -> list[dict]:
    return [data for event, data in result.messages if event == "execution_error"]


def test_official_name_is_offered_before_the_file_exists(comfy, folder):
    for node_id in LOADERS:
        info = comfy.node_class(node_id).GET_NODE_INFO_V1()["input"]
        spec = info["required"]["model_file"]
        assert NAME in spec[1]["options"], node_id
        assert info["optional"]["download"][1]["default"] is False, f"{node_id}: download must be off by default"
    assert not (folder / NAME).exists()


def test_download_off_names_the_switch_url_and_folder_and_fetches_nothing(comfy, folder, server):
    result, _ = run(comfy, loaders_prompt(download=False))
    assert not result.success
    errors = errors_of(result)
    assert len(errors) == 1, errors  # one error for the prompt, not one per loader
    text = errors[0]["exception_message"]
    assert NAME in text and server.url(URL_PATH) in text and str(folder) in text
    assert "Switch `download` on" in text
    assert server.requests == [] and not (folder / NAME).exists()


def test_six_loaders_download_once_then_load_the_file(comfy, folder, server, checkpoint):
    result, built = run(comfy, loaders_prompt(download=True))
    assert result.success, result.error_text()
    assert [(r.path, r.range) for r in server.requests] == [(URL_PATH, "")], "exactly one download for six loaders"
    assert (folder / NAME).read_bytes() == checkpoint.data
    assert not (folder / (NAME + ".part")).exists()
    assert_loaded_from(checkpoint, built)
    # Present now: another run with download on loads it without asking the server again.
    result, built = run(comfy, loaders_prompt(download=True, loaders=("XPortraitLoadTemporalModules",)))
    assert result.success, result.error_text()
    assert len(server.requests) == 1 and set(built) == {"temporal"}


def test_interrupted_download_resumes_from_the_partial_file(comfy, folder, server, checkpoint):
    size = len(checkpoint.data)
    server.cut_after = size // 10  # every transfer drops after a tenth of the file
    result, _ = run(comfy, loaders_prompt(download=True, loaders=("XPortraitLoadReferenceNet",)))
    assert not result.success
    text = errors_of(result)[0]["exception_message"]
    assert "is kept: run the download again to resume it" in text
    part = folder / (NAME + ".part")
    kept = part.stat().st_size
    # The first try and its three automatic retries each continued where the previous one stopped.
    assert [r.range for r in server.requests] == ["", *(f"bytes={k * (size // 10)}-" for k in (1, 2, 3))]
    assert kept == 4 * (size // 10) and part.read_bytes() == checkpoint.data[:kept]
    assert not (folder / NAME).exists(), "a partial file must never appear under the model's name"

    # Download off: the message says a partial download is waiting.
    result, _ = run(comfy, loaders_prompt(download=False, loaders=("XPortraitLoadReferenceNet",)))
    assert "partial download" in errors_of(result)[0]["exception_message"]

    server.cut_after = None
    before = len(server.requests)
    result, built = run(comfy, loaders_prompt(download=True))
    assert result.success, result.error_text()
    resumed = server.requests[before:]
    assert [r.range for r in resumed] == [f"bytes={kept}-"], "the rest was asked for with a Range header"
    assert server.bytes_sent() == size, "no byte was fetched twice"
    assert (folder / NAME).read_bytes() == checkpoint.data and not part.exists()
    assert_loaded_from(checkpoint, built)


def test_wrong_hash_is_refused_and_no_model_file_is_left(comfy, folder, checkpoint, monkeypatch):
    with FileServer({URL_PATH: checkpoint.data}) as running:
        wrong = hashlib.sha256(b"another build").hexdigest()
        monkeypatch.setenv(ENV, sources_env(NAME, running.url(URL_PATH), wrong, len(checkpoint.data)))
        result, built = run(comfy, loaders_prompt(download=True))
        assert not result.success and built == {}
        errors = errors_of(result)
        assert len(errors) == 1
        text = errors[0]["exception_message"]
        assert f"{NAME} is corrupt" in text and wrong in text and checkpoint.sha256 in text
        assert errors[0]["exception_type"] == "xportrait.DownloadError"
        assert len(running.requests) == 1
    assert sorted(os.listdir(folder)) == ["model_state-415001.empty_prompt.safetensors"], "the bad file must go"


def test_offline_gives_one_error_naming_file_url_and_folder(comfy, folder, monkeypatch):
    url = closed_port_url(URL_PATH)
    monkeypatch.setenv(ENV, sources_env(NAME, url))  # a mirror address: the pinned sha256 and size still apply
    result, _ = run(comfy, loaders_prompt(download=True))
    assert not result.success
    errors = errors_of(result)
    assert len(errors) == 1, errors
    assert errors[0]["exception_type"] == "xportrait.OfflineError"
    text = errors[0]["exception_message"]
    assert f"cannot reach the server for {NAME}" in text
    assert url in text and str(folder) in text and "by hand" in text
    assert not any(Path(folder, n).exists() for n in (NAME, NAME + ".part"))


def test_only_files_with_a_known_source_are_fetched(comfy, folder, server):
    # A missing converted file is not downloaded, download on or not; the usual not-found error
    # names the folders that were searched.
    missing = "xportrait_temporal.safetensors"
    loader = comfy.node_class("XPortraitLoadTemporalModules")
    with pytest.raises(FileNotFoundError) as caught:
        loader.execute(model_file=missing, weight_dtype="fp32", download=True)
    assert missing in str(caught.value) and str(folder) in str(caught.value)
    assert server.requests == [] and os.listdir(folder) == ["model_state-415001.empty_prompt.safetensors"]
