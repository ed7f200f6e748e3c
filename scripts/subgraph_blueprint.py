"""The pack's subgraph blueprint: the whole X-Portrait chain as one node for beginners.

ComfyUI lists every `<custom node>/subgraphs/*.json` at GET /global_subgraphs (the file name is the
node's name) and the frontend offers it in the node library. The file is a UI workflow holding one
instance node of a subgraph whose definition sits in definitions.subgraphs. Inside: the pack's own
nodes, the same chain as the example workflow without its previews. Outside: a portrait and a
driving video in; the animated frames at the portrait's resolution and the video's fps out; the
model file, steps, cfg and seed as the node's widgets.
"""
from __future__ import annotations

import uuid

from workflow_graphs import GROUP_TITLES, GROUPS, MODEL, Step, _x_portrait
from workflow_layout import GROUP_PAD, collect_links, execution_order, place, ui_groups, ui_node

NAME = "X-Portrait Animate Portrait"
CATEGORY = "X-Portrait"
DESCRIPTION = ("Animates a portrait with the head motion and facial expression of a driving video "
               "(X-Portrait). Portrait and driving video in; the frames at the portrait's resolution and "
               f"the video's fps out. Needs {MODEL} in ComfyUI/models/xportrait/. Open the node to see "
               "or change every step.")
INPUT_NODE, OUTPUT_NODE = "-10", "-20"
_NAMESPACE = uuid.UUID("6f1c1d52-54a8-4a39-9c8e-1f6d3c7f0a21")  # fixed, so rebuilding gives the same ids

LOADERS = ("8", "9", "10", "11", "12", "13")
# (name, type, value of a widget input or None for a socket, the inner (node, input) it feeds)
INPUTS = (
    ("portrait", "IMAGE", None, ()),
    ("driving_video", "VIDEO", None, (("3", "video"),)),
    ("model_file", "COMBO", MODEL, tuple((nid, "model_file") for nid in LOADERS)),
    ("steps", "INT", 30, (("17", "steps"),)),
    ("cfg", "FLOAT", 5.0, (("17", "cfg"),)),
    ("seed", "INT", 0, (("17", "seed"),)),
)
OUTPUTS = (("frames", "IMAGE", ("19", 0)), ("fps", "FLOAT", ("7", 1)))


def inner_graph() -> dict:
    """The nodes inside the subgraph; ["-10", k] is the subgraph's k-th input."""
    graph = {"3": Step("GetVideoComponents", {"video": [INPUT_NODE, 1]}, "driving")}
    graph.update(_x_portrait([INPUT_NODE, 0], ["3", 0], ["3", 2], previews=False))
    for k, (name, _, _, targets) in enumerate(INPUTS):
        for nid, input_name in targets:
            step = graph[nid]
            graph[nid] = Step(step.class_type, {**step.inputs, input_name: [INPUT_NODE, k]}, step.group, step.title)
    return graph


def _uid(*parts) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def blueprint(infos: dict) -> dict:
    graph = inner_graph()
    origin = (0, 0)
    placed = place(graph, infos, GROUPS, None, origin)
    input_types = {(INPUT_NODE, k): t for k, (_, t, _, _) in enumerate(INPUTS)}
    links = collect_links(graph, infos, input_types)
    shown = {}   # node id -> {widget: value} for widgets fed by the subgraph's inputs
    for name, _, value, targets in INPUTS:
        for nid, input_name in targets:
            if value is not None:
                shown.setdefault(nid, {})[input_name] = value
    order = {nid: i for i, nid in enumerate(execution_order(graph))}
    nodes = [ui_node(nid, step, infos[step.class_type], placed, links, order[nid], shown.get(nid))
             for nid, step in graph.items()]
    link_dicts = [{"id": k.id, "origin_id": int(k.origin), "origin_slot": k.slot, "target_id": int(k.target),
                   "target_slot": k.target_slot, "type": k.type} for k in links]
    for j, (_, out_type, (nid, slot)) in enumerate(OUTPUTS):
        link_dicts.append({"id": len(link_dicts) + 1, "origin_id": int(nid), "origin_slot": slot,
                           "target_id": int(OUTPUT_NODE), "target_slot": j, "type": out_type})
    right = max(box[0] + box[2] for box in placed.groups.values())
    top = origin[1] + 60
    sub_inputs = [{"id": _uid("input", name), "name": name, "type": kind, "localized_name": name,
                   "linkIds": [k.id for k in links if k.origin == INPUT_NODE and k.slot == i],
                   "pos": [-180, top + 20 + 20 * i]}
                  for i, (name, kind, _, _) in enumerate(INPUTS)]
    sub_outputs = [{"id": _uid("output", name), "name": name, "type": kind, "localized_name": name,
                    "linkIds": [d["id"] for d in link_dicts if d["target_id"] == int(OUTPUT_NODE)
                                and d["target_slot"] == j],
                    "pos": [right + 120, top + 20 + 20 * j]}
                   for j, (name, kind, _) in enumerate(OUTPUTS)]
    definition = {
        "id": _uid("subgraph", NAME), "version": 1,
        "state": {"lastGroupId": len(placed.groups), "lastNodeId": max(int(n) for n in graph),
                  "lastLinkId": len(link_dicts), "lastRerouteId": 0},
        "revision": 0, "config": {}, "name": NAME,
        "inputNode": {"id": int(INPUT_NODE), "bounding": [-200 - GROUP_PAD, top, 140, 40 + 20 * len(INPUTS)]},
        "outputNode": {"id": int(OUTPUT_NODE), "bounding": [right + 100, top, 120, 40 + 20 * len(OUTPUTS)]},
        "inputs": sub_inputs, "outputs": sub_outputs, "widgets": [],
        "nodes": nodes, "groups": ui_groups(placed, GROUP_TITLES), "links": link_dicts,
        "extra": {}, "category": CATEGORY, "description": DESCRIPTION,
    }
    widget_inputs = [(name, kind, value) for name, kind, value, _ in INPUTS if value is not None]
    instance = {
        "id": 1, "type": definition["id"], "pos": [0, 0],
        "size": [360, 26 * max(len(INPUTS) - len(widget_inputs), len(OUTPUTS)) + 32 * len(widget_inputs) + 20],
        "flags": {}, "order": 0, "mode": 0,
        "inputs": [{"name": name, "type": kind, "link": None, **({"widget": {"name": name}} if value is not None
                                                                   else {})}
                   for name, kind, value, _ in INPUTS],
        "outputs": [{"name": name, "type": kind, "links": []} for name, kind, _ in OUTPUTS],
        "properties": {"proxyWidgets": [["-1", name] for name, _, _ in widget_inputs]},
        "widgets_values": [value for _, _, value in widget_inputs],
        "title": NAME,
    }
    return {"revision": 0, "last_node_id": 1, "last_link_id": 0, "nodes": [instance], "links": [],
            "version": 0.4, "definitions": {"subgraphs": [definition]}, "extra": {}}

