"""The shipped example workflows: up to date with the node schemas, laid out for a newcomer, served
by ComfyUI as the pack's templates, and runnable (tiny version) through the real executor."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from harness.graphs import EXAMPLE_FRAMES as FRAMES
from harness.graphs import tiny_version, use_landmark_file
from harness.paths import ASSETS, PACK_NAME, REPO
from harness.workflow_format import FRONTEND_ONLY, object_info, ui_to_api

sys.path.insert(0, str(REPO / "scripts"))
import build_workflows  # noqa: E402
from workflow_graphs import API_NAMES, GROUP_TITLES, GROUPS, TEMPLATES  # noqa: E402

TEMPLATE_DIR = REPO / build_workflows.TEMPLATE_DIR
API_DIR = REPO / build_workflows.API_DIR
SHIPPED = list(TEMPLATES)
NODE_TITLE = 30     # the title bar litegraph draws above node.pos


def _validate(comfy, prompt):
    ok, error, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt(str(uuid.uuid4()), prompt, None))[:4]
    assert ok, json.dumps({"error": error, "node_errors": node_errors}, indent=1, default=str)[:4000]
    return outputs


def _ui(name: str) -> dict:
    return json.loads((TEMPLATE_DIR / f"{name}.json").read_text())


def _info_of(comfy):
    return lambda class_type: object_info(comfy.nodes, class_type)


def test_generated_files_are_up_to_date_with_the_node_schemas(comfy):
    built = build_workflows.build(_info_of(comfy))
    for path, data in built.items():
        shipped = REPO / path
        assert shipped.exists(), f"{path} missing: run scripts/build_workflows.py"
        if path.endswith(".json"):
            assert json.loads(shipped.read_text()) == json.loads(data), \
                f"{path} is out of date with the node schemas: run scripts/build_workflows.py"
    shipped = {p.relative_to(REPO).as_posix() for p in TEMPLATE_DIR.rglob("*") if p.is_file()}
    assert shipped == {p for p in built if not p.startswith(build_workflows.SUBGRAPH_DIR + "/")}, "stray files"


def test_layout_keeps_api_prompts_below_the_templates():
    """ComfyUI lists a pack's top-level workflows/*.json as templates; the API prompts sit one
    folder down so they are not listed."""
    assert build_workflows.TEMPLATE_DIR == "workflows"
    assert API_DIR.parent == TEMPLATE_DIR
    assert sorted(p.stem for p in TEMPLATE_DIR.glob("*.json")) == sorted(SHIPPED)
    assert sorted(p.stem for p in API_DIR.glob("*.json")) == sorted(API_NAMES.values())
    for name in SHIPPED:
        assert (TEMPLATE_DIR / f"{name}.jpg").is_file(), f"{name} has no thumbnail"
    assert not (REPO / "example_workflows").exists() and not (REPO / "api_workflows").exists()


def test_stale_file_removal_keeps_thumbnails_and_api_prompts(tmp_path, monkeypatch):
    template, api, subgraph = build_workflows.TEMPLATE_DIR, build_workflows.API_DIR, build_workflows.SUBGRAPH_DIR
    files = {f"{template}/a.json": b"{}", f"{template}/a.jpg": b"jpg", f"{api}/a_api.json": b"{}",
             f"{subgraph}/s.json": b"{}"}
    strays = [f"{template}/old.json", f"{template}/old.jpg", f"{api}/old_api.json", f"{subgraph}/old.json"]
    for path in [*files, *strays]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    monkeypatch.setattr(build_workflows, "REPO", tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in build_workflows.stale_files(files)) == sorted(strays)
    build_workflows.remove_stale(files)
    left = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert left == set(files), "removed a file build() writes, or left a stale one"


@pytest.mark.parametrize("name", SHIPPED)
def test_template_is_a_ui_workflow_with_a_thumbnail(name):
    import cv2
    ui = _ui(name)
    assert isinstance(ui.get("nodes"), list) and isinstance(ui.get("links"), list) and ui["nodes"]
    assert not any("class_type" in node for node in ui["nodes"])
    thumbnail = TEMPLATE_DIR / f"{name}.jpg"
    assert thumbnail.stat().st_size < 100_000, "keep the thumbnail small"
    image = cv2.imread(str(thumbnail))
    assert image is not None and image.shape[0] >= 256 and image.shape[1] >= 256
    assert image.std() > 10, "the thumbnail is blank"


@pytest.mark.parametrize("name", SHIPPED)
def test_api_workflow_is_the_template_and_validates(comfy, example_inputs, name):
    api = json.loads((API_DIR / f"{API_NAMES[name]}.json").read_text())
    converted = ui_to_api(_ui(name), _info_of(comfy))
    assert converted == api
    assert _validate(comfy, api), "the workflow has no output node"


def test_comfyui_serves_the_templates_with_their_thumbnails(comfy_server):
    """ComfyUI's template browser asks /workflow_templates, then <pack>/<name>.json and <name>.jpg."""
    import cv2
    listed = comfy_server.get_json("/workflow_templates")
    assert sorted(listed.get(PACK_NAME, [])) == sorted(SHIPPED), "only the UI templates are listed"
    assert not set(listed[PACK_NAME]) & set(API_NAMES.values()), "an API prompt is listed as a template"
    for name in listed[PACK_NAME]:
        workflow = comfy_server.get_json(f"/api/workflow_templates/{PACK_NAME}/{name}.json")
        assert workflow == _ui(name)
        # UI format (litegraph nodes and links), not an API prompt ({id: {class_type, inputs}}).
        assert isinstance(workflow.get("nodes"), list) and isinstance(workflow.get("links"), list)
        assert not any(isinstance(v, dict) and "class_type" in v for v in workflow.values()), \
            f"{name} is an API prompt served as a template"
        with urllib.request.urlopen(f"{comfy_server.base}/api/workflow_templates/{PACK_NAME}/{name}.jpg") as r:
            picture = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[0] >= 256


