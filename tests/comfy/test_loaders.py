"""The five loader nodes, run by ComfyUI's executor, on the official all-in-one `.th` and on the
converter's per-component files: exact weights, chosen dtype, one opening per file, clear errors.

A small recording node is registered for this module only: it sits after each loader so the
objects the loaders build come back to the test exactly as the next node would receive them.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.parity_rig import pack_module
from xportrait_core.checkpoint.architecture import SCHEDULE_BUFFERS
from xportrait_core.checkpoint.components import split_components
from xportrait_core.checkpoint.split import OUTPUT_FILES
from xportrait_core.checkpoint.tiny import build_random_checkpoint, save_official_th
from xportrait_core.convert import convert
from harness.tiny_models import LEFTOVERS, RELEASE_VARIANTS, release_variant, save_like_the_release
from harness.recorder import network_weights, recorder_node, run_recorded

OFFICIAL = "tiny_official.th"
RECORDER = "XPortraitTestRecorder"
#: loader node -> (component of each output; the base loader also gives the VAE)
LOADERS = {
    "XPortraitLoadBaseModel": ("unet", "vae"),
    "XPortraitLoadTemporalModules": ("temporal",),
    "XPortraitLoadReferenceNet": ("reference_net",),
    "XPortraitLoadMotionControlNet": ("pose_controlnet",),
    "XPortraitLoadLocalControlNet": ("local_controlnet",),
}
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


_Recorder = recorder_node()


@dataclass
class Library:
    root: Path
    state: dict  # the tensors written into OFFICIAL (fp32)


@pytest.fixture(scope="module")
def library(comfy, tmp_path_factory):
    """A models/xportrait folder of our own: the official-format file, both conversions, bad files."""
    import folder_paths
    root = tmp_path_factory.mktemp("xportrait_loaders")
    state = build_random_checkpoint(seed=3, dtype=torch.float32)
    save_official_th(root / OFFICIAL, state)
    for dtype in ("fp32", "fp16"):
        convert(root / OFFICIAL, root / f"converted_{dtype}", dtype)
    folder_paths.add_model_folder_path("xportrait", str(root))
    comfy.nodes.NODE_CLASS_MAPPINGS[RECORDER] = _Recorder
    try:
        yield Library(root, state)
    finally:
        del comfy.nodes.NODE_CLASS_MAPPINGS[RECORDER]
        folder_paths.folder_names_and_paths["xportrait"][0].remove(str(root))
        _Recorder.seen.clear()


def converted(dtype: str, component: str) -> str:
    output = "base_sd15" if component in ("unet", "vae") else component
    return f"converted_{dtype}/{OUTPUT_FILES[output]}"


def loader_prompt(files: dict[str, str], weight_dtype: str):
    """Each loader in `files` (node -> model_file) with a recorder on every output."""
    from comfy_execution.graph_utils import GraphBuilder
    g = GraphBuilder(prefix="ld")
    for node_id, model_file in files.items():
        loader = g.node(node_id, model_file=model_file, weight_dtype=weight_dtype)
        for index, component in enumerate(LOADERS[node_id]):
            g.node(RECORDER, value=loader.out(index), tag=component)
    return g.finalize()


def run_loaders(comfy, files: dict[str, str], weight_dtype: str) -> dict:
    result, built = run_recorded(comfy, _Recorder, loader_prompt(files, weight_dtype))
    assert result.success, result.error_text()
    return built


def expected_weights(state: dict, component: str) -> dict[str, torch.Tensor]:
    part = split_components(state)[component]  # leaves out the reference net's unused hint encoder
    return dict(part)


def assert_same_weights(component: str, got: dict, expected: dict, dtype: torch.dtype | None):
    assert sorted(got) == sorted(expected), f"{component}: built keys differ from the file's"
    for key, value in expected.items():
        if dtype is not None and not key.endswith("pos_encoder.pe"):  # a buffer's dtype is the module's business
            assert got[key].dtype == dtype, f"{component}.{key} is {got[key].dtype}, asked for {dtype}"
        assert torch.equal(got[key].cpu(), value.to(got[key].dtype)), f"{component}.{key} differs from the file"


@pytest.mark.parametrize("weight_dtype", ["fp32", "fp16"])
def test_loaders_build_the_exact_weights_from_the_official_file(comfy, library, weight_dtype):
    built = run_loaders(comfy, {node: OFFICIAL for node in LOADERS}, weight_dtype)
    assert set(built) == {c for outputs in LOADERS.values() for c in outputs}
    for component, obj in built.items():
        dtype = None if component == "vae" else DTYPES[weight_dtype]  # the VAE loader has no dtype choice
        assert_same_weights(component, network_weights(component, obj), expected_weights(library.state, component), dtype)


@pytest.mark.parametrize("converted_dtype", ["fp32", "fp16"])
def test_converted_files_give_the_same_networks_as_the_official_file(comfy, library, converted_dtype):
    # fp32 files are loaded at fp32 and must equal the original bit for bit; fp16 files at fp16
    # must equal the original loaded at fp16 (one rounding, done by the converter or the loader).
    weight_dtype = converted_dtype
    from_official = run_loaders(comfy, {node: OFFICIAL for node in LOADERS}, weight_dtype)
    from_converted = run_loaders(comfy, {node: converted(converted_dtype, LOADERS[node][0]) for node in LOADERS},
                                 weight_dtype)
    assert set(from_converted) == set(from_official)
    for component in from_official:
        official = network_weights(component, from_official[component])
        mine = network_weights(component, from_converted[component])
        if component == "vae" and converted_dtype == "fp16":  # stored fp16: the VAE holds the rounded values
            official = {k: v.half().to(mine[k].dtype) for k, v in official.items()}
        assert sorted(mine) == sorted(official)
        for key in official:
            assert mine[key].dtype == official[key].dtype, f"{component}.{key}"
            assert torch.equal(mine[key], official[key]), f"{component}.{key} differs between the two files"


@pytest.fixture
def open_counter(monkeypatch):
    """Counts, per path, how often the pack really opens a model file."""
    safe_load = pack_module("xportrait_core.checkpoint.safe_load")
    original = safe_load.load_state_dict
    opened: list[str] = []

    def counting(path):
        opened.append(os.fspath(path))
        return original(path)

    monkeypatch.setattr(safe_load, "load_state_dict", counting)
    return opened


def test_official_file_is_opened_once_and_reopened_only_when_it_changes(comfy, library, open_counter):
    model_files = pack_module("nodes.model_files")
    name = "cache_probe.th"
    path = library.root / name
    shutil.copyfile(library.root / OFFICIAL, path)
    every_loader = {node: name for node in LOADERS}

    first = run_loaders(comfy, every_loader, "fp32")
    assert open_counter.count(str(path)) == 1, "six components in one prompt must share one opening"
    parts = model_files.open_file(name)
    run_loaders(comfy, every_loader, "fp32")
    assert open_counter.count(str(path)) == 1, "a second prompt must reuse the split file"
    assert model_files.open_file(name) is parts

    # Replace the file the way a download does (new file renamed over the old one).
    changed = build_random_checkpoint(seed=4, dtype=torch.float32)
    save_official_th(library.root / "cache_probe.partial", changed)
    os.replace(library.root / "cache_probe.partial", path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = run_loaders(comfy, every_loader, "fp32")
    assert open_counter.count(str(path)) == 2, "a changed file must be opened again"
    assert model_files.open_file(name) is not parts
    for component in ("unet", "temporal", "pose_controlnet"):
        assert_same_weights(component, network_weights(component, second[component]),
                            expected_weights(changed, component), torch.float32)
        old = network_weights(component, first[component])
        new = network_weights(component, second[component])
        assert any(not torch.equal(old[k], new[k]) for k in old), f"{component} still has the old weights"


def combo_options(spec) -> list[str]:
    """A combo input's choices: `[choices, opts]` or the newer `["COMBO", {"options": choices}]`."""
    return spec[1]["options"] if spec[0] == "COMBO" else spec[0]


