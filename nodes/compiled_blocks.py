"""The compile lever: the UNet's blocks run as torch.compile (inductor) kernels while sampling.

A sampling step is GPU-bound, and a large part of its GPU time is memory traffic between
small kernels: norms, SiLU/GELU, residual adds, the temporal modules' layout changes. Inductor
fuses those into few kernels. Measured per block on an H200 (bench/block_compile.py, fp16,
32 rows): temporal modules 1.4-1.9x, ResBlock 1.6x, SpatialTransformer 1.3x.

Each ResBlock, SpatialTransformer, Up/Downsample and temporal module of the generation UNet is
compiled on its own, not the UNet as a whole: the UNet's Python (patch dispatch, the reference
bank's per-call cache) stays eager, and every block keeps its class, so ComfyUI's dispatch by
`isinstance` still works. The compiled callables are installed for the duration of each model
call by an APPLY_MODEL wrapper - the way ComfyUI's own TorchCompileModel swaps its compiled
modules in - and removed in `finally`, so nothing compiled leaks into another use of the MODEL.
Guards are torch's own (no guard is skipped): a block whose inputs or options change shape or
structure is recompiled, never reused wrongly.

Only on CUDA with Triton, and only when every weight stays on the GPU (layers ComfyUI streams
run their own casting Python). The first run compiles (tens of seconds); later runs reuse it.
"""
from __future__ import annotations

import logging
import weakref

import torch

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample
from comfy.patcher_extension import WrappersMP

from ..xportrait_core.temporal import TemporalModule

log = logging.getLogger("xportrait")

COMPILE_KEY = "xportrait_compile"
#: transformer_options flag set by the speed options; absent means off.
COMPILE_OPTION = "xportrait_compile_blocks"
COMPILED_TYPES = (ResBlock, SpatialTransformer, Downsample, Upsample, TemporalModule)
#: Distinct block layouts of an SD1.5 UNet with temporal modules (widths x sizes x sites) stay
#: well under this; torch's default limit of 8 per function would send most blocks back to eager.
RECOMPILE_LIMIT = 128


def compile_available(device: torch.device) -> bool:
    """Inductor's GPU code generation needs CUDA and Triton (and torch.compile, torch >= 2.2)."""
    if device.type != "cuda" or not hasattr(torch, "compile"):
        return False
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()


def unet_blocks(unet: torch.nn.Module):
    """The generation UNet's compiled blocks (temporal modules included once injected)."""
    for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
        for layer in block:
            if isinstance(layer, COMPILED_TYPES):
                yield layer


def weights_resident(unet: torch.nn.Module, device: torch.device) -> bool:
    """Every weight on ``device`` and none cast per call (ComfyUI's lowvram / dynamic VRAM)."""
    for module in unet.modules():
        if getattr(module, "comfy_cast_weights", False):
            return False
        if any(p.device != device for p in module.parameters(recurse=False)):
            return False
    return True


class CompiledBlocks:
    """APPLY_MODEL wrapper: compiled block callables in place for one model call.

    ``backend`` and ``available`` are torch.compile's backend and the device check; the tests
    run the same mechanism on the CPU with torch's ``eager`` backend (dynamo's graphs, no
    code generation)."""

    def __init__(self, backend: str = "inductor", available=compile_available):
        self.backend = backend
        self.available = available
        self._compiled: dict[int, tuple[weakref.ref, object]] = {}
        self._resident: bool | None = None

    def finish(self) -> None:
        """End of a run: weights may move before the next, so look again then."""
        self._resident = None

    def _callable(self, block: torch.nn.Module):
        entry = self._compiled.get(id(block))
        if entry is None or entry[0]() is not block:
            entry = (weakref.ref(block), torch.compile(block.forward, backend=self.backend, dynamic=False))
            self._compiled[id(block)] = entry
        return entry[1]

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                 **kwargs):
        def plain():
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

        if not transformer_options.get(COMPILE_OPTION) or not self.available(x.device):
            return plain()
        unet = executor.class_obj.diffusion_model
        if self._resident is None:
            self._resident = weights_resident(unet, x.device)
            if not self._resident:
                log.info("X-Portrait: compiled blocks off for this run (ComfyUI streams the weights)")
        if not self._resident:
            return plain()
        blocks = list(unet_blocks(unet))
        try:
            for block in blocks:
                block._compiled_call_impl = self._callable(block)
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return plain()
        finally:
            for block in blocks:
                block._compiled_call_impl = None


def attach_compiled_blocks(model) -> CompiledBlocks:
    compiled = CompiledBlocks()
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY, compiled)
    return compiled
