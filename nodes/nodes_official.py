"""Nodes that reproduce the official X-Portrait sampler exactly with SamplerCustom.

KSampler with ddim + ddim_uniform visits the same timesteps, but starts from a differently mixed
latent and denoises fully in its last step. Official run: X-Portrait Official Sigmas and
X-Portrait Official Start Latent into SamplerCustom (add_noise off, sampler ddim, cfg 5), with
Apply X-Portrait's official windows.
"""
from __future__ import annotations

import comfy.sample
from comfy_api.latest import io

from ..xportrait_core.finite_inputs import require_finite
from ..xportrait_core.official_schedule import (alphas_cumprod_from_sigmas, official_sigmas, official_start,
                                                start_for_sampler)

from .types import Driving

CATEGORY = "X-Portrait/official schedule"
STEPS_TOOLTIP = "DDIM steps of the official sampler (30 = official; 30 steps make 31 model calls)."


def _alphas_cumprod(model):
    sampling = model.get_model_object("model_sampling")
    return alphas_cumprod_from_sigmas(sampling.sigmas.float().cpu())


class OfficialSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitOfficialSigmas", display_name="X-Portrait Official Sigmas", category=CATEGORY,
            description="The official DDIM timesteps (uniform discretisation) as sigmas for SamplerCustom, ending at "
                        "alphas_cumprod[0] as X-Portrait does (not at a fully clean latent). Use the ddim sampler.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL being sampled (its noise schedule is read)."),
                io.Int.Input("steps", default=30, min=1, max=1000, tooltip=STEPS_TOOLTIP),
            ],
            outputs=[io.Sigmas.Output(tooltip="Connect to SamplerCustom's sigmas.")])

    @classmethod
    def execute(cls, model, steps) -> io.NodeOutput:
        return io.NodeOutput(official_sigmas(_alphas_cumprod(model), steps))


class OfficialStartLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XPortraitOfficialStartLatent", display_name="X-Portrait Official Start Latent",
            category=CATEGORY,
            description="X-Portrait's start: the portrait latent noised to the last training timestep "
                        "(x_T = sqrt(a_999) z + sqrt(1 - a_999) noise), once per driving frame, already noised. "
                        "Sample it with SamplerCustom with add_noise OFF and X-Portrait Official Sigmas.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL being sampled (its noise schedule is read)."),
                io.Vae.Input("vae", tooltip="Encodes the portrait."),
                io.Image.Input("source_image", tooltip="The portrait (first image of the batch is used)."),
                Driving.Input("driving", tooltip="Sets the number of frames."),
                io.Int.Input("steps", default=30, min=1, max=1000, tooltip=STEPS_TOOLTIP + " Same as the sigmas."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise (ComfyUI's noise generator, as KSampler uses it)."),
            ],
            outputs=[io.Latent.Output(tooltip="The noised start latent: connect to SamplerCustom's latent_image.")])

    @classmethod
    def execute(cls, model, vae, source_image, driving, steps, seed) -> io.NodeOutput:
        require_finite(source_image[:1, :, :, :3], "source_image", "check the image loader or the node that made it")
        base = model.model
        z = base.process_latent_in(vae.encode(source_image[:1, :, :, :3]).float())
        z = z.repeat(driving.frames, 1, 1, 1)
        noise = comfy.sample.prepare_noise(z, seed)
        alphas = _alphas_cumprod(model)
        held = start_for_sampler(official_start(z, noise.to(z.dtype), alphas), alphas, steps)
        return io.NodeOutput({"samples": base.process_latent_out(held)})


OFFICIAL_NODES = [OfficialSigmas, OfficialStartLatent]
