"""The shipped example workflows validate against the live node schemas, and the main job runs."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from harness.paths import ASSETS, REPO
from harness.workflow_format import object_info, ui_to_api

WORKFLOWS = REPO / "workflows"


@pytest.fixture(scope="module")
def example_inputs(comfy, tmp_path_factory):
    """The example's input files and a model file under the name the workflow uses (tiny weights)."""
    import folder_paths
    from xportrait_core.checkpoint.tiny import build_random_checkpoint, save_official_th
    if not ASSETS.exists():
        pytest.skip(f"sample assets not found at {ASSETS}")
    inputs = tmp_path_factory.mktemp("input")
    for name in ("source_image.png", "driving_video.mp4", "landmarks.json"):
        shutil.copyfile(ASSETS / name, inputs / name)
    models = tmp_path_factory.mktemp("xportrait_named")
    save_official_th(models / "model_state-415001.th", build_random_checkpoint(seed=1))
    folder_paths.add_model_folder_path("xportrait", str(models))
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))
    yield inputs
    folder_paths.set_input_directory(previous)


def _validate(comfy, prompt):
    ok, error, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt(str(uuid.uuid4()), prompt, None))[:4]
    assert ok, json.dumps({"error": error, "node_errors": node_errors}, indent=1, default=str)[:4000]
    return outputs


SHIPPED = ["xportrait_example", "xportrait_official"]


@pytest.mark.parametrize("name", SHIPPED)
def test_api_workflow_validates(comfy, example_inputs, name):
    prompt = json.loads((WORKFLOWS / f"{name}_api.json").read_text())
    assert _validate(comfy, prompt), "the workflow has no output node"


@pytest.mark.parametrize("name", SHIPPED)
def test_ui_workflow_matches_the_api_workflow_and_validates(comfy, example_inputs, name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / f"{name}_api.json").read_text())
    converted = ui_to_api(ui, lambda class_type: object_info(comfy.nodes, class_type))
    assert converted == api
    _validate(comfy, converted)


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
