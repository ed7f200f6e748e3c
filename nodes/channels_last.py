"""The channels-last lever: compiled networks run with their convolution weights in NHWC.

Inductor lays a compiled block's convolutions out channels-last (cuDNN's Hopper kernels are
NHWC), so with the usual NCHW weights and activations every compiled ResBlock, Up/Downsample and
transformer projection converts its input to NHWC and its output back, in every call. With the
weights in channels-last memory format, torch's layout rule (a convolution's output follows its
weight) keeps the activations NHWC from the first convolution on, and those conversions go away.
Measured per block on an H200 (bench/block_compile.py, 32 rows, fp16, compiled): ResBlock
960->320 at 64x64 2.83 -> 2.21 ms, 320 at 64x64 1.21 -> 1.11, 1280 at 16x16 0.86 -> 0.77;
transformers and temporal modules unchanged. Uncompiled, NHWC is slower (ResBlock 1.98 -> 2.74
ms eager), so the lever works only together with compiled blocks.

Only the memory format changes, never a value: each weight is the same numbers in another order.
It changes which convolution algorithm runs, so results differ by rounding only. The weights are
converted in place when a network's first compiled call of a sampling run starts (before any
CUDA-graph recording reads their addresses) and converted back when the run ends, after the
recordings are dropped, so other users of the MODEL never see NHWC weights.
"""
from __future__ import annotations

import weakref

import torch

#: transformer_options flag set by the speed options; absent means off.
CHANNELS_LAST_OPTION = "xportrait_channels_last"


def channels_last_on(transformer_options: dict) -> bool:
    return bool(transformer_options.get(CHANNELS_LAST_OPTION))


def _conv_weights(net: torch.nn.Module):
    for module in net.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Conv2d) and isinstance(weight, torch.Tensor) and weight.dim() == 4:
            yield weight


class ChannelsLastWeights:
    """Networks whose 2-D convolution weights are NHWC for the current run."""

    def __init__(self):
        self._converted: dict[int, tuple[weakref.ref, list[torch.Tensor]]] = {}

    def convert(self, net: torch.nn.Module) -> None:
        """Make ``net``'s convolution weights NHWC for the rest of the run (once per run)."""
        if self.converted(net):
            return
        changed = []
        for weight in _conv_weights(net):
            if not weight.is_contiguous(memory_format=torch.channels_last):
                weight.data = weight.data.contiguous(memory_format=torch.channels_last)
                changed.append(weight)
        self._converted[id(net)] = (weakref.ref(net), changed)

    def converted(self, net: torch.nn.Module) -> bool:
        entry = self._converted.get(id(net))
        return entry is not None and entry[0]() is net

    def restore(self) -> None:
        """End of a run: every converted weight back to the standard (NCHW) memory format."""
        try:
            for _, changed in self._converted.values():
                for weight in changed:
                    weight.data = weight.data.contiguous()
        finally:
            self._converted.clear()
