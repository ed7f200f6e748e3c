"""Whole X-Portrait graphs executed by ComfyUI: in-process executor and the HTTP server."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from harness.graphs import xportrait_graph


def _frames_from_preview(comfy, outputs, node_id):
    import folder_paths
    images = outputs[node_id]["images"]
    arrays = []
    for item in images:
        path = folder_paths.get_directory_by_type(item["type"])
        arrays.append(np.asarray(Image.open(f"{path}/{item['subfolder']}/{item['filename']}")))
    return arrays


@pytest.mark.parametrize("frames", [1, 5])
def test_xportrait_graph_runs_in_process(comfy, frames):
    prompt, ids = xportrait_graph(frames=frames, steps=2)
    result = comfy.run(prompt)
    assert result.success, result.error_text()
    arrays = _frames_from_preview(comfy, result.outputs, ids["output"])
    assert len(arrays) == frames
    # The portrait is not at the 512 working size: the node says so on the canvas, not only in the log.
    assert "128x128" in result.outputs[ids["apply"]]["text"][0]
    for a in arrays:
        assert a.shape == (128, 128, 3)
        assert a.std() > 0.5, "decoded frame is flat: nothing was generated"


def test_xportrait_graph_runs_over_http(comfy_server):
    prompt, ids = xportrait_graph(frames=3, steps=2, output="SaveImage")
    run = comfy_server.run(prompt)
    assert "rejected" not in run, run.get("rejected")
    types = [e["type"] for e in run["events"]]
    assert "execution_error" not in types, comfy_server.log()
    assert "progress" in types, "the sampler reported no progress on the websocket"
    images = run["history"]["outputs"][ids["output"]]["images"]
    assert len(images) == 3
    for item in images:
        data = comfy_server.view(item["filename"], item["subfolder"], item["type"])
        frame = np.asarray(Image.open(io.BytesIO(data)))
        assert frame.shape == (128, 128, 3) and frame.std() > 0.5


def test_speed_options_node_switches_levers_without_changing_the_video(comfy):
    # 20 frames: two overlapping windows per step, so residual reuse actually reuses.
    frames = {}
    for name, speed in (("default", None), ("all off", {"attention_kernels": False, "reuse_control_residuals": False}),
                        ("all on", {"attention_kernels": True, "reuse_control_residuals": True,
                                    "compile_blocks": True})):
        prompt, ids = xportrait_graph(frames=20, steps=2, size=64, speed=speed)
        result = comfy.run(prompt)
        assert result.success, result.error_text()
        frames[name] = np.stack(_frames_from_preview(comfy, result.outputs, ids["output"])).astype(int)
    assert frames["default"].shape[0] == 20
    for name in ("all off", "all on"):
        assert np.abs(frames[name] - frames["default"]).max() <= 1, name


def test_progress_moves_per_window_over_the_websocket(comfy, comfy_server):
    steps = 2
    prompt, ids = xportrait_graph(frames=20, steps=steps, size=64)
    run = comfy_server.run(prompt)
    assert "rejected" not in run, run.get("rejected")
    progress = [e["data"] for e in run["events"] if e["type"] == "progress" and e["data"].get("node") == ids["sampler"]]
    # 20 frames are two windows per step: the window ticks count steps x windows.
    assert any(p["max"] == steps * 2 for p in progress), progress
    assert len(progress) > steps, "the progress bar only moved once per sampling step"
    assert not any(e["type"] == "binary" for e in run["events"]), "previews are off unless asked for"


def test_latent_preview_shows_each_window(comfy, comfy_server):
    """With ComfyUI's latent previews on (here per prompt, as the frontend's setting sends it),
    a preview image arrives per window, not only per step."""
    steps = 3  # not the other server tests' prompt, which ComfyUI would answer from its cache
    prompt, ids = xportrait_graph(frames=20, steps=steps, size=64)
    run = comfy_server.run(prompt, extra_data={"preview_method": "latent2rgb"})
    assert "rejected" not in run, run.get("rejected")
    previews = [e for e in run["events"] if e["type"] == "binary"]
    # the sampler's own callback sends one per step; each of the 2 windows per step adds one
    assert len(previews) >= steps + steps * 2, len(previews)


def test_multigpu_node_on_one_device_changes_nothing(comfy):
    # Issue 12's first acceptance point: with one device (here the CPU) ComfyUI's MultiGPU CFG Split
    # has no extra device to clone to, and the X-Portrait result must stay bit-identical.
    runs = {}
    for name, multigpu in (("plain", None), ("multigpu", 2)):
        prompt, ids = xportrait_graph(frames=20, steps=2, size=64, multigpu=multigpu)
        result = comfy.run(prompt)
        assert result.success, result.error_text()
        runs[name] = np.stack(_frames_from_preview(comfy, result.outputs, ids["output"]))
    assert np.array_equal(runs["plain"], runs["multigpu"])
