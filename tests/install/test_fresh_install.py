"""The pack installed as ComfyUI-Manager installs it, into a fresh venv beside the current ComfyUI
and beside the oldest ComfyUI it supports: its requirements.txt is enough, every node registers,
and one tiny graph runs in process and over HTTP. Each test runs once per install.

The fresh venvs hold only torch, ComfyUI's requirements and the pack's; pytest runs in the main
venv and drives their interpreters as subprocesses (a server, or tests/install/inprocess_smoke.py).
"""
from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import tomllib

import numpy as np
import pytest
from PIL import Image

from harness.fresh_installs import CURRENT, FLOOR
from harness.paths import PACK_NAME, REPO

# A cold run builds the venv inside the first test (about 3 minutes, see README).
pytestmark = pytest.mark.timeout(1800)

SMOKE = REPO / "tests" / "install" / "inprocess_smoke.py"
# The pins every venv of the project gets (scripts/env_lib.sh), e.g. {"torch": "2.11.0", ...}.
TORCH_TRIO = dict(pin.split("==") for pin in re.search(
    r'^TORCH_PINS="([^"]+)"', (REPO / "scripts" / "env_lib.sh").read_text(), re.M).group(1).split())


def declared_node_ids() -> set[str]:
    """The node ids the pack's schemas declare (`io.Schema(node_id=...)` in nodes/), read from the
    source so the list does not depend on any ComfyUI loading it."""
    ids = set()
    for path in (REPO / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "node_id" and isinstance(node.value, ast.Constant):
                ids.add(node.value.value)
    return ids


def _freeze(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _requirement_names(path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]).lower())
    return names


def _pack_lines(log: str) -> list[str]:
    """Log lines saying the pack (or anything under its folder) failed to import."""
    return [line for line in log.splitlines()
            if PACK_NAME in line and ("IMPORT FAILED" in line or "Cannot import" in line
                                                 or "Traceback" in line or "Error" in line)]


def test_declared_versions_agree_with_pyproject_setup_and_readme():
    """The floor the tests install is the one pyproject.toml and the README declare, and the
    current one is the ComfyUI the main suite runs on."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"]
    assert declared == f">={FLOOR.comfyui}"
    setup = (REPO / "scripts" / "setup_env.sh").read_text()
    assert f'COMFY_SDIST="{CURRENT.sdist}"' in setup
    readme = (REPO / "README.md").read_text()
    assert f"**ComfyUI {FLOOR.comfyui} or newer**" in readme


def test_venv_holds_torch_comfyui_and_the_pack_requirements_only(fresh):
    version = (fresh.comfy_dir / "comfyui_version.py").read_text()
    assert f'"{fresh.comfyui}"' in version, f"{fresh.sdist} does not carry ComfyUI {fresh.comfyui}"
    before, after = _freeze(fresh.dest / "before-pack.txt"), _freeze(fresh.dest / "after-pack.txt")
    changed = {name: (v, after.get(name)) for name, v in before.items() if after.get(name) != v}
    assert not changed, f"installing the pack's requirements.txt changed or removed packages: {changed}"
    for name, version in TORCH_TRIO.items():
        assert after.get(name) == version, f"{name} is {after.get(name)}, not the pinned {version}"
    missing = _requirement_names(REPO / "requirements.txt") - set(after)
    assert not missing, f"requirements.txt entries not installed: {missing}"
    for tool in ("pytest", "websocket-client"):
        assert tool not in after, f"{tool} is in the fresh venv: it must hold ComfyUI's and the pack's packages only"


def test_pack_loads_with_every_node_on_a_real_server(fresh, fresh_server):
    info = fresh_server.get_json("/object_info")
    ours = {name for name in info if name.startswith("XPortrait")}
    assert ours == declared_node_ids(), f"ComfyUI {fresh.comfyui}: registered {sorted(ours)}"
    log = fresh_server.log_path.read_text(errors="replace")
    assert not _pack_lines(log), "\n".join(_pack_lines(log))
    stats = fresh_server.get_json("/system_stats")["system"]
    assert stats.get("comfyui_version") in (None, fresh.comfyui)


def test_templates_and_blueprint_are_served(fresh, fresh_server):
    """What the pack shows besides nodes: its UI templates (workflows/*.json) under Templates and
    its subgraph blueprint in the node library, both listed by this ComfyUI's own server."""
    templates = fresh_server.get_json("/workflow_templates").get(PACK_NAME, [])
    assert sorted(templates) == sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    blueprints = [entry["name"] for entry in fresh_server.get_json("/global_subgraphs").values()
                  if entry.get("info", {}).get("node_pack") == f"custom_nodes.{PACK_NAME}"]
    assert blueprints == [p.stem for p in (REPO / "subgraphs").glob("*.json")]


def test_tiny_graph_runs_in_process(fresh, model_dir, tmp_path):
    out = subprocess.run([str(fresh.python), str(SMOKE), "--comfyui", str(fresh.comfy_dir),
                          "--models", str(model_dir), "--output", str(tmp_path)],
                         cwd=fresh.comfy_dir, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-6000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["comfyui_version"] == fresh.comfyui
    assert report["python"] == str(fresh.python) and report["torch"].split("+")[0] == TORCH_TRIO["torch"]
    assert report["pack_dirs"], "ComfyUI did not load the pack's folder"
    assert set(report["registered"]) == declared_node_ids()
    assert not _pack_lines("\n".join(report["log"])), report["log"]
    assert report["success"], report["error"]
    assert [f["shape"] for f in report["frames"]] == [[64, 64, 3]] * 2
    assert all(f["std"] > 0.5 for f in report["frames"]), "decoded frames are flat: nothing was generated"


def test_tiny_graph_runs_over_http(fresh, fresh_server):
    built = subprocess.run([str(fresh.python), str(SMOKE), "--comfyui", str(fresh.comfy_dir),
                            "--print-prompt", "SaveImage"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-4000:]
    graph = json.loads(built.stdout.strip().splitlines()[-1])
    run = fresh_server.run(graph["prompt"], timeout=600)
    assert "rejected" not in run, run.get("rejected")
    types = [e["type"] for e in run["events"]]
    assert "execution_error" not in types, fresh_server.log()
    assert "progress" in types, "the sampler reported no progress on the websocket"
    images = run["history"]["outputs"][graph["ids"]["output"]]["images"]
    assert len(images) == 2
    for item in images:
        frame = np.asarray(Image.open(io.BytesIO(fresh_server.view(item["filename"], item["subfolder"], item["type"]))))
        assert frame.shape == (64, 64, 3) and frame.std() > 0.5
