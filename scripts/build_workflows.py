"""Writes the pack's workflow files from the graph descriptions in scripts/workflow_graphs.py, with
widget order and defaults taken from the live node schemas of a real ComfyUI. Run after changing a
node's inputs (tests/comfy/test_workflows.py fails while the files are out of date):

    .cache/venv/bin/python scripts/build_workflows.py

- workflows/<name>.json + <name>.jpg: the UI templates ComfyUI's template browser lists for the
  pack, each with its thumbnail (ComfyUI lists a custom node's top-level workflows/*.json).
- workflows/api/<name>_api.json: the same graphs as API prompts, for scripts/run_example.py and
  tests; a subfolder, so ComfyUI does not list them as templates (an API prompt opens as an empty
  canvas).
- subgraphs/<name>.json: the subgraph blueprint ComfyUI serves at /global_subgraphs.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import subgraph_blueprint  # noqa: E402
from workflow_graphs import API_NAMES, GROUP_TITLES, GROUPS, TEMPLATES, summary  # noqa: E402
from workflow_layout import api_prompt, ui_workflow  # noqa: E402
from workflow_thumbnail import thumbnail_jpeg  # noqa: E402

TEMPLATE_DIR = "workflows"
API_DIR = "workflows/api"    # inside TEMPLATE_DIR, but not top-level: not listed as a template
SUBGRAPH_DIR = "subgraphs"
CAPTIONS = {"xportrait_example": "X-Portrait: animate a portrait",
            "xportrait_fast_lcm_8_steps": "X-Portrait: fast look (lcm, 8 steps)",
            "xportrait_official_ddim_30_steps": "X-Portrait: official sampler (ddim, 30 steps)"}


def _json(data: dict) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()


def build(info_of) -> dict[str, bytes]:
    """Every generated file (path relative to the repository -> contents); info_of(class_type) is the
    node's /object_info entry."""
    files = {}
    for name, (make_graph, notes) in TEMPLATES.items():
        graph = make_graph()
        infos = {step.class_type: info_of(step.class_type) for step in graph.values()}
        workflow = ui_workflow(graph, infos, GROUPS, GROUP_TITLES, notes)
        files[f"{TEMPLATE_DIR}/{name}.json"] = _json(workflow)
        files[f"{TEMPLATE_DIR}/{name}.jpg"] = thumbnail_jpeg(workflow, CAPTIONS[name], summary(graph))
        files[f"{API_DIR}/{API_NAMES[name]}.json"] = _json(api_prompt(graph, infos))
    inner = subgraph_blueprint.inner_graph()
    infos = {step.class_type: info_of(step.class_type) for step in inner.values()}
    files[f"{SUBGRAPH_DIR}/{subgraph_blueprint.NAME}.json"] = _json(subgraph_blueprint.blueprint(infos))
    return files


def stale_files(files: dict[str, bytes]) -> list[Path]:
    """The files in the generated folders that build() no longer writes. Only each folder's own
    files are looked at, never its subfolders: workflows/api/ is judged as API_DIR, not as part of
    TEMPLATE_DIR, and a thumbnail (<name>.jpg) is kept because build() writes it too."""
    stale = []
    for folder in (TEMPLATE_DIR, API_DIR, SUBGRAPH_DIR):
        for path in sorted((REPO / folder).glob("*")):
            if path.is_file() and path.relative_to(REPO).as_posix() not in files:
                stale.append(path)
    return stale


def remove_stale(files: dict[str, bytes]) -> None:
    for path in stale_files(files):
        print("removing stale", path.relative_to(REPO).as_posix())
        path.unlink()


def main() -> None:
    from harness.inprocess import InProcessComfy
    from harness.workflow_format import object_info
    comfy = InProcessComfy({}, tempfile.mkdtemp())
    files = build(lambda class_type: object_info(comfy.nodes, class_type))
    remove_stale(files)
    for path, data in files.items():
        target = REPO / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    print("wrote", "\n      ".join(sorted(files)))


if __name__ == "__main__":
    main()
