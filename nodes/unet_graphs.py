"""The CUDA-graph lever wired into ComfyUI: each window's UNet call replayed from a recording.

An innermost DIFFUSION_MODEL wrapper hands the UNet call (temporal modules, reference attention
and ControlNet residuals included) to `xportrait_core.graph_replay`. The reference net and the
ControlNets run before it, eagerly, as before; the recorded part is the UNet itself, which is
where the launch overhead is.

A recording freezes every Python decision the UNet made, so a window is only replayed when
nothing but tensor values can differ from the recorded call:
- every weight sits on the GPU for the whole run (not streamed by ComfyUI's low-VRAM modes or
  its dynamic VRAM), and the recordings are dropped when the run ends, before weights can move;
- every patch, replacement, attention override and diffusion-model wrapper on the MODEL is
  X-Portrait's own (another pack's patch may branch on the step in Python);
- the reference mode is `shared` (per-frame banks are picked per window in Python);
- the layout of the call (shapes, cond/uncond order) is part of the recording's key;
- there is room on the GPU for the recording's memory next to the run.
Otherwise the call runs eagerly, exactly as without the lever.
"""
from __future__ import annotations

import logging

import torch

import comfy.model_management as mm
from comfy.patcher_extension import WrappersMP

from ..xportrait_core.graph_replay import GraphReplay
from ..xportrait_core.temporal import TemporalModule

from .attention_choice import OVERRIDE_OPTION, choose_kernel
from .memory_estimate import activation_bytes
from .reference_attention import BANK_OPTION, BankAttention
from .speed_options import GRAPHS_OPTION
from .temporal_injection import run_temporal

log = logging.getLogger("xportrait")

GRAPHS_KEY = "xportrait_cuda_graphs"
#: Tensors of transformer_options the UNet call may read; they become recorded inputs.
TENSOR_OPTIONS = (BANK_OPTION, "sigmas")


def _only_xportrait_patches(transformer_options: dict) -> str | None:
    """None when every patch on the call is X-Portrait's own, else what is not."""
    for name, patches in (transformer_options.get("patches") or {}).items():
        for patch in patches:
            if name != "forward_timestep_embed_patch" or patch != (TemporalModule, run_temporal):
                return f"patch '{name}'"
    for name, by_site in (transformer_options.get("patches_replace") or {}).items():
        for replacement in by_site.values():
            if not isinstance(replacement, BankAttention) or replacement.state.mode != "shared":
                return f"replacement '{name}'"
    override = transformer_options.get(OVERRIDE_OPTION)
    if override is not None and override is not choose_kernel:
        return "attention override"
    # Wrappers added after this one run inside the recorded call; those before it run eagerly.
    wrappers = list((transformer_options.get("wrappers") or {}).get(WrappersMP.DIFFUSION_MODEL, {}).items())
    keys = [key for key, fns in wrappers if fns]
    inner = keys[keys.index(GRAPHS_KEY) + 1:] if GRAPHS_KEY in keys else keys
    if inner:
        return f"diffusion-model wrapper '{inner[0]}'"
    return None


def _weights_resident(unet: torch.nn.Module, device: torch.device) -> bool:
    """Every weight of the UNet (temporal modules injected) on ``device``, none cast per call."""
    for module in unet.modules():
        if getattr(module, "comfy_cast_weights", False) or getattr(module, "weight_function", None) \
                or getattr(module, "bias_function", None):
            return False
        for param in module.parameters(recurse=False):
            if param.device != device:
                return False
    return True


def _room_for_recording(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """The recording keeps one call's activations and input copies for the run."""
    need = activation_bytes(x.shape[0], x.shape[-2], x.shape[-1], torch.finfo(dtype).bits // 8)
    free = mm.get_free_memory(x.device) - getattr(mm, "EXTRA_RESERVED_VRAM", 0)
    return need < free


class GraphedUNet:
    """DIFFUSION_MODEL wrapper (innermost): replays recorded UNet calls when it safely can."""

    def __init__(self):
        self.replay = GraphReplay()
        self._eligible: bool | None = None

    def finish(self) -> None:
        """End of a sampling run: drop the recordings (they hold the weights' addresses)."""
        self.replay.release()
        self._eligible = None

    def _decide(self, unet, x, transformer_options) -> bool:
        reason = _only_xportrait_patches(transformer_options)
        if reason is None and not _weights_resident(unet, x.device):
            reason = "weights are streamed by ComfyUI's memory manager"
        if reason is None and not _room_for_recording(x, x.dtype):
            reason = "not enough free GPU memory for the recording"
        if reason is not None:
            log.info("X-Portrait: CUDA graphs off for this run (%s)", reason)
        return reason is None

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        if not (x.is_cuda and transformer_options.get(GRAPHS_OPTION)):
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        if self._eligible is None:
            self._eligible = self._decide(executor.class_obj, x, transformer_options)
        if not self._eligible or _only_xportrait_patches(transformer_options) is not None:
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        tensors = {k: transformer_options[k] for k in TENSOR_OPTIONS if k in transformer_options}

        def run(inputs):
            x_, t_, c_, y_, control_, tensors_, kwargs_ = inputs
            return executor(x_, t_, c_, y_, control_, {**transformer_options, **tensors_}, **kwargs_)

        key = (tuple(transformer_options.get("cond_or_uncond") or ()), id(executor.class_obj))
        return self.replay(key, run, (x, timesteps, context, y, control, tensors, kwargs))


def attach_unet_graphs(model) -> GraphedUNet:
    """Add the wrapper to a cloned MODEL (after the reference wrapper: it must be innermost)."""
    graphed = GraphedUNet()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, GRAPHS_KEY, graphed)
    return graphed
