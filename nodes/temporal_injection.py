"""Temporal modules placed into ComfyUI's UNet, the AnimateDiff-Evolved way.

The module weights live in their own ModelPatcher, registered as an additional model so
ComfyUI loads and offloads them with the UNet. The modules are appended to the UNet's
TimestepEmbedSequential blocks by a PatcherInjection (so they run after the whole block - for
output blocks 2, 5, 8 after the upsampler, as X-Portrait places them) and removed again when the
patcher is ejected. A forward_timestep_embed patch calls them with the frame count of the chunk.
"""
from __future__ import annotations

import comfy.model_patcher
from comfy.patcher_extension import PatcherInjection

from ..xportrait_core.temporal import INPUT_BLOCK_SLOTS, TemporalModule, TemporalModuleSet

from .attention_choice import temporal_attention
from .networks import storage_only
from .speed_options import FRAME_KERNEL_OPTION, TEMPORAL_KERNEL_OPTION

TEMPORAL_KEY = "xportrait_temporal"


def frames_per_chunk(batch: int, transformer_options: dict) -> int:
    """Frames in each conditioning chunk: ComfyUI stacks whole cond/uncond chunks in one batch."""
    chunks = len(transformer_options.get("cond_or_uncond") or [0])
    if batch % chunks:
        raise ValueError(f"X-Portrait temporal modules: batch {batch} does not split into {chunks} chunks")
    return batch // chunks


def run_temporal(layer: TemporalModule, x, emb, context, transformer_options, *unused):
    weight_dtype = next(layer.parameters()).dtype
    # fp8 weights are cast by their layers as they run, so the module computes in the UNet's dtype.
    compute_dtype = x.dtype if storage_only(weight_dtype) else weight_dtype
    attention = temporal_attention(transformer_options.get(TEMPORAL_KERNEL_OPTION, True),
                                   transformer_options.get(FRAME_KERNEL_OPTION, True))
    out = layer(x.to(compute_dtype), frames_per_chunk(x.shape[0], transformer_options), attention)
    return out.to(x.dtype)


class _Placement:
    """Inject/eject callables bound to one TemporalModuleSet (shared by clones, never copied)."""

    def __init__(self, modules: TemporalModuleSet):
        self.modules = modules

    def _slots(self, unet):
        if len(unet.input_blocks) != 12 or len(unet.output_blocks) != 12:
            raise ValueError("X-Portrait temporal modules need an SD1.5-shaped UNet (12 input and 12 output "
                             f"blocks); this MODEL has {len(unet.input_blocks)} and {len(unet.output_blocks)}")
        for k, slot in enumerate(INPUT_BLOCK_SLOTS):
            yield unet.input_blocks[slot], self.modules.input_blocks_motion_module[k][0]
        for j, block in enumerate(unet.output_blocks):
            yield block, self.modules.output_blocks_motion_module[j][0]

    def inject(self, patcher: comfy.model_patcher.ModelPatcher) -> None:
        for block, module in self._slots(patcher.model.diffusion_model):
            if not any(layer is module for layer in block):
                block.append(module)

    def eject(self, patcher: comfy.model_patcher.ModelPatcher) -> None:
        for block, _ in self._slots(patcher.model.diffusion_model):
            for i in reversed([i for i, layer in enumerate(block) if isinstance(layer, TemporalModule)]):
                del block[i]


def attach_temporal_modules(model: comfy.model_patcher.ModelPatcher,
                            temporal: comfy.model_patcher.ModelPatcher) -> None:
    """Patch a cloned MODEL so the temporal modules run in every pass (cond and uncond)."""
    placement = _Placement(temporal.model)
    model.set_additional_models(TEMPORAL_KEY, [temporal])
    model.set_injections(TEMPORAL_KEY, [PatcherInjection(inject=placement.inject, eject=placement.eject)])
    model.set_model_forward_timestep_embed_patch((TemporalModule, run_temporal))
