"""UI-format (litegraph) workflows <-> API-format prompts, using the live node schemas."""
from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # drawn by the frontend, never sent to the server


def object_info(nodes_module, class_type: str) -> dict:
    """The /object_info entry of one node class, computed in-process like ComfyUI's server does."""
    cls = nodes_module.NODE_CLASS_MAPPINGS[class_type]
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return cls.GET_NODE_INFO_V1()
    types = cls.INPUT_TYPES()
    return {"input": types, "input_order": {k: list(v) for k, v in types.items()},
            "output": list(cls.RETURN_TYPES), "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}


def input_specs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of every input in schema order: required, then optional."""
    out = []
    for section in ("required", "optional"):
        section_inputs = info["input"].get(section, {})
        order = info.get("input_order", {}).get(section, list(section_inputs))
        out += [(name, list(section_inputs[name])) for name in order]
    return out


def _kind(spec: list) -> str:
    return spec[0] if isinstance(spec[0], str) else "COMBO"


def ui_to_api(workflow: dict, info_of) -> dict:
    """Convert a UI workflow to an API prompt; `info_of(class_type)` gives the node's schema."""
    link_source = {link[0]: (str(link[1]), link[2]) for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        info = info_of(node["type"])
        promoted = node.get(PROMOTED, {})
        linked = {entry["name"]: entry.get("link") for entry in node.get("inputs", [])}
        values = list(node.get("widgets_values", []))
        inputs, position = {}, 0
        for name, spec in input_specs(info):
            if _kind(spec) in WIDGET_TYPES:
                if position >= len(values):
                    raise ValueError(f"node {node['id']} ({node['type']}): no widget value for '{name}'")
                inputs[name] = promoted.get(name, values[position])
                position += 1
                if len(spec) > 1 and spec[1].get("control_after_generate"):
                    position += 1
            if linked.get(name) is not None:
                source = link_source[linked[name]]
                inputs[name] = [source[0], source[1]]
        if position != len(values):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values for {position} widgets")
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


PROMOTED = "promoted_values"  # set by expand_subgraphs: widget values given on the subgraph node


def expand_subgraphs(workflow: dict) -> dict:
    """The workflow with every subgraph node replaced by the nodes of its definition, as the frontend
    does before it queues a prompt: inner node ids become "<subgraph node>:<inner node>", links into
    the subgraph's inputs and out of its outputs are joined through, and a widget promoted to the
    subgraph node (properties.proxyWidgets entry ["-1", input name]) passes its value to the inner
    widgets that input feeds. One level of nesting."""
    definitions = {d["id"]: d for d in workflow.get("definitions", {}).get("subgraphs", [])}
    outer = {link[0]: link for link in workflow["links"]}
    new_links: dict[int, list] = {k: list(v) for k, v in outer.items()}
    next_id = max(outer, default=0) + 1
    exits: dict[tuple, tuple] = {}   # (subgraph node id, output slot) -> (inner node id, slot)
    nodes = []
    for node in workflow["nodes"]:
        definition = definitions.get(node["type"])
        if definition is None:
            nodes.append(node)
            continue
        prefix = f"{node['id']}:"
        fed = {k: outer[entry["link"]] for k, entry in enumerate(node.get("inputs", [])) if entry.get("link")}
        proxies = node.get("properties", {}).get("proxyWidgets", [])
        shown = {name: value for (source, name), value in zip(proxies, node.get("widgets_values", []))
                 if str(source) == "-1"}
        renamed, promoted = {}, {}
        for link in definition["links"]:
            origin, target = link["origin_id"], link["target_id"]
            if target == -20:
                exits[(node["id"], link["target_slot"])] = (prefix + str(origin), link["origin_slot"])
                continue
            if origin == -10:
                if link["origin_slot"] in fed:
                    source = fed[link["origin_slot"]]
                    renamed[link["id"]] = next_id
                    new_links[next_id] = [next_id, source[1], source[2], prefix + str(target),
                                          link["target_slot"], link["type"]]
                    next_id += 1
                else:
                    name = definition["inputs"][link["origin_slot"]]["name"]
                    if name in shown:
                        promoted[(target, link["target_slot"])] = shown[name]
                continue
            renamed[link["id"]] = next_id
            new_links[next_id] = [next_id, prefix + str(origin), link["origin_slot"], prefix + str(target),
                                  link["target_slot"], link["type"]]
            next_id += 1
        for inner in definition["nodes"]:
            if inner["type"] in definitions:
                raise ValueError(f"nested subgraph in {node['id']}: not supported")
            copy = {**inner, "id": prefix + str(inner["id"]), "inputs": [], PROMOTED: {}}
            for slot, entry in enumerate(inner.get("inputs", [])):
                copy["inputs"].append({**entry, "link": renamed.get(entry.get("link"))})
                if (inner["id"], slot) in promoted:
                    copy[PROMOTED][entry["name"]] = promoted[(inner["id"], slot)]
            nodes.append(copy)
    instances = {n["id"] for n in workflow["nodes"] if n["type"] in definitions}
    links = []
    for link in new_links.values():
        if link[3] in instances:
            continue   # now joined straight to the inner nodes
        if link[1] in instances:
            link = [link[0], *exits[(link[1], link[2])], *link[3:]]
        links.append(link)
    return {**workflow, "nodes": nodes, "links": links}
