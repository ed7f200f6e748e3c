"""Graph descriptions (scripts/workflow_graphs.py) -> UI-format (litegraph) nodes, links and groups,
laid out in data-flow order, and -> API prompts. Widget order and defaults come from the live node
schemas (/object_info entries), so the files follow the nodes when their inputs change.

Layout: each group is a block of columns; a node's column is its depth among the nodes of its own
group, so every wire runs left to right. Groups sit side by side in the order of GROUPS, with the
group's Note on top. Node sizes are estimated the way the frontend sizes a node (title width,
one row per socket, one per widget, room for image previews), rounded up generously.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.workflow_format import WIDGET_TYPES, input_specs  # noqa: E402

NODE_TITLE = 30          # litegraph draws the title bar above node.pos
SOCKET_ROW = 26          # one input/output row (frontend: 20-24)
WIDGET_ROW = 32          # one widget row (frontend: 24-28)
MEDIA_AREA = 300         # image/video preview inside Load Image, Load Video and preview nodes
MEDIA_NODES = {"LoadImage", "LoadVideo", "PreviewImage", "SaveWEBM", "SaveImage", "SaveVideo"}
MIN_WIDTH = 320
CHAR_WIDTH = 9           # title characters at the frontend's 14 px title font, rounded up
GAP_X, GAP_Y = 70, 50
MAX_COLUMN = 800         # nodes of one depth stack up to this height, then start a new column
GROUP_PAD, GROUP_TITLE, GROUP_GAP = 24, 46, 90
NOTE_CHAR, NOTE_LINE = 8, 19
GROUP_COLORS = {"models": "#3f789e", "portrait": "#8a5a44", "driving": "#8a7a44", "sampling": "#4a7a4a",
                "output": "#6a4a8a"}


def kind(spec: list) -> str:
    return spec[0] if isinstance(spec[0], str) else "COMBO"


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def widget_values(step, info: dict) -> dict:
    """Every widget's value: the described one, else the schema default (first option of a list)."""
    values = {}
    for name, spec in input_specs(info):
        if kind(spec) not in WIDGET_TYPES:
            continue
        options = spec[1] if len(spec) > 1 else {}
        if name in step.inputs and not is_link(step.inputs[name]):
            values[name] = step.inputs[name]
        elif "default" in options:
            values[name] = options["default"]
        elif isinstance(spec[0], list) and spec[0]:
            values[name] = spec[0][0]
        elif options.get("options"):
            values[name] = options["options"][0]
        elif name in step.inputs:   # linked widget without a default
            values[name] = None
        else:
            raise ValueError(f"{step.class_type}: no value and no default for widget '{name}'")
    return values


def api_prompt(graph: dict, infos: dict) -> dict:
    """The API prompt of a graph: links as [id, slot], every widget filled in."""
    prompt = {}
    for nid, step in graph.items():
        inputs = {}
        values = widget_values(step, infos[step.class_type])
        for name, _ in input_specs(infos[step.class_type]):
            if is_link(step.inputs.get(name)):
                inputs[name] = list(step.inputs[name])
            elif name in values:
                inputs[name] = values[name]
        prompt[nid] = {"class_type": step.class_type, "inputs": inputs}
    return prompt


def title_of(step, info: dict) -> str:
    return step.title or info.get("display_name") or step.class_type


def estimate_size(step, info: dict) -> list[int]:
    specs = input_specs(info)
    sockets = [n for n, s in specs if kind(s) not in WIDGET_TYPES]
    widgets = 0
    for _, spec in specs:
        if kind(spec) in WIDGET_TYPES:
            options = spec[1] if len(spec) > 1 else {}
            widgets += 1 + bool(options.get("control_after_generate")) + bool(options.get("image_upload")
                                                                            or options.get("video_upload"))
            if options.get("multiline"):
                widgets += 3
    rows = max(len(sockets), len(info["output"]), 1)
    longest_label = max([len(n) for n, _ in specs] + [len(n) for n in info["output_name"]] + [0])
    width = max(MIN_WIDTH, CHAR_WIDTH * len(title_of(step, info)) + 80, 2 * CHAR_WIDTH * longest_label + 60)
    height = SOCKET_ROW * rows + WIDGET_ROW * widgets + 20
    if step.class_type in MEDIA_NODES:
        height += MEDIA_AREA
    return [int(width), int(height)]


