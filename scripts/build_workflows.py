"""Writes workflows/*.json (API and UI format) from one description, with widget order taken from
the live node schemas of a real ComfyUI. Run after changing a node's inputs:

    .cache/venv/bin/python scripts/build_workflows.py
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

MODEL = "model_state-415001.th"

# node id -> (class_type, inputs); a list value [node_id, slot] is a link.
EXAMPLE = {
    "1": ("LoadImage", {"image": "source_image.png"}),
    "2": ("LoadVideo", {"file": "driving_video.mp4"}),
    "3": ("GetVideoComponents", {"video": ["2", 0]}),
    "4": ("XPortraitDetectLandmarks", {"images": ["1", 0], "face": "strongest", "official_256": True,
                                       "download_weights": True}),
    "5": ("XPortraitDetectLandmarks", {"images": ["3", 0], "face": "strongest", "official_256": True,
                                       "download_weights": True}),
    "6": ("XPortraitCropFace", {"portrait": ["1", 0], "landmarks": ["4", 0], "size": 512, "face_scale": 1.8}),
    "7": ("XPortraitEncodeDriving", {"driving_frames": ["3", 0], "driving_landmarks": ["5", 0],
                                     "source_landmarks": ["6", 2], "best_frame": -1, "landmark_smoothing": 0.0,
                                     "size": 512, "fps": ["3", 2]}),
    "8": ("XPortraitLoadBaseModel", {"model_file": MODEL, "weight_dtype": "auto"}),
    "9": ("XPortraitLoadTemporalModules", {"model_file": MODEL, "weight_dtype": "auto"}),
    "10": ("XPortraitLoadReferenceNet", {"model_file": MODEL, "weight_dtype": "auto"}),
    "11": ("XPortraitLoadMotionControlNet", {"model_file": MODEL, "weight_dtype": "auto"}),
    "12": ("XPortraitLoadLocalControlNet", {"model_file": MODEL, "weight_dtype": "auto"}),
    "13": ("XPortraitEmptyPrompt", {"model_file": MODEL}),
    "14": ("XPortraitApply", {"model": ["8", 0], "temporal_modules": ["9", 0], "reference_net": ["10", 0],
                              "vae": ["8", 1], "reference_image": ["6", 0], "reference_strength": 1.0,
                              "window_mode": "official", "window_length": 16, "window_overlap": 4,
                              "reference_mode": "shared", "window_offsets": ""}),
    "15": ("XPortraitMotionControl", {"positive": ["13", 0], "negative": ["13", 0], "motion_controlnet": ["11", 0],
                                      "local_controlnet": ["12", 0], "driving": ["7", 0], "motion_strength": 1.0,
                                      "local_strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}),
    "16": ("XPortraitStartLatent", {"vae": ["8", 1], "source_image": ["6", 0], "driving": ["7", 0]}),
    "17": ("KSampler", {"model": ["14", 0], "seed": 0, "steps": 30, "cfg": 5.0, "sampler_name": "ddim",
                        "scheduler": "ddim_uniform", "positive": ["15", 0], "negative": ["15", 1],
                        "latent_image": ["16", 0], "denoise": 1.0}),
    "18": ("VAEDecode", {"samples": ["17", 0], "vae": ["8", 1]}),
    "19": ("XPortraitPasteBack", {"portrait": ["1", 0], "frames": ["18", 0], "crop": ["6", 1], "feather": 24}),
    "20": ("SaveWEBM", {"images": ["19", 0], "filename_prefix": "xportrait/xportrait", "codec": "vp9",
                        "fps": ["7", 1], "crf": 24.0}),
}


# The official sampler exactly: the official start and sigmas into SamplerCustom (no added noise).
OFFICIAL = {**EXAMPLE,
            "16": ("XPortraitOfficialStartLatent", {"model": ["14", 0], "vae": ["8", 1], "source_image": ["6", 0],
                                                    "driving": ["7", 0], "steps": 30, "seed": 0}),
            "17": ("SamplerCustom", {"model": ["14", 0], "add_noise": False, "noise_seed": 0, "cfg": 5.0,
                                     "positive": ["15", 0], "negative": ["15", 1], "sampler": ["22", 0],
                                     "sigmas": ["21", 0], "latent_image": ["16", 0]}),
            "21": ("XPortraitOfficialSigmas", {"model": ["14", 0], "steps": 30}),
            "22": ("KSamplerSelect", {"sampler_name": "ddim"})}
WORKFLOWS = {"xportrait_example": EXAMPLE, "xportrait_official": OFFICIAL}


def api_format(graph: dict) -> dict:
    return {nid: {"class_type": ct, "inputs": dict(inputs)} for nid, (ct, inputs) in graph.items()}


def ui_format(graph: dict, object_info: dict) -> dict:
    from harness.workflow_format import WIDGET_TYPES, input_specs
    links, nodes = [], []
    outgoing: dict[tuple[str, int], list[int]] = {}
    for nid, (ct, inputs) in graph.items():
        for name, value in inputs.items():
            if isinstance(value, list):
                link_id = len(links) + 1
                spec = dict(input_specs(object_info[ct]))[name]
                links.append([link_id, int(value[0]), value[1], int(nid), name, spec[0] if isinstance(spec[0], str) else "COMBO"])
                outgoing.setdefault((value[0], value[1]), []).append(link_id)
    for order, (nid, (ct, inputs)) in enumerate(graph.items()):
        info = object_info[ct]
        node_inputs, widgets = [], []
        for slot, (name, spec) in enumerate(input_specs(info)):
            kind = spec[0] if isinstance(spec[0], str) else "COMBO"
            value = inputs.get(name)
            link = next((l for l in links if l[3] == int(nid) and l[4] == name), None)
            if kind in WIDGET_TYPES:
                widgets.append(None if link else value)
                if link:
                    node_inputs.append({"name": name, "type": kind, "link": link[0], "widget": {"name": name}})
                if len(spec) > 1 and spec[1].get("control_after_generate"):
                    widgets.append("fixed")
            else:
                node_inputs.append({"name": name, "type": kind, "link": link[0] if link else None})
        for link in links:
            if link[3] == int(nid):
                link[4] = next(i for i, entry in enumerate(node_inputs) if entry["name"] == link[4])
        outputs = [{"name": out_name, "type": out_type, "slot_index": i,
                    "links": outgoing.get((nid, i), [])}
                   for i, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"]))]
        nodes.append({"id": int(nid), "type": ct, "pos": [40 + 340 * (order % 6), 60 + 320 * (order // 6)],
                      "size": [300, 160], "flags": {}, "order": order, "mode": 0, "inputs": node_inputs,
                      "outputs": outputs, "properties": {"Node name for S&R": ct}, "widgets_values": widgets})
    return {"last_node_id": max(int(n) for n in graph), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main() -> None:
    from harness.inprocess import InProcessComfy
    comfy = InProcessComfy({}, tempfile.mkdtemp())
    from harness.workflow_format import object_info as info_of
    out = REPO / "workflows"
    for name, graph in WORKFLOWS.items():
        object_info = {ct: info_of(comfy.nodes, ct) for ct in {ct for ct, _ in graph.values()}}
        (out / f"{name}_api.json").write_text(json.dumps(api_format(graph), indent=1) + "\n")
        (out / f"{name}.json").write_text(json.dumps(ui_format(graph, object_info), indent=1) + "\n")
    print("wrote", sorted(p.name for p in out.glob("*.json")))


if __name__ == "__main__":
    main()
