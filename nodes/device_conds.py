"""The sampler's conditioning moved to the GPU once per run instead of once per window.

ComfyUI keeps the text conditioning on the CPU. For every model call it repeats it to the batch
size and copies it to the GPU: in `BaseModel._apply_model` (cast_to_device) and again in a
ControlNet's `get_control`. A copy from pageable host memory first waits for the GPU's queue to
drain (CUDA's documented behaviour for such copies). So every window of every step emptied the
GPU's queue and left it idle while Python queued the next window: with compiled blocks and CUDA
graphs on an H200, the GPU was busy for only 84% of a step (bench/sampling_speed.py
--profile-after, --stack-sample).

The window wrapper hands ComfyUI copies of the conditioning entries whose tensors already sit on
the GPU. The values are the same, so the model sees exactly what it saw before; ComfyUI's later
casts find the tensor on the right device and copy nothing.
"""
from __future__ import annotations

import torch


class DeviceConds:
    """Per-run cache: each conditioning tensor is copied to the sampling device once."""

    def __init__(self):
        self._moved: dict[int, tuple[object, object]] = {}

    def clear(self) -> None:
        self._moved.clear()

    def __call__(self, conds: list, device: torch.device) -> list:
        """``conds`` as ComfyUI's calc_cond_batch gets them (lists of entries, or None)."""
        if device.type == "cpu":
            return conds
        return [None if group is None else [self._entry(entry, device) for entry in group] for group in conds]

    def _entry(self, entry: dict, device: torch.device) -> dict:
        model_conds = entry.get("model_conds")
        if not model_conds:
            return entry
        return {**entry, "model_conds": {name: self._cond(cond, device) for name, cond in model_conds.items()}}

    def _cond(self, cond, device: torch.device):
        tensor = getattr(cond, "cond", None)
        if not isinstance(tensor, torch.Tensor) or tensor.device == device or not hasattr(cond, "_copy_with"):
            return cond
        known = self._moved.get(id(cond))
        if known is None or known[0] is not cond:  # the original is kept, so its id is not reused
            known = (cond, cond._copy_with(tensor.to(device)))
            self._moved[id(cond)] = known
        return known[1]
