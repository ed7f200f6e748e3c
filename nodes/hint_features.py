"""Hint features computed once per run: the motion ControlNets' hint encoder is timestep-free.

A ControlNet's hint encoder (`input_hint_block`: eight convolutions, three of them at the full
512x512 hint size with 3-32 channels) sees only the hint image - not the noisy latent, the
timestep or the text - so its output for a frame is the same in every step. The official code
runs it in every window of every step. This cache runs it once per frame and run and hands each
window its frames' features; at 60 frames that is 320x64x64 values per frame and net (157 MiB
per net in fp16). A clip whose features would exceed the byte budget is encoded per window as
before, so GPU memory does not grow with the clip.
"""
from __future__ import annotations

import torch

from ..xportrait_core.reference_bank import position_runs, take_rows

#: transformer_options flag set by the speed options; absent means on.
REUSE_HINT_FEATURES_OPTION = "xportrait_reuse_hint_features"
#: Frames encoded together when the cache is filled (bounds the 512x512 activations).
ENCODE_CHUNK = 16


def feature_channels(net: torch.nn.Module) -> int:
    """Channels of the hint encoder's output (its last convolution's)."""
    convs = [m for m in net.input_hint_block.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1].out_channels


class HintFeatureCache:
    """Whole-clip hint features per (net, size, device, dtype) for the run, within a byte budget."""

    def __init__(self):
        self._features: dict = {}

    def clear(self) -> None:
        self._features = {}

    def rows(self, key, net: torch.nn.Module, clip_frames: int, frames, latent_size, itemsize: int,
             budget_bytes: int, hint_rows, encode):
        """Features of ``frames`` (indices), or None when the whole clip's exceed ``budget_bytes``.

        ``hint_rows(indices)`` gives hint frames ready for the encoder; ``encode(hints)`` runs it."""
        if key not in self._features:
            size = clip_frames * feature_channels(net) * latent_size[0] * latent_size[1] * itemsize
            if clip_frames > 1 and size > budget_bytes:
                self._features[key] = None
            else:
                with torch.no_grad():
                    self._features[key] = torch.cat([
                        encode(hint_rows(list(range(start, min(start + ENCODE_CHUNK, clip_frames)))))
                        for start in range(0, clip_frames, ENCODE_CHUNK)])
        features = self._features[key]
        return None if features is None else clip_rows(features, frames)


def clip_rows(whole: torch.Tensor, frames) -> torch.Tensor:
    """Rows ``frames`` (indices) of a whole-clip device tensor; a one-frame clip serves every frame."""
    if whole.shape[0] == 1:
        return whole.expand(len(frames), -1, -1, -1)
    # Slices of the device copy: indexing with a host tensor would sync with the GPU.
    return take_rows(whole, position_runs(list(frames)))
