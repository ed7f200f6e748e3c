"""The pack loads into a real ComfyUI and describes every node and input."""
from __future__ import annotations

import ast
import subprocess
import sys

from harness.paths import REPO

PACK_NODES = {
    "XPortraitLoadBaseModel", "XPortraitLoadTemporalModules", "XPortraitLoadReferenceNet",
    "XPortraitLoadMotionControlNet", "XPortraitLoadLocalControlNet", "XPortraitEmptyPrompt",
    "XPortraitApply", "XPortraitSpeedOptions", "XPortraitOfficialSigmas", "XPortraitOfficialStartLatent", "XPortraitMotionControl", "XPortraitDrivingFromImages", "XPortraitStartLatent",
    "XPortraitDetectLandmarks", "XPortraitLoadLandmarks", "XPortraitLandmarkPreview", "XPortraitEncodeDriving", "XPortraitDrivingPreview", "XPortraitCropFace", "XPortraitPasteBack",
}
HOST_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "nodes", "execution",
                "server", "latent_preview", "node_helpers"}


def test_core_never_imports_comfyui_statically():
    offenders = []
    for path in (REPO / "xportrait_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in HOST_MODULES]
    assert not offenders, offenders


def test_core_imports_without_comfyui_in_a_fresh_interpreter():
    code = ("import importlib, pkgutil, sys, xportrait_core\n"
            "for m in pkgutil.walk_packages(xportrait_core.__path__, 'xportrait_core.'):\n"
            "    importlib.import_module(m.name)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HOST_MODULES)!r})\n"
            "assert not bad, bad\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_pack_registers_its_nodes_in_process(comfy):
    missing = PACK_NODES - set(comfy.nodes.NODE_CLASS_MAPPINGS)
    assert not missing, f"nodes not registered: {missing}"
    assert any(path.endswith("comfyui-xportrait") for path in comfy.nodes.LOADED_MODULE_DIRS.values())


def test_object_info_describes_every_node_and_input(comfy_server):
    info = comfy_server.get_json("/object_info")
    ours = {name: spec for name, spec in info.items() if name.startswith("XPortrait")}
    assert set(ours) == PACK_NODES
    for name, spec in ours.items():
        assert spec.get("description"), f"{name} has no description"
        for section in ("required", "optional"):
            for input_name, input_spec in spec["input"].get(section, {}).items():
                options = input_spec[1] if len(input_spec) > 1 else {}
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
        tooltips = spec.get("output_tooltips") or []
        assert len(tooltips) == len(spec["output"]) and all(tooltips), f"{name} has outputs without a tooltip"
