"""The pack's subgraph blueprint: served by ComfyUI, wired to the live node schemas, and runnable
(expanded to an API prompt the way the frontend does, tiny version) through the real executor."""
from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from pathlib import Path

import numpy as np

from harness.graphs import EXAMPLE_FRAMES, tiny_version, use_landmark_file
from harness.paths import PACK_NAME, REPO
from harness.workflow_format import WIDGET_TYPES, expand_subgraphs, input_specs, object_info, ui_to_api

sys.path.insert(0, str(REPO / "scripts"))
import build_workflows  # noqa: E402
import subgraph_blueprint  # noqa: E402

BLUEPRINT = REPO / build_workflows.SUBGRAPH_DIR / f"{subgraph_blueprint.NAME}.json"
PADDED = (576, 640)   # the test portrait: the sample padded right and below, so not square


def _blueprint() -> dict:
    return json.loads(BLUEPRINT.read_text())


def test_the_pack_ships_exactly_its_blueprint():
    assert sorted(p.name for p in BLUEPRINT.parent.iterdir()) == [BLUEPRINT.name]


def test_comfyui_serves_the_blueprint(comfy_server):
    listed = comfy_server.get_json("/global_subgraphs")
    ours = {key: entry for key, entry in listed.items()
            if entry["info"]["node_pack"] == f"custom_nodes.{PACK_NAME}"}
    assert [entry["name"] for entry in ours.values()] == [subgraph_blueprint.NAME]
    (key,) = ours
    assert ours[key]["source"] == "custom_node" and "data" not in ours[key]
    entry = comfy_server.get_json(f"/global_subgraphs/{key}")
    assert "path" not in entry, "the server must not reveal file paths"
    assert json.loads(entry["data"]) == _blueprint()


def test_blueprint_is_wired_to_the_live_schemas(comfy):
    blueprint = _blueprint()
    (instance,) = blueprint["nodes"]
    (definition,) = blueprint["definitions"]["subgraphs"]
    assert instance["type"] == definition["id"]
    # Portrait and driving video in; frames (and fps) out; the beginner's widgets on the node.
    assert [(i["name"], i["type"]) for i in definition["inputs"]][:2] == [("portrait", "IMAGE"),
                                                                           ("driving_video", "VIDEO")]
    assert [(o["name"], o["type"]) for o in definition["outputs"]] == [("frames", "IMAGE"), ("fps", "FLOAT")]
    promoted = [name for source, name in instance["properties"]["proxyWidgets"]]
    assert {"steps", "seed", "cfg"} <= set(promoted) and len(promoted) == len(instance["widgets_values"])
    assert [i["name"] for i in instance["inputs"]] == [i["name"] for i in definition["inputs"]]
    nodes = {n["id"]: n for n in definition["nodes"]}
    links = {link["id"]: link for link in definition["links"]}
    values = dict(zip(promoted, instance["widgets_values"]))
    for slot, sub_input in enumerate(definition["inputs"]):
        assert sub_input["linkIds"], f"subgraph input {sub_input['name']} feeds nothing"
        for link_id in sub_input["linkIds"]:
            link = links[link_id]
            assert (link["origin_id"], link["origin_slot"]) == (-10, slot)
            target = nodes[link["target_id"]]
            entry = target["inputs"][link["target_slot"]]
            assert entry["link"] == link_id and entry["type"] == sub_input["type"] == link["type"]
            if sub_input["name"] in values:   # a promoted widget: the inner widget shows the same value
                info = object_info(comfy.nodes, target["type"])
                names = [n for n, spec in input_specs(info) if (spec[0] if isinstance(spec[0], str) else "COMBO")
                         in WIDGET_TYPES]
                unlinked = {**target, "inputs": [{**e, "link": None} for e in target["inputs"]]}
                shown = ui_to_api({"nodes": [unlinked], "links": []}, lambda _: info)[str(target["id"])]["inputs"]
                assert entry["name"] in names and shown[entry["name"]] == values[sub_input["name"]]
    for link in links.values():   # every inner link joins an output to an input of the same type
        if link["origin_id"] >= 0:
            info = object_info(comfy.nodes, nodes[link["origin_id"]]["type"])
            assert info["output"][link["origin_slot"]] == link["type"]
        if link["target_id"] >= 0:
            assert nodes[link["target_id"]]["inputs"][link["target_slot"]]["link"] == link["id"]


