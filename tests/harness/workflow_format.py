"""UI-format (litegraph) workflows <-> API-format prompts, using the live node schemas."""
from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


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
        info = info_of(node["type"])
        linked = {entry["name"]: entry.get("link") for entry in node.get("inputs", [])}
        values = list(node.get("widgets_values", []))
        inputs, position = {}, 0
        for name, spec in input_specs(info):
            if _kind(spec) in WIDGET_TYPES:
                if position >= len(values):
                    raise ValueError(f"node {node['id']} ({node['type']}): no widget value for '{name}'")
                inputs[name] = values[position]
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
