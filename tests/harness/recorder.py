"""A test-only output node that keeps whatever value reaches it, keyed by a tag."""
from __future__ import annotations


def recorder_node() -> type:
    """A fresh recorder class (each test module registers its own, with its own `seen` dict)."""

    class Recorder:
        seen: dict = {}

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("*", {}), "tag": ("STRING", {"default": ""})}}

        RETURN_TYPES = ()
        FUNCTION = "record"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def record(self, value, tag):
            Recorder.seen[tag] = value
            return {}

    return Recorder


def run_recorded(comfy, recorder: type, prompt: dict):
    """Run ``prompt`` and return (result, {tag: value} of what reached ``recorder`` in this run)."""
    recorder.seen.clear()
    result = comfy.run(prompt)
    built = dict(recorder.seen)
    recorder.seen.clear()
    return result, built


def network_weights(component: str, built) -> dict:
    """The state dict of the network a loader output wraps (MODEL, VAE or a patcher)."""
    if component == "unet":
        return built.model.diffusion_model.state_dict()
    if component == "vae":
        return built.first_stage_model.state_dict()
    return built.model.state_dict()
