"""The compile lever: the networks' blocks run as torch.compile (inductor) kernels while sampling.

A sampling step is GPU-bound, and a large part of its GPU time is memory traffic between
small kernels: norms, SiLU/GELU, residual adds, the temporal modules' layout changes. Inductor
fuses those into few kernels. Measured per block on an H200 (bench/block_compile.py, fp16,
32 rows): temporal modules 1.4-1.9x, ResBlock 1.6x, SpatialTransformer 1.3x.

Each ResBlock, SpatialTransformer, Up/Downsample and temporal module of the generation UNet,
the reference net and the motion ControlNets (and the ControlNets' hint encoder) is compiled on
its own, not a network as a whole: the networks' Python (patch dispatch, the reference bank's
per-call cache) stays eager, and every block keeps its class, so ComfyUI's dispatch by
`isinstance` still works. The compiled callables are installed around each network call - the
UNet's by an APPLY_MODEL wrapper, the way ComfyUI's own TorchCompileModel swaps its compiled
modules in; the ControlNets' and the reference net's by the code that calls them - and removed
in `finally`, so nothing compiled leaks into another use of the MODEL.
Guards are torch's own (no guard is skipped): a block whose inputs or options change shape or
structure is recompiled, never reused wrongly.

Only on CUDA with Triton, and only for a network whose weights all stay on the GPU (layers
ComfyUI streams run their own casting Python). The first run compiles (minutes); later runs
reuse it.
"""
from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from typing import NamedTuple

import torch

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample
from comfy.patcher_extension import WrappersMP

from ..xportrait_core.temporal import TemporalModule
from .channels_last import ChannelsLastWeights, channels_last_on

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
    """A UNet's compiled blocks: the generation UNet's (temporal modules included once injected)
    and the reference net's."""
    for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
        for layer in block:
            if isinstance(layer, COMPILED_TYPES):
                yield layer


def weights_resident(net: torch.nn.Module, device: torch.device) -> bool:
    """Every weight on ``device``, none cast or patched per call (ComfyUI's lowvram / dynamic VRAM)."""
    for module in net.modules():
        if getattr(module, "comfy_cast_weights", False) or getattr(module, "weight_function", None) \
                or getattr(module, "bias_function", None):
            return False
        if any(p.device != device for p in module.parameters(recurse=False)):
            return False
    return True


def _dynamo_settings() -> dict:
    """Dynamo settings while compiled blocks run (only those this torch version has)."""
    wanted = {
        "recompile_limit": RECOMPILE_LIMIT,  # named cache_size_limit before torch 2.7
        "cache_size_limit": RECOMPILE_LIMIT,
        # Dynamo skips the tensor guards of parameters whose module dict is unchanged, so a
        # weight whose layout changed in place (the channels-last lever, on in one run and off
        # in the next) would reach code compiled for the other layout. Guard them in full.
        "skip_tensor_guards_with_matching_dict_tags": False,
    }
    config = torch._dynamo.config
    settings = {key: value for key, value in wanted.items() if hasattr(config, key)}
    if "recompile_limit" in settings:
        settings.pop("cache_size_limit", None)  # an alias of recompile_limit where both exist
    return settings


class BlockCompiler:
    """Compiled callables of blocks, installed around a network's forward and removed after.

    ``backend`` and ``available`` are torch.compile's backend and the device check; the tests
    run the same mechanism on the CPU with torch's ``eager`` backend (dynamo's graphs, no code
    generation). One compiler serves every network of the pack: dynamo caches compiled code per
    block class and shape, so the ControlNets reuse what the UNet's blocks compiled."""

    def __init__(self, backend: str = "inductor", available=compile_available):
        self.backend = backend
        self.available = available
        self._compiled: dict[int, tuple[weakref.ref, object]] = {}
        self._resident: dict[int, bool] = {}

    def finish(self) -> None:
        """End of a run: weights may move before the next, so look again then."""
        self._resident.clear()

    def applies(self, net: torch.nn.Module, device: torch.device) -> bool:
        if not self.available(device):
            return False
        if id(net) not in self._resident:
            self._resident[id(net)] = resident = weights_resident(net, device)
            if not resident:
                log.info("X-Portrait: compiled blocks off for %s in this run (ComfyUI streams its weights)",
                         type(net).__name__)
        return self._resident[id(net)]

    def _callable(self, block: torch.nn.Module):
        entry = self._compiled.get(id(block))
        if entry is None or entry[0]() is not block:
            entry = (weakref.ref(block), torch.compile(block.forward, backend=self.backend, dynamic=False))
            self._compiled[id(block)] = entry
        return entry[1]

    @contextmanager
    def installed(self, blocks):
        blocks = list(blocks)
        try:
            for block in blocks:
                block._compiled_call_impl = self._callable(block)
            with torch._dynamo.config.patch(**_dynamo_settings()):
                yield
        finally:
            for block in blocks:
                block._compiled_call_impl = None


#: The compiler every network of the pack uses (tests swap in one with the `eager` backend).
COMPILER = BlockCompiler()
#: Networks whose convolution weights are NHWC for the current run (the channels-last lever).
CHANNELS_LAST = ChannelsLastWeights()


class CompileChoice(NamedTuple):
    """The compile lever's switches for one network call; false when compiling is off."""
    enabled: bool
    channels_last: bool = False

    def __bool__(self) -> bool:
        return self.enabled


def compile_on(transformer_options: dict) -> CompileChoice:
    return CompileChoice(bool(transformer_options.get(COMPILE_OPTION)), channels_last_on(transformer_options))


@contextmanager
def compiled_while(choice: CompileChoice | bool, net: torch.nn.Module, blocks, device: torch.device):
    """``blocks`` of ``net`` run compiled inside the with-body when the lever is on and applies
    (and with NHWC convolution weights for the rest of the run when ``choice`` asks for that)."""
    compiler = COMPILER
    if choice and compiler.applies(net, device):
        if getattr(choice, "channels_last", False):
            CHANNELS_LAST.convert(net)
        with compiler.installed(blocks):
            yield
    else:
        yield


def _compiled_unet(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                   **kwargs):
    """APPLY_MODEL wrapper: the generation UNet's blocks compiled for one model call."""
    unet = executor.class_obj.diffusion_model
    with compiled_while(compile_on(transformer_options), unet, unet_blocks(unet), x.device):
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def attach_compiled_blocks(model) -> None:
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY, _compiled_unet)


def finish_compiled_run() -> None:
    """End of a run (after the CUDA-graph recordings are dropped): weights back to NCHW."""
    try:
        CHANNELS_LAST.restore()
    finally:
        COMPILER.finish()
