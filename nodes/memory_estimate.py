"""How much GPU memory an X-Portrait window needs, told to ComfyUI's memory manager.

ComfyUI sizes two things from `BaseModel.memory_required`: how much of the weights it loads
before sampling (from the whole latent batch, i.e. the whole clip, twice for cond + uncond) and
whether cond and uncond run batched. Both use the plain SD1.5 estimate. An X-Portrait model call
never sees the whole clip - windows cap it at `window_length` frames per chunk - but each row of
it costs more than a plain SD1.5 row (temporal modules, the reference bank's doubled keys and
values, ControlNet residuals). So the clip-sized estimate offloads weights needlessly on long
clips, and the per-call check can batch cond and uncond where they do not fit. This module
replaces both with a window-sized estimate of X-Portrait's own activations.
"""
from __future__ import annotations

import math

import comfy.model_management as mm
from comfy.patcher_extension import WrappersMP

MEMORY_KEY = "xportrait_memory"

#: Peak activation bytes per batch row and latent pixel in a 2-byte dtype, measured on the
#: full-size model (bench/sampling_speed.py prints the measurement as "activations per row").
ACTIVATION_BYTES_PER_ROW_PIXEL = 34_500
#: Head-room for allocator fragmentation and transient peaks the per-row figure averages out.
SAFETY = 1.5
#: Per-run tensors that stay on the GPU while sampling: both hint clips, the projected
#: reference bank, reused residuals (measured well under this at 60 frames of 512x512).
RUN_OVERHEAD_BYTES = 768 * 2**20


def activation_bytes(rows: int, height: int, width: int, dtype_size: int) -> float:
    """Peak activation bytes of one X-Portrait UNet call over ``rows`` latents of ``height x width``."""
    return rows * height * width * ACTIVATION_BYTES_PER_ROW_PIXEL * dtype_size / 2 * SAFETY


def window_fits_batched(model, x, chunks: int) -> bool:
    """Whether ``chunks`` conditionings of the window ``x`` fit in one call (always on CPU)."""
    if x.device.type == "cpu":
        return True
    need = activation_bytes(x.shape[0] * chunks, x.shape[-2], x.shape[-1], mm.dtype_size(model.get_dtype_inference()))
    patcher = getattr(model, "current_patcher", None)
    free = patcher.get_free_memory(x.device) if patcher is not None else mm.get_free_memory(x.device)
    # --reserve-vram is memory ComfyUI promised to leave alone; free-memory queries do not subtract it.
    free -= getattr(mm, "EXTRA_RESERVED_VRAM", 0)
    return need < free


class _WindowSizedEstimate:
    """PREPARE_SAMPLING wrapper: hand ComfyUI a latent shape whose plain-SD1.5 estimate equals
    X-Portrait's need for one window (ComfyUI doubles it for cond + uncond itself)."""

    def __init__(self, window_length: int):
        self.window_length = window_length

    def __call__(self, executor, model, noise_shape, conds, *args, **kwargs):
        frames, rest = noise_shape[0], list(noise_shape[1:])
        base = model.model
        plain_row = base.memory_required([1] + rest)
        rows = min(frames, self.window_length)
        ours = activation_bytes(rows, rest[-2], rest[-1], mm.dtype_size(base.get_dtype_inference())) + RUN_OVERHEAD_BYTES
        if plain_row > 0:
            noise_shape = [max(1, math.ceil(ours / plain_row))] + rest
        return executor(model, noise_shape, conds, *args, **kwargs)


def attach_memory_estimate(model, window_length: int) -> None:
    model.add_wrapper_with_key(WrappersMP.PREPARE_SAMPLING, MEMORY_KEY, _WindowSizedEstimate(window_length))
