"""The CUDA-graph lever wired into ComfyUI: window UNet calls and ControlNet batches replayed.

Once the compile lever has fused a step's kernels, the GPU runs them faster than Python can
launch them (36% GPU idle in a compiled step on an H200). This lever records each distinct call
once per run and replays it (`xportrait_core.graph_replay`):
- the generation UNet's call for one window (temporal modules, reference attention and the
  ControlNet residuals included), through an innermost DIFFUSION_MODEL wrapper;
- each motion ControlNet's forward over a window's fresh frames (three batch sizes at 16/4);
- the reference net's call (once per model call) with the projection of its bank.
The window bookkeeping stays eager. Every recording shares one memory pool, since they never
run at the same time.

A recording freezes every Python decision the call made, so a call is only replayed when
nothing but tensor values can differ from the recorded one:
- every weight of that network sits on the GPU for the whole run (not streamed by ComfyUI's
  low-VRAM modes or its dynamic VRAM), and the recordings are dropped when the run ends;
- every patch, replacement, attention override and diffusion-model wrapper on the MODEL is
  X-Portrait's own (another pack's patch may branch on the step in Python);
- the reference mode is `shared` (per-frame banks are picked per window in Python);
- the layout of the call (shapes, cond/uncond order) is part of the recording's key;
- there is room on the GPU for a recording's activations next to the run.
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
from .compiled_blocks import weights_resident
from .memory_estimate import activation_bytes
from .motion_control import GRAPHS_OPTION
from .reference_attention import BANK_OPTION, BankAttention
from .temporal_injection import run_temporal

log = logging.getLogger("xportrait")

GRAPHS_KEY = "xportrait_cuda_graphs"
#: Tensors of transformer_options the UNet call may read; they become recorded inputs.
TENSOR_OPTIONS = (BANK_OPTION, "sigmas")


def only_xportrait_patches(transformer_options: dict) -> str | None:
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


def room_for_recording(x: torch.Tensor, dtype: torch.dtype) -> bool:
    """The recordings keep one call's activations and their input copies for the run."""
    need = activation_bytes(x.shape[0], x.shape[-2], x.shape[-1], torch.finfo(dtype).bits // 8)
    free = mm.get_free_memory(x.device) - getattr(mm, "EXTRA_RESERVED_VRAM", 0)
    return need < free


class RunGraphs:
    """The run's recordings and per-network decisions; also the innermost DIFFUSION_MODEL wrapper."""

    def __init__(self):
        self.replay = GraphReplay()
        self._eligible: dict[int, bool] = {}
        self._resident: dict[int, bool] = {}

    def finish(self) -> None:
        """End of a sampling run: drop the recordings (they hold the weights' addresses)."""
        self.replay.release()
        self._eligible.clear()
        self._resident.clear()

    def _weights_resident(self, net: torch.nn.Module, device: torch.device) -> bool:
        if id(net) not in self._resident:
            self._resident[id(net)] = weights_resident(net, device)
        return self._resident[id(net)]

    def _off(self, net: torch.nn.Module, reason: str) -> bool:
        """Log once per network and run why its calls stay eager; returns False."""
        if self._eligible.get(id(net)) is not False:
            log.info("X-Portrait: CUDA graphs off for %s in this run (%s)", type(net).__name__, reason)
            self._eligible[id(net)] = False
        return False

    def _network_allows(self, net: torch.nn.Module, x: torch.Tensor) -> bool:
        """Resident weights and room for a recording, checked once per network and run (neither
        changes within a run)."""
        if id(net) not in self._eligible:
            if not self._weights_resident(net, x.device):
                return self._off(net, "weights are streamed by ComfyUI's memory manager")
            if not room_for_recording(x, x.dtype):
                return self._off(net, "not enough free GPU memory for the recording")
            self._eligible[id(net)] = True
        return self._eligible[id(net)]

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        unet = executor.class_obj
        if not x.is_cuda or transformer_options.get(GRAPHS_OPTION) is not self:
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        foreign = only_xportrait_patches(transformer_options)
        allowed = self._off(unet, foreign) if foreign is not None else self._network_allows(unet, x)
        if not allowed:
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        tensors = {k: transformer_options[k] for k in TENSOR_OPTIONS if k in transformer_options}

        def run(inputs):
            x_, t_, c_, y_, control_, tensors_, kwargs_ = inputs
            return executor(x_, t_, c_, y_, control_, {**transformer_options, **tensors_}, **kwargs_)

        key = ("unet", tuple(transformer_options.get("cond_or_uncond") or ()), id(unet))
        return self.replay(key, run, (x, timesteps, context, y, control, tensors, kwargs))

    def controlnet(self, net: torch.nn.Module, run, inputs: tuple, x: torch.Tensor):
        """``run(inputs)`` (one ControlNet forward) replayed when ``net`` is eligible."""
        if not x.is_cuda or not self._network_allows(net, x):
            return run(inputs)
        return self.replay(("controlnet", id(net)), run, inputs)

    def reference(self, net: torch.nn.Module, unet: torch.nn.Module, run, inputs: tuple, attention_override):
        """``run(inputs)`` (the reference net's call and the projection of its bank through
        ``unet``'s to_k/to_v) replayed when both networks' weights stay on the GPU and the
        attention choice is X-Portrait's own. Eager, the reference net at batch 1 left the GPU
        waiting on Python between its kernels."""
        latents = inputs[0]
        if latents.is_cuda and self.reference_allowed(net, unet, latents, attention_override):
            return self.replay(("reference", id(net)), run, inputs)
        return run(inputs)

    def reference_allowed(self, net: torch.nn.Module, unet: torch.nn.Module, latents: torch.Tensor,
                          attention_override) -> bool:
        if attention_override is not None and attention_override is not choose_kernel:
            return self._off(net, "attention override")
        if not self._weights_resident(unet, latents.device):
            return self._off(net, "the UNet's weights are streamed by ComfyUI's memory manager")
        return self._network_allows(net, latents)


def attach_cuda_graphs(model, enabled: bool) -> RunGraphs | None:
    """Add the lever to a cloned MODEL (after the reference wrapper: it must be innermost)."""
    transformer_options = model.model_options.setdefault("transformer_options", {})
    if not enabled:
        transformer_options.pop(GRAPHS_OPTION, None)
        return None
    graphs = RunGraphs()
    transformer_options[GRAPHS_OPTION] = graphs
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, GRAPHS_KEY, graphs)
    return graphs
