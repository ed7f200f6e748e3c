"""Small host-side lists (frame indices, weights) sent to the GPU without a host-GPU sync.

Copying a tensor from ordinary (pageable) host memory makes the host wait until the GPU has
finished everything queued before the copy. Inside a sampling step that starves the GPU: the
host can no longer run ahead queueing kernels. Staging the values in pinned memory lets the copy
be queued like a kernel (`non_blocking`); on the CPU this is a plain tensor.
"""
from __future__ import annotations

from typing import Sequence

import torch


def to_device(values: Sequence, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype)`` on ``device``, queued without waiting on the GPU."""
    host = torch.tensor(values, dtype=dtype)
    device = torch.device(device)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
