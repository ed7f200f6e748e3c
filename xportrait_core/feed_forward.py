"""Feed-forward layers over long token batches, in row chunks of bounded memory.

A transformer's GEGLU feed-forward first projects every token to eight times its width (the
value and gate halves), then multiplies the halves. Over one X-Portrait window (32 rows of up to
640 channels at 64x64) those hidden activations reached 1.9 GiB, the peak of a sampling step on
an H200 (bench/sampling_speed.py --memory-trace). Every token is computed on its own, so running
the rows in chunks gives the same values with a bounded peak.
"""
from __future__ import annotations

import torch

from .row_chunks import in_row_chunks

#: Most bytes the hidden activations of one chunk may take (projection plus gated product).
CHUNK_BYTES = 256 * 2**20


def hidden_width(net: torch.nn.Module) -> int:
    """The GEGLU projection's output width (value and gate halves) of a feed-forward ``net``."""
    return net[0].proj.out_features


def feed_forward_in_chunks(net: torch.nn.Module, x: torch.Tensor, projection_width: int,
                           chunk_bytes: int | None = None) -> torch.Tensor:
    """``net(x)`` for tokens ``x [..., C]``, over row chunks whose hidden activations (the
    projection, ``projection_width`` wide, and the gated product, half as wide) stay under
    ``chunk_bytes``."""
    flat = x.reshape(-1, x.shape[-1])
    out = in_row_chunks(net, (flat,), projection_width * 3 // 2 * x.element_size(), chunk_bytes or CHUNK_BYTES)
    return out.reshape(*x.shape[:-1], -1)
