"""The example graphs the pack ships, described once in domain terms.

A graph maps a node id to a Step: the node class, its inputs and the group it sits in. An input
value that is a list ``[node_id, slot]`` is a link; anything else is a widget value. Widgets left
out take the default of the live node schema. scripts/build_workflows.py turns these into the UI
templates, the API prompts and the subgraph blueprint.
"""
from __future__ import annotations

from dataclasses import dataclass

MODEL = "model_state-415001.th"
PORTRAIT_FILE = "source_image.png"
DRIVING_FILE = "driving_video.mp4"


@dataclass(frozen=True)
class Step:
    class_type: str
    inputs: dict
    group: str
    title: str | None = None


# The groups, left to right in the order the data flows.
GROUPS = ("models", "portrait", "driving", "sampling", "output")
GROUP_TITLES = {"models": "1. Models", "portrait": "2. Portrait", "driving": "3. Driving video",
                "sampling": "4. Sampling", "output": "5. Output"}

NOTES = {
    "models": (
        "MODELS\n"
        f"Put {MODEL} (the official X-Portrait checkpoint, 12.3 GB) in ComfyUI/models/xportrait/ "
        "and press R to refresh the lists, or switch `download` on in any loader to fetch it there "
        "(12.3 GB, resumable, checked).\n"
        "Every loader here reads the same file and takes its own network from it. If you converted "
        "the checkpoint (python -m xportrait_core.convert), pick the converted file in each loader.\n"
        "weight_dtype auto = fp16 on most GPUs; fp32 reproduces the official numbers."),
    "portrait": (
        "PORTRAIT\n"
        "Load the picture to animate: any size, one clearly visible face.\n"
        "Detect Landmarks finds the face (it downloads two small detector files on the first run). "
        "Crop Face cuts the square face crop the model works on; keep size at 512.\n"
        "The preview shows the points found: check them before a long run."),
    "driving": (
        "DRIVING VIDEO\n"
        "Load the video whose head motion and expression the portrait copies.\n"
        "Encode Driving aligns every frame to the portrait's face and places the eye and mouth "
        "windows; frames without a face are filled in from their neighbours.\n"
        "The two previews show the aligned frames and the eye/mouth hints the ControlNets see. "
        "They keep a full copy of the clip: bypass them (Ctrl+B) for long videos."),
    "sampling": (
        "SAMPLING\n"
        "Apply X-Portrait gives the model the portrait; Motion Control adds the driving motion.\n"
        "KSampler: ddim + ddim_uniform, 30 steps, cfg 5 is the everyday setting, close to the "
        "official run. Change the seed for another take; fewer steps are faster and rougher."),
    "output": (
        "OUTPUT\n"
        "VAE Decode gives the face frames; Paste Back puts them into the full portrait (feather "
        "softens the seam).\n"
        "Save WEBM writes the video to ComfyUI/output/xportrait/ at the driving video's frame rate."),
}

FAST_SAMPLING_NOTE = (
    "SAMPLING (fast)\n"
    "lcm + sgm_uniform, 8 steps, cfg 1: about an eighth of the work of the 30-step run (8 steps "
    "instead of 30, and cfg 1 skips the negative pass). Use it to check framing and motion "
    "quickly; the picture is rougher. For the final video use the main example's settings.")

OFFICIAL_SAMPLING_NOTE = (
    "SAMPLING (official)\n"
    "The official sampler exactly: Official Start Latent and Official Sigmas feed SamplerCustom "
    "with add_noise off, the ddim sampler, 30 steps and cfg 5 (the official timesteps 991 to 1).\n"
    "Keep the steps of Official Start Latent and Official Sigmas equal. To repeat a recorded run, "
    "set window_offsets on Apply X-Portrait.")


def _loaders(group: str = "models") -> dict:
    loader = {"model_file": MODEL, "weight_dtype": "auto"}
    return {
        "8": Step("XPortraitLoadBaseModel", dict(loader), group),
        "9": Step("XPortraitLoadTemporalModules", dict(loader), group),
        "10": Step("XPortraitLoadReferenceNet", dict(loader), group),
        "11": Step("XPortraitLoadMotionControlNet", dict(loader), group),
        "12": Step("XPortraitLoadLocalControlNet", dict(loader), group),
        "13": Step("XPortraitEmptyPrompt", {"model_file": MODEL}, group),
    }


