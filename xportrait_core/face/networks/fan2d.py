"""The 2D-FAN landmark network ("2DFAN-4": four stacked hourglasses), key-compatible with the
weights `face_alignment` releases.

Input [B, 3, 256, 256] RGB in [0, 1] (the package divides the uint8 crop by 255 and applies no
mean or std); output the last stack's 68 heatmaps [B, 68, 64, 64]. Earlier stacks only feed the
next one, so their heatmaps are not returned.

Weights come in two releases of the same network:
- `2DFAN4-cd938726ad.zip` (face_alignment 1.3 - 1.4, the version X-Portrait ran with): a
  TorchScript archive. It is read with `torchscript_archive.read_torchscript_tensors`, a
  weights-only unpickler, instead of `torch.jit.load`, so none of the archive's code runs.
- `2DFAN4-11f355bf06.pth.tar` (face_alignment 1.5 and before 1.3): a plain state_dict, read
  with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .torchscript_archive import is_torchscript_archive, read_torchscript_tensors

LANDMARKS = 68
HOURGLASS_FEATURES = 256
HOURGLASS_DEPTH = 4
STACKS = 4


class ConvBlock(nn.Module):
    """Pre-activation residual block whose three 3x3 convs give out/2, out/4 and out/4 channels,
    concatenated back to `out`; a BN-ReLU-1x1 projection on the skip when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        self.downsample = None
        if in_channels != out_channels:
            # Sequential indices 0 / 1 / 2 are part of the released key names.
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(True),
                                            nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), 1) + skip


class Hourglass(nn.Module):
    """Recursive hourglass. Level `n` owns blocks b1_n (full-resolution branch), b2_n (after
    2x average pooling) and b3_n (before nearest 2x upsampling); the innermost level adds
    b2_plus_1 where a deeper level would recurse."""

    def __init__(self, depth: int = HOURGLASS_DEPTH, features: int = HOURGLASS_FEATURES):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        lower = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        lower = self._level(level - 1, lower) if level > 1 else self._modules["b2_plus_1"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FAN2D(nn.Module):
    """Stem (7x7/2 conv, three ConvBlocks, one 2x pooling: 256 -> 64) and `stacks` hourglasses.
    Stack i: m{i} hourglass, top_m_{i} block, conv_last{i} + bn_end{i}, l{i} heatmap head; between
    stacks bl{i} and al{i} (heatmaps back to features) feed the residual into the next stack."""

    def __init__(self, stacks: int = STACKS):
        super().__init__()
        if stacks < 1:
            raise ValueError(f"stacks must be >= 1 (the released 2DFAN-4 has 4), got {stacks}")
        self.stacks = stacks
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, HOURGLASS_FEATURES)
        width = HOURGLASS_FEATURES
        for i in range(stacks):
            self.add_module(f"m{i}", Hourglass())
            self.add_module(f"top_m_{i}", ConvBlock(width, width))
            self.add_module(f"conv_last{i}", nn.Conv2d(width, width, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(width))
            self.add_module(f"l{i}", nn.Conv2d(width, LANDMARKS, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(width, width, 1))
                self.add_module(f"al{i}", nn.Conv2d(LANDMARKS, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FAN input must be [B, 3, 256, 256] RGB in [0, 1], got shape {tuple(x.shape)}")
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        previous = x
        heatmaps = x
        for i in range(self.stacks):
            features = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](previous))
            features = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](features)))
            heatmaps = self._modules[f"l{i}"](features)
            if i < self.stacks - 1:
                previous = previous + self._modules[f"bl{i}"](features) + self._modules[f"al{i}"](heatmaps)
        return heatmaps


def read_fan_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The released 2D-FAN weights as a state_dict, from either release format (see module doc)."""
    if is_torchscript_archive(path):
        return read_torchscript_tensors(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a 2D-FAN state_dict")
    # Checkpoints saved from DataParallel carry a "module." prefix.
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_fan(path: str | os.PathLike) -> FAN2D:
    """A FAN2D in eval mode with the released weights at `path` (CPU, float32)."""
    network = FAN2D()
    state = read_fan_weights(path)
    try:
        missing, unexpected = network.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{path} does not match the 2DFAN-4 layout: {error}") from None
    # Weights saved before BatchNorm counted batches lack num_batches_tracked; it is unused in eval.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match the 2DFAN-4 layout: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)}); is it the 2D-FAN landmark file?")
    return network.eval()