def note_height(text: str, width: int) -> int:
    per_line = max(20, (width - 30) // NOTE_CHAR)
    lines = sum(max(1, -(-len(line) // per_line)) for line in text.split("\n"))
    return NOTE_LINE * lines + 40


@dataclass
class Placed:
    positions: dict      # node id -> [x, y] (top-left of the body; the title bar sits above)
    sizes: dict          # node id -> [w, h]
    groups: dict         # group -> [x, y, w, h]
    notes: dict          # group -> ([x, y], [w, h])


def depths(graph: dict, group: str) -> dict:
    """Longest path from the group's own sources, counting only links inside the group."""
    members = [nid for nid, step in graph.items() if step.group == group]
    depth: dict = {}

    def visit(nid, trail=()):
        if nid in depth:
            return depth[nid]
        if nid in trail:
            raise ValueError(f"cycle through node {nid}")
        sources = [v[0] for v in graph[nid].inputs.values() if is_link(v) and v[0] in graph
                   and graph[v[0]].group == group]
        depth[nid] = 1 + max((visit(s, trail + (nid,)) for s in sources), default=-1)
        return depth[nid]

    for nid in members:
        visit(nid)
    return depth


def place(graph: dict, infos: dict, groups: tuple, notes: dict | None, origin=(0, 0)) -> Placed:
    placed = Placed({}, {}, {}, {})
    for nid, step in graph.items():
        placed.sizes[nid] = estimate_size(step, infos[step.class_type])
    x = origin[0]
    for group in groups:
        depth = depths(graph, group)
        if not depth:
            continue
        columns = []
        for d in range(max(depth.values()) + 1):   # a tall column of same-depth nodes wraps into two
            column, height = [], 0
            for nid in (n for n in graph if depth.get(n) == d):
                if column and height + placed.sizes[nid][1] > MAX_COLUMN:
                    columns.append(column)
                    column, height = [], 0
                column.append(nid)
                height += placed.sizes[nid][1] + NODE_TITLE + GAP_Y
            columns.append(column)
        widths = [max(placed.sizes[nid][0] for nid in column) for column in columns]
        inner = sum(widths) + GAP_X * (len(widths) - 1)
        top = origin[1] + GROUP_TITLE + NODE_TITLE
        if notes and group in notes:
            size = [max(inner, 360), note_height(notes[group], max(inner, 360))]
            placed.notes[group] = ([x + GROUP_PAD, top], size)
            inner = max(inner, size[0])
            top += size[1] + GAP_Y + NODE_TITLE
        bottom = top
        column_x = x + GROUP_PAD
        for column, width in zip(columns, widths):
            y = top
            for nid in column:
                placed.positions[nid] = [column_x, y]
                y += placed.sizes[nid][1] + GAP_Y + NODE_TITLE
            bottom = max(bottom, y - GAP_Y - NODE_TITLE)
            column_x += width + GAP_X
        placed.groups[group] = [x, origin[1], inner + 2 * GROUP_PAD, bottom - origin[1] + GROUP_PAD]
        x += inner + 2 * GROUP_PAD + GROUP_GAP
    return placed


@dataclass
class Link:
    id: int
    origin: str
    slot: int
    target: str
    target_slot: int
    type: str


def node_inputs(info: dict) -> list[tuple[str, str, bool]]:
    """(name, type, is_widget) in the frontend's order: sockets first, then widgets, schema order within."""
    specs = [(n, kind(s), kind(s) in WIDGET_TYPES) for n, s in input_specs(info)]
    return [s for s in specs if not s[2]] + [s for s in specs if s[2]]


def collect_links(graph: dict, infos: dict, external_types: dict | None = None, first_id: int = 1) -> list[Link]:
    """Every link of the graph; a source id not in the graph (a subgraph's input node) takes its type
    from external_types[(id, slot)]."""
    links = []
    for nid, step in graph.items():
        order = [name for name, _, _ in node_inputs(infos[step.class_type])]
        for name in order:
            value = step.inputs.get(name)
            if not is_link(value):
                continue
            source, slot = value
            if source in graph:
                link_type = infos[graph[source].class_type]["output"][slot]
            else:
                link_type = (external_types or {})[(source, slot)]
            links.append(Link(first_id + len(links), source, slot, nid, order.index(name), link_type))
    return links


def ui_node(nid: str, step, info: dict, placed: Placed, links: list[Link], order: int,
            linked_values: dict | None = None) -> dict:
    """One node; linked_values gives the value a widget fed by a link shows (a subgraph's promoted widget)."""
    values = {**widget_values(step, info), **(linked_values or {})}
    incoming = {link.target_slot: link.id for link in links if link.target == nid}
    inputs = []
    for slot, (name, input_type, is_widget) in enumerate(node_inputs(info)):
        entry = {"name": name, "type": input_type, "link": incoming.get(slot)}
        if is_widget:
            entry["widget"] = {"name": name}
        inputs.append(entry)
    widgets = []
    for name, spec in input_specs(info):
        if kind(spec) in WIDGET_TYPES:
            widgets.append(values[name])
            if len(spec) > 1 and spec[1].get("control_after_generate"):
                widgets.append("fixed")
    outputs = [{"name": out_name, "type": out_type, "slot_index": i,
                "links": [link.id for link in links if link.origin == nid and link.slot == i]}
               for i, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"]))]
    node = {"id": int(nid), "type": step.class_type, "pos": placed.positions[nid], "size": placed.sizes[nid],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": step.class_type}, "widgets_values": widgets}
    if step.title:
        node["title"] = step.title
    return node


def execution_order(graph: dict) -> list[str]:
    done: list[str] = []

    def visit(nid):
        if nid in done:
            return
        for value in graph[nid].inputs.values():
            if is_link(value) and value[0] in graph:
                visit(value[0])
        done.append(nid)

    for nid in graph:
        visit(nid)
    return done


def note_nodes(placed: Placed, notes: dict, first_id: int, first_order: int) -> list[dict]:
    nodes = []
    for i, (group, (pos, size)) in enumerate(placed.notes.items()):
        nodes.append({"id": first_id + i, "type": "Note", "pos": pos, "size": size, "flags": {},
                      "order": first_order + i, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                      "widgets_values": [notes[group]], "color": "#432", "bgcolor": "#653"})
    return nodes


def ui_groups(placed: Placed, titles: dict) -> list[dict]:
    return [{"id": i + 1, "title": titles[group], "bounding": box, "color": GROUP_COLORS.get(group, "#3f789e"),
             "font_size": 24, "flags": {}} for i, (group, box) in enumerate(placed.groups.items())]


def ui_workflow(graph: dict, infos: dict, groups: tuple, titles: dict, notes: dict) -> dict:
    """A UI-format workflow: the graph's nodes and links, one Note per group, the groups."""
    placed = place(graph, infos, groups, notes)
    links = collect_links(graph, infos)
    order = {nid: i for i, nid in enumerate(execution_order(graph))}
    nodes = [ui_node(nid, step, infos[step.class_type], placed, links, order[nid]) for nid, step in graph.items()]
    first_note = 100 * (1 + max(int(nid) for nid in graph) // 100)
    nodes += note_nodes(placed, notes, first_note, len(graph))
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": [[k.id, int(k.origin), k.slot, int(k.target), k.target_slot, k.type] for k in links],
            "groups": ui_groups(placed, titles), "config": {},
            "extra": {"ds": {"scale": 0.7, "offset": [40, 40]}}, "version": 0.4}
