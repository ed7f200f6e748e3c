"""The generation UNet's transformer feed-forwards run in row chunks (bounded memory).

ComfyUI's `BasicTransformerBlock` calls `self.ff(x)` on every token of the batch at once; over
an X-Portrait window (cond + uncond, 16 frames at 64x64) its GEGLU hidden activations take
0.9 GiB. Each block's `ff` is swapped, through a ModelPatcher object patch (put in place when
ComfyUI loads the MODEL, restored when it unloads it), for a module that runs the same `net` in
row chunks (`xportrait_core.feed_forward`). The swap keeps `ff.net` - the same submodule - so
parameter names, LoRA patches and ComfyUI's weight streaming are unchanged.
"""
from __future__ import annotations

import torch

from comfy.ldm.modules.attention import BasicTransformerBlock

from ..xportrait_core.feed_forward import feed_forward_in_chunks, hidden_width


class ChunkedFeedForward(torch.nn.Module):
    """Drop-in for ComfyUI's FeedForward holding the same ``net``; computes it in row chunks."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.projection_width = hidden_width(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return feed_forward_in_chunks(self.net, x, self.projection_width)


def attach_chunked_feed_forward(model) -> None:
    """Object patches on a cloned MODEL for every transformer block with a GEGLU feed-forward."""
    for name, module in model.model.diffusion_model.named_modules():
        net = getattr(getattr(module, "ff", None), "net", None)
        if isinstance(module, BasicTransformerBlock) and isinstance(net, torch.nn.Sequential) and hasattr(net[0], "proj"):
            model.add_object_patch(f"diffusion_model.{name}.ff", ChunkedFeedForward(net))