def test_models_folder_lists_only_model_files(comfy, library):
    import folder_paths
    (library.root / "notes.txt").write_text("not a model")
    model_files = pack_module("nodes.model_files")
    paths, extensions = folder_paths.folder_names_and_paths["xportrait"]
    assert os.path.join(folder_paths.models_dir, "xportrait") in paths
    assert str(library.root) in paths
    assert {".th", ".pt", ".pth", ".ckpt", ".safetensors", ".bin"} <= set(extensions)
    options = combo_options(comfy.node_class("XPortraitLoadTemporalModules").INPUT_TYPES()["required"]["model_file"])
    assert OFFICIAL in options and converted("fp16", "temporal") in options
    assert "notes.txt" not in options and "notes.txt" not in model_files.model_files()


@pytest.mark.server
def test_extra_model_paths_yaml_folder_is_listed_over_http(comfy_server, model_dir):
    # comfy_server names model_dir under the key `xportrait` in its extra_model_paths.yaml.
    probe = model_dir / "yaml_probe"
    probe.mkdir(exist_ok=True)
    try:
        (probe / "listed.pth").write_bytes(b"\0")
        (probe / "ignored.txt").write_text("not a model")
        spec = comfy_server.get_json("/object_info/XPortraitLoadReferenceNet")["XPortraitLoadReferenceNet"]
        options = combo_options(spec["input"]["required"]["model_file"])
        assert "yaml_probe/listed.pth" in options
        assert "yaml_probe/ignored.txt" not in options
    finally:
        shutil.rmtree(probe)