def test_inside_of_the_blueprint_reads_left_to_right():
    """Opened, the subgraph shows its nodes in the example's groups, none overlapping, wires left to right."""
    (definition,) = _blueprint()["definitions"]["subgraphs"]
    rects = {n["id"]: (n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in definition["nodes"]}
    boxes = [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
              g["bounding"][1] + g["bounding"][3]) for g in definition["groups"]]
    ids = sorted(rects)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            ra, rb = rects[a], rects[b]
            assert not (ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]), f"{a} overlaps {b}"
    for nid, r in rects.items():
        holders = [b for b in boxes if b[0] <= r[0] and b[1] <= r[1] and r[2] <= b[2] and r[3] <= b[3]]
        assert len(holders) == 1, f"inner node {nid} is in {len(holders)} groups"
    for link in definition["links"]:
        if link["origin_id"] >= 0 and link["target_id"] >= 0:
            assert rects[link["origin_id"]][2] < rects[link["target_id"]][0]
    assert definition["inputNode"]["bounding"][0] + definition["inputNode"]["bounding"][2] < min(boxes)[0]
    assert definition["outputNode"]["bounding"][0] > max(b[2] for b in boxes)


def _padded_portrait(inputs: Path) -> str:
    import cv2
    sample = cv2.imread(str(inputs / "source_image.png"))
    padded = np.full((*PADDED, 3), 128, np.uint8)
    padded[:sample.shape[0], :sample.shape[1]] = sample   # landmark coordinates stay valid
    cv2.imwrite(str(inputs / "portrait_padded.png"), padded)
    return "portrait_padded.png"


def _workflow_using_the_blueprint(portrait: str, steps: int, seed: int) -> dict:
    """What a user builds: Load Image and Load Video into the blueprint's node, its frames saved."""
    blueprint = _blueprint()
    instance = copy.deepcopy(blueprint["nodes"][0])
    promoted = [name for _, name in instance["properties"]["proxyWidgets"]]
    instance["widgets_values"][promoted.index("steps")] = steps
    instance["widgets_values"][promoted.index("seed")] = seed
    instance["inputs"][0]["link"], instance["inputs"][1]["link"] = 1, 2
    instance["outputs"][0]["links"], instance["outputs"][1]["links"] = [3], [4]
    nodes = [
        instance,
        {"id": 2, "type": "LoadImage", "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
         "widgets_values": [portrait]},
        {"id": 3, "type": "LoadVideo", "inputs": [], "outputs": [{"name": "VIDEO", "type": "VIDEO", "links": [2]}],
         "widgets_values": ["driving_video.mp4"]},
        {"id": 4, "type": "SaveWEBM",
         "inputs": [{"name": "images", "type": "IMAGE", "link": 3},
                    {"name": "fps", "type": "FLOAT", "link": 4, "widget": {"name": "fps"}}],
         "outputs": [], "widgets_values": ["xportrait/blueprint", "vp9", 24.0, 32.0]},
    ]
    links = [[1, 2, 0, 1, 0, "IMAGE"], [2, 3, 0, 1, 1, "VIDEO"], [3, 1, 0, 4, 0, "IMAGE"], [4, 1, 1, 4, 1, "FLOAT"]]
    return {"nodes": nodes, "links": links, "definitions": blueprint["definitions"]}


def test_blueprint_runs_and_gives_frames_at_the_portraits_resolution(comfy, example_inputs):
    import av
    import folder_paths
    workflow = _workflow_using_the_blueprint(_padded_portrait(example_inputs), steps=3, seed=11)
    prompt = ui_to_api(expand_subgraphs(workflow), lambda class_type: object_info(comfy.nodes, class_type))
    ok, error, _, node_errors = asyncio.run(comfy.execution.validate_prompt(str(uuid.uuid4()), prompt, None))[:4]
    assert ok, json.dumps({"error": error, "node_errors": node_errors}, default=str)[:4000]
    # The values set on the blueprint's node reach the nodes inside it.
    (sampler,) = [n for n in prompt.values() if n["class_type"] == "KSampler"]
    assert (sampler["inputs"]["steps"], sampler["inputs"]["seed"]) == (3, 11)
    instance = _blueprint()["nodes"][0]
    promoted = [name for _, name in instance["properties"]["proxyWidgets"]]
    assert sampler["inputs"]["cfg"] == instance["widgets_values"][promoted.index("cfg")]
    assert len({n["inputs"]["model_file"] for n in prompt.values() if "model_file" in n["inputs"]}) == 1
    prompt = tiny_version(use_landmark_file(prompt), size=128, steps=2)
    result = comfy.run(prompt)
    assert result.success, result.error_text()
    (saved,) = result.outputs["4"]["images"]
    path = Path(folder_paths.get_output_directory()) / saved["subfolder"] / saved["filename"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        rate = float(stream.average_rate)
    assert len(frames) == EXAMPLE_FRAMES
    assert frames[0].shape == (*PADDED, 3), "the frames are not at the portrait's resolution"
    assert abs(rate - 12000 / 1001) < 0.05, "the driving video's fps did not come out of the blueprint"
