"""Everything `Apply X-Portrait` does to a MODEL, on a clone, in one place."""
from __future__ import annotations

import torch

import comfy.model_patcher

from .compiled_blocks import attach_compiled_blocks, finish_compiled_run
from .cuda_graphs import attach_cuda_graphs
from .feed_forward_chunks import attach_chunked_feed_forward
from .memory_estimate import attach_memory_estimate
from .reference_attention import ReferenceState, attach_reference_attention
from .speed_options import SpeedOptions, apply_speed_options
from .temporal_injection import attach_temporal_modules
from ..xportrait_core.finite_inputs import require_finite
from ..xportrait_core.temporal import MAX_FRAMES

from .window_sampling import WindowOptions, WindowState, attach_windows


def encode_references(vae, model: comfy.model_patcher.ModelPatcher, images: torch.Tensor) -> torch.Tensor:
    """Reference latents in the diffusion model's space (x 0.18215 for SD1.5), one per image."""
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"reference_image: expected an IMAGE batch [N,H,W,3], got {list(images.shape)}")
    require_finite(images[..., :3], "reference_image", "check the image loader or the node that made the portrait")
    h, w = images.shape[1:3]
    if h % 8 or w % 8:
        raise ValueError(f"reference_image: {w}x{h} is not a multiple of 8; crop or resize it (512x512 is the official size)")
    latents = vae.encode(images[..., :3])
    return model.model.process_latent_in(latents).float()


def apply_xportrait(model: comfy.model_patcher.ModelPatcher, temporal, reference_net, reference_latents,
                    reference_strength: float, windows: WindowOptions,
                    speed: SpeedOptions | None = None, reference_mode: str = "shared") -> comfy.model_patcher.ModelPatcher:
    patched = model.clone()
    speed = speed or SpeedOptions()
    apply_speed_options(patched, speed)
    attach_chunked_feed_forward(patched)
    if temporal is not None:
        attach_temporal_modules(patched, temporal)
    on_finish = []
    if reference_net is not None and reference_latents is not None:
        state = ReferenceState(reference_net, reference_latents, reference_strength, reference_mode)
        attach_reference_attention(patched, state)
        on_finish.append(state.reset)
    graphs = attach_cuda_graphs(patched, speed.cuda_graphs)  # innermost: after the reference wrapper
    if graphs is not None:
        on_finish.append(graphs.finish)
    attach_compiled_blocks(patched)
    on_finish.append(finish_compiled_run)
    attach_windows(patched, WindowState(windows, on_finish))
    attach_memory_estimate(patched, windows.length if windows.mode != "off" else MAX_FRAMES)
    return patched