def _run_failing(comfy, node_id: str, model_file: str) -> str:
    result = comfy.run(loader_prompt({node_id: model_file}, "fp32"))
    assert not result.success, f"{node_id} accepted {model_file}"
    return result.error_text()


def test_plain_sd15_checkpoint_is_named_in_the_temporal_loader_error(comfy, library):
    sd15 = {k: v for k, v in library.state.items()
            if k in SCHEDULE_BUFFERS or k.startswith("first_stage_model.")
            or (k.startswith("model.diffusion_model.") and "_motion_module" not in k)}
    torch.save(sd15, library.root / "sd15_like.ckpt")
    text = _run_failing(comfy, "XPortraitLoadTemporalModules", "sd15_like.ckpt")
    assert "sd15_like.ckpt" in text
    shown = re.findall(r"'exception_type': '([^']*)'", text)
    assert shown and all("/" not in t and "comfyui-xportrait" not in t for t in shown), shown
    assert "plain Stable Diffusion 1.5 checkpoint" in text
    assert "holds no temporal modules" in text and "model_state-415001.th" in text
    # The same file is a valid backbone for the base-model loader.
    built = run_loaders(comfy, {"XPortraitLoadBaseModel": "sd15_like.ckpt"}, "fp32")
    assert_same_weights("unet", network_weights("unet", built["unet"]), expected_weights(library.state, "unet"),
                        torch.float32)


def test_converted_component_in_the_wrong_loader_names_the_right_file(comfy, library):
    text = _run_failing(comfy, "XPortraitLoadReferenceNet", converted("fp16", "temporal"))
    assert "holds no reference net (it holds: temporal modules)" in text
    assert OUTPUT_FILES["reference_net"] in text


