"""API-format prompts of the pack's graphs, built with ComfyUI's own GraphBuilder."""
from __future__ import annotations

from .tiny_models import PARITY_MODEL


def xportrait_graph(frames: int = 3, steps: int = 2, size: int = 128, seed: int = 7, window_mode: str = "official",
                    cfg: float = 5.0, model_file: str = PARITY_MODEL, output: str = "PreviewImage",
                    strengths: tuple[float, float, float] = (1.0, 1.0, 1.0), weight_dtype: str = "fp32",
                    speed: dict | None = None, official: bool = False, multigpu: int | None = None):
    """Portrait + driving images -> X-Portrait nodes -> KSampler(ddim, ddim_uniform) -> VAE Decode -> images."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="xp")
    base = g.node("XPortraitLoadBaseModel", model_file=model_file, weight_dtype=weight_dtype)
    temporal = g.node("XPortraitLoadTemporalModules", model_file=model_file, weight_dtype=weight_dtype)
    reference = g.node("XPortraitLoadReferenceNet", model_file=model_file, weight_dtype=weight_dtype)
    motion = g.node("XPortraitLoadMotionControlNet", model_file=model_file, weight_dtype=weight_dtype)
    local = g.node("XPortraitLoadLocalControlNet", model_file=model_file, weight_dtype=weight_dtype)
    prompt = g.node("XPortraitEmptyPrompt", model_file=model_file)
    portrait = g.node("EmptyImage", width=size, height=size, batch_size=1, color=0xC08060)
    driving_frames = g.node("EmptyImage", width=size, height=size, batch_size=frames, color=0x806040)
    local_hints = g.node("EmptyImage", width=size, height=size, batch_size=frames, color=0x000000)
    driving = g.node("XPortraitDrivingFromImages", aligned_frames=driving_frames.out(0), local_hints=local_hints.out(0))
    levers = {} if speed is None else {"speed_options": g.node("XPortraitSpeedOptions", **speed).out(0)}
    applied = g.node("XPortraitApply", model=base.out(0), temporal_modules=temporal.out(0),
                     reference_net=reference.out(0), vae=base.out(1), reference_image=portrait.out(0),
                     reference_strength=strengths[0], window_mode=window_mode, window_length=16, window_overlap=4,
                     **levers)
    apply_node = applied
    if multigpu is not None:  # ComfyUI's MultiGPU CFG Split between the patch and the sampler
        applied = g.node("MultiGPU_WorkUnits", model=applied.out(0), max_gpus=multigpu)
    control = g.node("XPortraitMotionControl", positive=prompt.out(0), negative=prompt.out(0),
                     motion_controlnet=motion.out(0), local_controlnet=local.out(0), driving=driving.out(0),
                     motion_strength=strengths[1], local_strength=strengths[2], start_percent=0.0, end_percent=1.0)
    if official:  # the official sampler: SamplerCustom on the official sigmas and start, no added noise
        start = g.node("XPortraitOfficialStartLatent", model=applied.out(0), vae=base.out(1),
                       source_image=portrait.out(0), driving=driving.out(0), steps=steps, seed=seed)
        sigmas = g.node("XPortraitOfficialSigmas", model=applied.out(0), steps=steps)
        ddim = g.node("KSamplerSelect", sampler_name="ddim")
        sampler = g.node("SamplerCustom", model=applied.out(0), add_noise=False, noise_seed=seed, cfg=cfg,
                         positive=control.out(0), negative=control.out(1), sampler=ddim.out(0),
                         sigmas=sigmas.out(0), latent_image=start.out(0))
    else:
        start = g.node("XPortraitStartLatent", vae=base.out(1), source_image=portrait.out(0), driving=driving.out(0))
        sampler = g.node("KSampler", model=applied.out(0), seed=seed, steps=steps, cfg=cfg, sampler_name="ddim",
                         scheduler="ddim_uniform", positive=control.out(0), negative=control.out(1),
                         latent_image=start.out(0), denoise=1.0)
    decoded = g.node("VAEDecode", samples=sampler.out(0), vae=base.out(1))
    out = g.node(output, images=decoded.out(0)) if output == "PreviewImage" else \
        g.node(output, images=decoded.out(0), filename_prefix="xportrait_test")
    return g.finalize(), {"sampler": sampler.id, "output": out.id, "base": base.id, "apply": apply_node.id}


# --- the shipped workflows' prompts, made runnable offline and small --------------------------------

PREVIEW_NODES = {"PreviewImage", "XPortraitLandmarkPreview", "XPortraitDrivingPreview"}
EXAMPLE_FRAMES = 4  # driving frames of the short example clip the tests run


def use_landmark_file(prompt: dict, landmarks_file: str = "landmarks.json") -> dict:
    """Swap each Detect Landmarks node for Load X-Portrait Landmarks (same output) reading the JSON in
    ComfyUI's input folder: offline there are no detector weights to fetch. The portrait's entry is
    the one whose images come from Load Image."""
    for node in prompt.values():
        if node["class_type"] == "XPortraitDetectLandmarks":
            images = node["inputs"]["images"]
            entry = "source" if prompt[images[0]]["class_type"] == "LoadImage" else "driving"
            node["class_type"] = "XPortraitLoadLandmarks"
            node["inputs"] = {"images": images, "landmarks_file": landmarks_file, "entry": entry}
    return prompt


def tiny_version(prompt: dict, size: int = 128, steps: int = 4, model_file: str | None = None) -> dict:
    """The same graph at a small working size and few steps (and another model file if given)."""
    for node in prompt.values():
        inputs = node["inputs"]
        if model_file and "model_file" in inputs:
            inputs["model_file"] = model_file
        if node["class_type"] in ("XPortraitCropFace", "XPortraitEncodeDriving"):
            inputs["size"] = size
        if "steps" in inputs and not isinstance(inputs["steps"], list):
            inputs["steps"] = steps
    return prompt


def without_previews(prompt: dict) -> dict:
    """The prompt without its preview nodes (nothing else reads them)."""
    return {nid: node for nid, node in prompt.items() if node["class_type"] not in PREVIEW_NODES}


def write_short_example_inputs(source_assets, folder, frames: int) -> None:
    """The sample portrait, the first `frames` frames of the sample driving video (same name, same
    rate) and the landmarks file cut to match, in `folder`."""
    import json
    import shutil
    from fractions import Fraction
    from pathlib import Path

    import av
    folder = Path(folder)
    shutil.copyfile(Path(source_assets) / "source_image.png", folder / "source_image.png")
    with av.open(str(Path(source_assets) / "driving_video.mp4")) as clip:
        stream = clip.streams.video[0]
        rate = Fraction(stream.average_rate)
        images = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), clip.decode(video=0))]
    with av.open(str(folder / "driving_video.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        stream.options = {"qscale": "2"}
        for image in images:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    landmarks = json.loads((Path(source_assets) / "landmarks.json").read_text())
    landmarks["driving"]["frames"] = landmarks["driving"]["frames"][:frames]
    (folder / "landmarks.json").write_text(json.dumps(landmarks))
