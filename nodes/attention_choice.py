"""The attention-kernel lever wired into ComfyUI: an `optimized_attention_override`.

ComfyUI routes every attention call of its UNet (our reference-attention replacements, the text
cross-attention) and of the reference net through `transformer_options`'
`optimized_attention_override` when one is set. This override hands plain, unmasked calls to
`xportrait_core.attention_kernels`, which picks an unpadded kernel for X-Portrait's head sizes
on Hopper; every other call (masks, pre-split heads, CPU, fp32) goes to ComfyUI's own function
unchanged. ComfyUI versions without the override key simply ignore it.
"""
from __future__ import annotations

import torch.nn.functional as F

from ..xportrait_core import frame_attention_kernel
from ..xportrait_core.attention_kernels import attention, attention_tokens

OVERRIDE_OPTION = "optimized_attention_override"


def choose_kernel(func, q, k, v, heads, *args, **kwargs):
    """`optimized_attention_override(func, q, k, v, heads, ...)`: ours for plain calls, else ComfyUI's."""
    mask = args[0] if args else kwargs.get("mask")
    plain = (mask is None and not args[1:] and not kwargs.get("enable_gqa") and not kwargs.get("skip_reshape")
             and not kwargs.get("skip_output_reshape") and q.is_cuda and q.ndim == 3)
    if not plain:
        return func(q, k, v, heads, *args, **kwargs)
    return attention_tokens(q, k, v, heads)


def _fused_frames_else_chosen(q, k, v):
    if frame_attention_kernel.fits(q, k, v):
        return frame_attention_kernel.frame_attention(q, k, v)
    return attention(q, k, v)


def _fused_frames_else_sdpa(q, k, v):
    if frame_attention_kernel.fits(q, k, v):
        return frame_attention_kernel.frame_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def temporal_attention(kernels: bool, fused_frames: bool = False):
    """The frame-attention callable for the temporal modules (None: torch's SDPA as is).

    Module-level functions only: compiled temporal modules take the callable as an argument, and
    a new closure per call would make torch.compile recompile them every time."""
    if fused_frames:
        return _fused_frames_else_chosen if kernels else _fused_frames_else_sdpa
    return attention if kernels else None