def _x_portrait(portrait, driving_frames, fps, steps=30, cfg=5.0, seed=0,
                previews: bool = True) -> dict:
    """The whole X-Portrait chain from a portrait image and driving frames (links given)."""
    detect = {"face": "strongest", "official_256": True, "download_weights": True}
    graph = {
        **_loaders(),
        "4": Step("XPortraitDetectLandmarks", {"images": portrait, **detect}, "portrait",
                  "Detect Landmarks (portrait)"),
        "6": Step("XPortraitCropFace", {"portrait": portrait, "landmarks": ["4", 0], "size": 512,
                                        "face_scale": 1.8}, "portrait"),
        "5": Step("XPortraitDetectLandmarks", {"images": driving_frames, **detect}, "driving",
                  "Detect Landmarks (driving)"),
        "7": Step("XPortraitEncodeDriving", {"driving_frames": driving_frames, "driving_landmarks": ["5", 0],
                                             "source_landmarks": ["6", 2], "best_frame": -1,
                                             "landmark_smoothing": 0.0, "size": 512, "fps": fps}, "driving"),
        "14": Step("XPortraitApply", {"model": ["8", 0], "temporal_modules": ["9", 0], "reference_net": ["10", 0],
                                      "vae": ["8", 1], "reference_image": ["6", 0], "reference_strength": 1.0,
                                      "window_mode": "official", "window_length": 16, "window_overlap": 4,
                                      "reference_mode": "shared", "window_offsets": ""}, "sampling"),
        "15": Step("XPortraitMotionControl", {"positive": ["13", 0], "negative": ["13", 0],
                                              "motion_controlnet": ["11", 0], "local_controlnet": ["12", 0],
                                              "driving": ["7", 0], "motion_strength": 1.0, "local_strength": 1.0,
                                              "start_percent": 0.0, "end_percent": 1.0}, "sampling"),
        "16": Step("XPortraitStartLatent", {"vae": ["8", 1], "source_image": ["6", 0], "driving": ["7", 0]},
                   "sampling"),
        "17": Step("KSampler", {"model": ["14", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "ddim",
                                "scheduler": "ddim_uniform", "positive": ["15", 0], "negative": ["15", 1],
                                "latent_image": ["16", 0], "denoise": 1.0}, "sampling"),
        "18": Step("VAEDecode", {"samples": ["17", 0], "vae": ["8", 1]}, "output"),
        "19": Step("XPortraitPasteBack", {"portrait": portrait, "frames": ["18", 0], "crop": ["6", 1],
                                          "feather": 24}, "output"),
    }
    if previews:
        graph.update({
            "23": Step("XPortraitLandmarkPreview", {"images": portrait, "landmarks": ["4", 0]}, "portrait"),
            "24": Step("PreviewImage", {"images": ["23", 0]}, "portrait", "Preview: portrait landmarks"),
            "25": Step("XPortraitDrivingPreview", {"driving": ["7", 0]}, "driving"),
            "26": Step("PreviewImage", {"images": ["25", 0]}, "driving", "Preview: aligned driving frames"),
            "27": Step("PreviewImage", {"images": ["25", 1]}, "driving", "Preview: eye/mouth hints"),
        })
    return graph


def example() -> dict:
    """The main example: raw portrait + raw driving video -> a video at the portrait's resolution."""
    graph = {
        "1": Step("LoadImage", {"image": PORTRAIT_FILE}, "portrait", "Load Image (portrait)"),
        "2": Step("LoadVideo", {"file": DRIVING_FILE}, "driving", "Load Video (driving)"),
        "3": Step("GetVideoComponents", {"video": ["2", 0]}, "driving"),
        **_x_portrait(["1", 0], ["3", 0], ["3", 2]),
        "20": Step("SaveWEBM", {"images": ["19", 0], "filename_prefix": "xportrait/xportrait", "codec": "vp9",
                                "fps": ["7", 1], "crf": 24.0}, "output"),
    }
    return graph


def fast() -> dict:
    """The quick look: LCM-style sampling in 8 steps without the negative pass."""
    graph = example()
    sampler = graph["17"]
    graph["17"] = Step(sampler.class_type, {**sampler.inputs, "steps": 8, "cfg": 1.0, "sampler_name": "lcm",
                                            "scheduler": "sgm_uniform"}, sampler.group)
    return graph


def official() -> dict:
    """The official sampler exactly: official start and sigmas into SamplerCustom, no added noise."""
    graph = example()
    graph["16"] = Step("XPortraitOfficialStartLatent", {"model": ["14", 0], "vae": ["8", 1], "source_image": ["6", 0],
                                                        "driving": ["7", 0], "steps": 30, "seed": 0}, "sampling")
    graph["21"] = Step("XPortraitOfficialSigmas", {"model": ["14", 0], "steps": 30}, "sampling")
    graph["22"] = Step("KSamplerSelect", {"sampler_name": "ddim"}, "sampling")
    graph["17"] = Step("SamplerCustom", {"model": ["14", 0], "add_noise": False, "noise_seed": 0, "cfg": 5.0,
                                         "positive": ["15", 0], "negative": ["15", 1], "sampler": ["22", 0],
                                         "sigmas": ["21", 0], "latent_image": ["16", 0]}, "sampling")
    return graph


# template name -> (graph, notes per group). The name is what the template browser shows.
TEMPLATES = {
    "xportrait_example": (example, NOTES),
    "xportrait_fast_lcm_8_steps": (fast, {**NOTES, "sampling": FAST_SAMPLING_NOTE}),
    "xportrait_official_ddim_30_steps": (official, {**NOTES, "sampling": OFFICIAL_SAMPLING_NOTE}),
}
# template name -> the API prompt scripts and tests run
API_NAMES = {"xportrait_example": "xportrait_example_api", "xportrait_fast_lcm_8_steps": "xportrait_fast_api",
             "xportrait_official_ddim_30_steps": "xportrait_official_api"}


def summary(graph: dict) -> list[str]:
    """One line per group (GROUPS order) with the files and settings that matter, for the thumbnail."""
    by_class = {step.class_type: step.inputs for step in graph.values()}
    loader = by_class["XPortraitLoadBaseModel"]
    if "KSampler" in by_class:
        k = by_class["KSampler"]
        sampling = f"KSampler {k['sampler_name']} + {k['scheduler']}, {k['steps']} steps, cfg {k['cfg']:g}"
    else:
        custom = by_class["SamplerCustom"]
        sampling = (f"official start + sigmas, {by_class['KSamplerSelect']['sampler_name']}, "
                    f"{by_class['XPortraitOfficialSigmas']['steps']} steps, cfg {custom['cfg']:g}")
    return [f"Models: {loader['model_file']}",
            f"Portrait: {by_class['LoadImage']['image']}, face crop {by_class['XPortraitCropFace']['size']} px",
            f"Driving: {by_class['LoadVideo']['file']}, aligned, eye/mouth hints",
            f"Sampling: {sampling}",
            "Output: pasted back into the portrait, saved as WEBM"]
