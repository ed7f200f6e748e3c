"""The attention-kernel lever wired into ComfyUI: an `optimized_attention_override`.

ComfyUI routes every attention call of its UNet (our reference-attention replacements, the text
cross-attention) and of the reference net through `transformer_options`'
`optimized_attention_override` when one is set. This override hands plain, unmasked calls to
`xportrait_core.attention_kernels`, which picks an unpadded kernel for X-Portrait's head sizes
on Hopper; every other call (masks, pre-split heads, CPU, fp32) goes to ComfyUI's own function
unchanged. ComfyUI versions without the override key simply ignore it.
"""
from __future__ import annotations

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


def temporal_attention(enabled: bool):
    """The frame-attention callable for the temporal modules (None: torch's SDPA as is)."""
    return attention if enabled else None
