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


class ReadWhenAsked:
    """The values of a device tensor, read back to the host on first use and then kept.

    A read-back waits until the GPU has run everything queued before it, and the host then
    queues the next kernels onto an idle GPU. Values that are only sometimes needed (a
    ControlNet's start/end check when its range is not the whole schedule) are read this way,
    so a model call that does not need them never drains the queue.
    """

    def __init__(self, tensor: torch.Tensor):
        self._tensor = tensor
        self._values: list | None = None

    @property
    def was_read(self) -> bool:
        return self._values is not None

    def __getitem__(self, index: int):
        if self._values is None:
            self._values = self._tensor.reshape(-1).tolist()
            self._tensor = None
        return self._values[index]
