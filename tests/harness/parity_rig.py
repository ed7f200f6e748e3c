"""The parity fixture's tiny model assembled through the pack's ComfyUI glue, and a sampler runner.

Everything runs through real ComfyUI objects: ModelPatcher, control objects, conditioning lists
and comfy.sample.sample_custom (the machinery KSampler uses).
"""
from __future__ import annotations

import importlib
import sys

import torch
from safetensors.torch import load_file

from .paths import PACK_NAME, PARITY


def pack_module(name: str):
    """A module of the pack as ComfyUI loaded it (ComfyUI names a custom-node package after its path)."""
    for module_name in list(sys.modules):
        if module_name.endswith("/" + PACK_NAME):
            return importlib.import_module(f"{module_name}.{name}")
    raise RuntimeError(f"the pack '{PACK_NAME}' is not loaded into ComfyUI (use the `comfy` fixture first)")


def tiny_components() -> dict[str, dict]:
    """The parity model split by its official prefixes, as the fixture's README does (fp32)."""
    weights = {k: v.float() for k, v in load_file(str(PARITY / "xportrait_tiny.safetensors")).items()}

    def strip(prefix, keep=lambda k: True):
        return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix) and keep(k)}

    return {"unet": strip("model.diffusion_model.", lambda k: "_motion_module." not in k),
            "temporal": strip("model.diffusion_model.", lambda k: "_motion_module." in k),
            "reference_net": strip("appearance_control_model."), "pose_controlnet": strip("pose_control_model."),
            "local_controlnet": strip("local_pose_control_model."), "vae": strip("first_stage_model.")}


class TinyRig:
    """Base MODEL, VAE, temporal modules, reference net and ControlNets of the parity model."""

    def __init__(self, weight_dtype: str = "fp32", parts: dict[str, dict] | None = None):
        """``parts``: the components to build from (tiny_components() by default)."""
        networks = pack_module("nodes.networks")
        parts = tiny_components() if parts is None else parts
        self.parts = parts
        self.model = networks.build_base_model(parts["unet"], weight_dtype)
        self.vae = networks.build_vae(parts["vae"])
        self.temporal = networks.build_temporal_modules(dict(parts["temporal"]), weight_dtype)
        self.reference_net = networks.build_reference_net(parts["reference_net"], weight_dtype)
        self.pose = networks.build_controlnet(parts["pose_controlnet"], weight_dtype)
        self.local = networks.build_controlnet(parts["local_controlnet"], weight_dtype)
        self.sampling = self.model.get_model_object("model_sampling")

    def patched(self, references: torch.Tensor | None, reference_strength=1.0, temporal=True, speed=None,
                reference_mode="shared", **window):
        patch = pack_module("nodes.xportrait_patch")
        windows = pack_module("nodes.window_sampling").WindowOptions(**window)
        return patch.apply_xportrait(self.model, self.temporal if temporal else None,
                                     self.reference_net if references is not None else None, references,
                                     reference_strength, windows, speed, reference_mode)

    def conditioning(self, context: torch.Tensor, hints=None, strengths=(1.0, 1.0)):
        """[positive, negative] with the motion control attached to both (as the node does).

        ``hints``: a (global, local) pair of hint tensors, or a MotionHints."""
        control_mod = pack_module("nodes.motion_control")
        if hints is None:
            return [[context, {}]], [[context, {}]]
        if not isinstance(hints, control_mod.MotionHints):
            hints = control_mod.MotionHints(*hints)
        control = control_mod.XPortraitMotionControl(self.pose, self.local, hints, *strengths)
        return [[context, {"control": control}]], [[context, {"control": control}]]

    def sigma(self, t: int) -> torch.Tensor:
        return self.sampling.sigmas[t].float()

    def sample(self, model, x_ldm: torch.Tensor, timesteps: list[int], positive, negative, cfg: float,
               final_sigma: float | None = None, seed: int = 0):
        """Euler (= DDIM eta 0) from x_ldm at timesteps[0]; returns per-step x (LDM space), eps and the final x.

        ComfyUI works on x / sqrt(abar) with sigma = sqrt((1-abar)/abar); latents pass through
        process_latent_in/out (x 0.18215), so inputs are divided and outputs multiplied by it.
        """
        import comfy.sample
        import comfy.samplers
        sigmas = [self.sigma(t) for t in timesteps]
        sigmas.append(torch.tensor(0.0) if final_sigma is None else torch.as_tensor(final_sigma, dtype=torch.float32))
        sigmas = torch.stack(sigmas)
        scale = model.model.latent_format.scale_factor
        x_comfy = x_ldm.to(model.load_device) * torch.sqrt(1 + sigmas[0] ** 2)
        record = {"x": [], "eps": []}

        def callback(i, denoised, x, total):
            record["x"].append(x.detach().float().cpu() / torch.sqrt(1 + sigmas[i].cpu() ** 2))
            record["eps"].append(((x - denoised) / sigmas[i]).detach().float().cpu())

        sampler = comfy.samplers.sampler_object("ddim")
        out = comfy.sample.sample_custom(model, torch.zeros_like(x_comfy), cfg, sampler, sigmas, positive, negative,
                                         x_comfy / scale, callback=callback, disable_pbar=True, seed=seed)
        final = out.float().cpu() * scale
        final_ldm = final / torch.sqrt(1 + sigmas[-1].cpu() ** 2) if final_sigma is not None else final
        return record, final_ldm