def test_truncated_file_is_reported_as_truncated(comfy, library):
    data = (library.root / OFFICIAL).read_bytes()
    (library.root / "cut_short.th").write_bytes(data[: len(data) // 2])
    text = _run_failing(comfy, "XPortraitLoadMotionControlNet", "cut_short.th")
    assert "cut_short.th is a truncated or corrupt download" in text
    # The pack's own error types show in the UI under a short name, not the pack's module path.
    assert re.findall(r"'exception_type': '([^']*)'", text) == ["xportrait.CheckpointError"]
    assert "download it again" in text


class _Payload:
    """Unpickling this creates a file: proof of whether a loader ran the pickle's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickle_with_code_is_refused_and_never_run(comfy, library):
    marker = library.root / "payload_ran"
    path = library.root / "booby_trapped.pt"
    torch.save({"model.diffusion_model.input_blocks_motion_module.0.x": torch.zeros(1),
                "trap": _Payload(marker)}, path)
    text = _run_failing(comfy, "XPortraitLoadTemporalModules", "booby_trapped.pt")
    assert "booby_trapped.pt was refused for safety" in text
    assert not marker.exists(), "the pickle's payload ran"
    torch.load(path, weights_only=False)  # an unsafe loader would have run it
    assert marker.exists()


def test_training_leftovers_are_ignored_by_nodes_and_converter_alike(comfy, library, caplog, tmp_path):
    state = dict(library.state)
    state.update({"model_ema.decay": torch.tensor(0.9999), "lvlb_weights": torch.ones(1000),
                  "scale_factor": torch.tensor(0.18215)})
    torch.save(state, library.root / "with_leftovers.th")
    with caplog.at_level("WARNING", logger="xportrait"):
        built = run_loaders(comfy, {"XPortraitLoadTemporalModules": "with_leftovers.th",
                                    "XPortraitLoadReferenceNet": "with_leftovers.th"}, "fp32")
    assert set(built) == {"temporal", "reference_net"}
    notes = [r.getMessage() for r in caplog.records if "outside every X-Portrait network" in r.getMessage()]
    assert len(notes) == 1 and "with_leftovers.th" in notes[0] and "model_ema.decay" in notes[0]
    caplog.clear()
    convert(library.root / "with_leftovers.th", tmp_path / "converted", "fp16")  # no longer refused
    assert any("outside every X-Portrait network" in r.getMessage() for r in caplog.records)


# --- A file shaped like the release, and its likely variants ---------------------------------

@pytest.fixture(scope="module")
def release_state():
    """The release's layout (see harness.tiny_models) at tiny widths, except the CLIP text model:
    ComfyUI's SD1.5 CLIP has the fixed ViT-L/14 widths, so it is full size and the networks'
    cross-attention takes its 768-wide context."""
    from harness.tiny_models import release_shaped_state
    from xportrait_core.checkpoint.architecture import TINY
    return release_shaped_state(TINY.with_(context_dim=768), seed=11)


@pytest.fixture(scope="module")
def clip_context_of_release(comfy, release_state):
    """CLIP("") from the release's text weights, encoded by ComfyUI alone (none of the pack's code)."""
    import comfy.sd as comfy_sd
    root = "cond_stage_model.transformer."
    text = {k[len(root):]: v for k, v in release_state.items() if k.startswith(root)}
    clip = comfy_sd.load_text_encoder_state_dicts([text], clip_type=comfy_sd.CLIPType.STABLE_DIFFUSION)
    return clip.encode_from_tokens(clip.tokenize("")).float().cpu()


def every_loader_prompt(model_file: str):
    """The five network loaders and X-Portrait Empty Prompt on one file, a recorder on each output."""
    from comfy_execution.graph_utils import GraphBuilder
    g = GraphBuilder(prefix="rl")
    for node_id, components in LOADERS.items():
        loader = g.node(node_id, model_file=model_file, weight_dtype="fp32")
        for index, component in enumerate(components):
            g.node(RECORDER, value=loader.out(index), tag=component)
    prompt = g.node("XPortraitEmptyPrompt", model_file=model_file)
    g.node(RECORDER, value=prompt.out(0), tag="empty_prompt")
    return g.finalize()


def _pack_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "xportrait" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("variant", RELEASE_VARIANTS)
def test_release_shaped_file_and_its_variants_load_through_every_loader_node(
        comfy, library, release_state, clip_context_of_release, variant, caplog, tmp_path):
    name = f"release_{variant.replace(' ', '_')}.th"
    path = save_like_the_release(library.root / name, release_variant(release_state, variant),
                                 byteorder_record=variant != "no byteorder")
    try:
        with caplog.at_level(logging.WARNING, logger="xportrait"):
            result, built = run_recorded(comfy, _Recorder, every_loader_prompt(name))
        assert result.success, result.error_text()
        for component in (c for outputs in LOADERS.values() for c in outputs):
            dtype = None if component == "vae" else torch.float32
            assert_same_weights(component, network_weights(component, built[component]),
                                expected_weights(release_state, component), dtype)
        context = built["empty_prompt"][0][0]
        assert context.shape == (1, 77, 768) and context.std() > 0.1
        assert torch.equal(context, clip_context_of_release), "the file's own CLIP weights must encode the prompt"

        notes = _pack_warnings(caplog)
        if variant == "training leftovers":
            assert len(notes) == 1 and all(key in notes[0] for key in LEFTOVERS) and name in notes[0], notes
        elif variant == "missing buffers":
            assert len(notes) == 1 and "noise-schedule buffer(s)" in notes[0] and "position table(s)" in notes[0]
        else:
            assert notes == [], notes

        if variant == "current clip layout":  # the converter writes it in the official layout
            written = convert(path, tmp_path / "converted", "fp32", ["base_sd15"])["base_sd15"]
            moved = library.root / f"release_current_layout_{written.name}"
            shutil.move(str(written), moved)
            try:
                again = comfy.node_class("XPortraitEmptyPrompt").execute(model_file=moved.name).result[0]
                assert torch.equal(again[0][0], clip_context_of_release)
            finally:
                moved.unlink()
    finally:
        path.unlink()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script, used to make the stand-in archive
def test_detect_landmarks_falls_back_to_the_plain_fan_release_when_the_archive_is_unreadable(
        comfy, tmp_path_factory, caplog):
    """X-Portrait Detect Landmarks with a face/ folder whose TorchScript archive cannot be read
    (cut short) but which holds the plain-weights release: it runs, and says why once."""
    import folder_paths
    from xportrait_core.face.detector import WEIGHTS
    from xportrait_core.face.fan_weights import PLAIN_FAN
    from xportrait_core.face.networks.fan2d import FAN2D
    from xportrait_core.face.networks.s3fd import S3FD
    root = tmp_path_factory.mktemp("xportrait_face_fallback")
    face = root / "face"
    face.mkdir()
    torch.manual_seed(6)
    torch.jit.script(torch.nn.Conv2d(3, 8, 3)).save(str(root / "whole.zip"))
    whole = (root / "whole.zip").read_bytes()
    (face / WEIGHTS["fan"].name).write_bytes(whole[: len(whole) // 2])  # a TorchScript archive, half synced
    torch.save(FAN2D().state_dict(), face / PLAIN_FAN.name, _use_new_zipfile_serialization=False)
    torch.save(S3FD().state_dict(), face / WEIGHTS["s3fd"].name)
    folder_paths.add_model_folder_path("xportrait", str(root), is_default=True)  # searched first
    try:
        with caplog.at_level(logging.WARNING, logger="xportrait"):
            landmarks = comfy.node_class("XPortraitDetectLandmarks").execute(
                images=torch.rand(2, 80, 96, 3), face="strongest", official_256=True,
                download_weights=False).result[0]
    finally:
        folder_paths.folder_names_and_paths["xportrait"][0].remove(str(root))
    assert landmarks.points.shape == (2, 68, 2) and landmarks.image_hw == (80, 96)
    notes = [r.getMessage() for r in caplog.records if r.name == "xportrait"]
    assert len(notes) == 1 and WEIGHTS["fan"].name in notes[0] and PLAIN_FAN.name in notes[0], notes