def _rect(node: dict) -> tuple[float, float, float, float]:
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - NODE_TITLE, x + w, y + h


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


@pytest.mark.parametrize("name", SHIPPED)
def test_layout_reads_left_to_right_without_overlaps(comfy, name):
    ui = _ui(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    rects = {nid: _rect(n) for nid, n in nodes.items()}
    groups = [(g["title"], (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                            g["bounding"][1] + g["bounding"][3])) for g in ui["groups"]]
    # The five groups, in data-flow order from left to right, side by side.
    assert [title for title, _ in groups] == [GROUP_TITLES[g] for g in GROUPS]
    for (_, a), (_, b) in zip(groups, groups[1:]):
        assert a[2] < b[0], "groups overlap or are out of order"
    # No two nodes overlap (title bars included), nor does a node hang out of its group.
    ids = sorted(rects)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            assert not _overlap(rects[a], rects[b]), f"nodes {a} and {b} overlap"
    group_of = {}
    for nid, rect in rects.items():
        holders = [title for title, box in groups if _inside(rect, box)]
        assert len(holders) == 1, f"node {nid} ({nodes[nid]['type']}) is in groups {holders}"
        group_of[nid] = holders[0]
    # One Note per group, saying something.
    notes = [n for n in ui["nodes"] if n["type"] in FRONTEND_ONLY]
    assert sorted(group_of[n["id"]] for n in notes) == sorted(t for t, _ in groups)
    assert all(len(n["widgets_values"][0]) > 80 for n in notes)
    # Every wire runs left to right, and from a group to itself or to a later one.
    order = [title for title, _ in groups]
    for _, origin, _, target, _, _ in ui["links"]:
        assert rects[origin][2] < rects[target][0], f"link {origin} -> {target} runs right to left"
        assert order.index(group_of[origin]) <= order.index(group_of[target])
    # The landmark and driving previews are wired to preview nodes.
    consumers = {(origin, slot): nodes[target]["type"] for _, origin, slot, target, _, _ in ui["links"]}
    previews = {n["type"]: n["id"] for n in ui["nodes"] if n["type"].endswith("Preview")}
    assert consumers.get((previews["XPortraitLandmarkPreview"], 0)) == "PreviewImage"
    assert consumers.get((previews["XPortraitDrivingPreview"], 0)) == "PreviewImage"
    assert consumers.get((previews["XPortraitDrivingPreview"], 1)) == "PreviewImage"
    # Node sizes are at least what the frontend would give them (a row per socket and per widget).
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info(comfy.nodes, node["type"])
        rows = max(len([i for i in node["inputs"] if "widget" not in i]), len(info["output"]))
        assert node["size"][1] >= 20 * rows + 24 * len(node["widgets_values"]), node["type"]


def _saved_frames(outputs: dict, class_type_ids: list[str]) -> list[np.ndarray]:
    import av
    import folder_paths
    (entry,) = [outputs[nid]["images"] for nid in class_type_ids]
    path = Path(folder_paths.get_output_directory()) / entry[0]["subfolder"] / entry[0]["filename"]
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("name", SHIPPED)
def test_tiny_version_of_the_template_runs(comfy, example_inputs, name):
    prompt = ui_to_api(_ui(name), _info_of(comfy))
    _validate(comfy, prompt)   # as shipped, detector included
    prompt = tiny_version(use_landmark_file(prompt), size=128, steps=2)
    result = comfy.run(prompt)
    assert result.success, result.error_text()
    savers = [nid for nid, node in prompt.items() if node["class_type"] == "SaveWEBM"]
    frames = _saved_frames(result.outputs, savers)
    assert len(frames) == FRAMES and frames[0].shape == (512, 512, 3), "not the portrait's resolution"
    previews = {nid: len(result.outputs[nid]["images"]) for nid, node in prompt.items()
                if node["class_type"] == "PreviewImage"}
    assert sorted(previews.values()) == [1, FRAMES, FRAMES], "landmark / aligned / hint previews"


def test_main_job_runs_the_example_on_tiny_weights(tmp_path):
    if not ASSETS.exists():
        pytest.skip(f"sample assets not found at {ASSETS}")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "run_example.py"), "--tiny", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    videos = list(tmp_path.rglob("*.webm"))
    assert len(videos) == 1
    # It says what it is doing: each node as it starts, the sampler's progress, and the video's path.
    assert "running KSampler" in out.stdout and re.search(r"^\[example\] +\d+ s +\d+/\d+$", out.stdout, re.M)
    assert f"[example] wrote {videos[0]}" in out.stdout
    import av
    with av.open(str(videos[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 60 and frames[0].shape == (512, 512, 3)
