"""X-Portrait's temporal modules: AnimateDiff-v1-style transformers that attend across frames.

Each module sees a stack of frames ``[clips * frames, C, h, w]`` and lets every spatial position
attend over the frames of its own clip. Twenty of them sit in the generation UNet: after input
blocks 1,2,4,5,7,8,10,11 and after each of the 12 output blocks. Submodule names follow the
official checkpoint so a prefix-stripped state dict loads strictly.

Layers come from an ``operations`` namespace (``Linear``, ``LayerNorm``, ``GroupNorm``), torch.nn by
default; a host passes its own casting layers so its memory manager can stream the weights
layer by layer on small GPUs. The frame attention is a replaceable callable, so a host can pick
the fused kernel per shape (``attention_kernels``).

Precision: everything runs in the input dtype. GroupNorm and LayerNorm are safe in fp16/bf16
because torch accumulates their statistics in fp32 internally; the attention goes through
``scaled_dot_product_attention``, whose fused kernels also accumulate in fp32. The position
table is stored in fp32 and cast at use, so its values are never re-rounded in the module.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .feed_forward import feed_forward_in_chunks, hidden_width

#: ``attention(q, k, v) -> out`` on ``[batch, heads, tokens, head_dim]`` tensors.
AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Official motion-module settings (the released checkpoint and the tiny fixture share them).
HEADS = 8
MAX_FRAMES = 24

#: UNet input block after which input temporal module k runs; output module j follows output
#: block j (for output blocks 2, 5 and 8 that is after their upsample).
INPUT_BLOCK_SLOTS = (1, 2, 4, 5, 7, 8, 10, 11)
OUTPUT_BLOCK_COUNT = 12


def sinusoidal_position_table(channels: int, rows: int = MAX_FRAMES) -> torch.Tensor:
    """The AnimateDiff frame-position table ``[1, rows, channels]``: sin on even channels, cos on odd."""
    if channels % 2:
        raise ValueError(f"temporal position table: channels={channels} must be even")
    position = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, rows, channels)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class PositionTable(nn.Module):
    """Holds the ``pe`` buffer; the checkpoint stores it too and a load replaces the built one."""

    def __init__(self, channels: int, max_frames: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_table(channels, max_frames))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        frames = tokens.shape[-2]
        # The table may sit on the offload device when the host streams this module's layers.
        return tokens + self.pe[0, :frames].to(device=tokens.device, dtype=tokens.dtype)


class TemporalSelfAttention(nn.Module):
    """Self-attention across frames, independently at every spatial position.

    Queries, keys and values all come from the position-encoded tokens (official behaviour).
    """

    def __init__(self, channels: int, heads: int, max_frames: int, operations=nn):
        super().__init__()
        self.heads = heads
        self.to_q = operations.Linear(channels, channels, bias=False)
        self.to_k = operations.Linear(channels, channels, bias=False)
        self.to_v = operations.Linear(channels, channels, bias=False)
        # A Sequential so the projection keeps the checkpoint name ``to_out.0``.
        self.to_out = nn.Sequential(operations.Linear(channels, channels))
        self.pos_encoder = PositionTable(channels, max_frames)

    def forward(self, tokens: torch.Tensor, attention: AttentionKernel | None = None) -> torch.Tensor:
        # tokens: [clips, positions, frames, C]
        clips, positions, frames, channels = tokens.shape
        encoded = self.pos_encoder(tokens)

        def heads_first(projected: torch.Tensor) -> torch.Tensor:
            # -> [clips * positions, heads, frames, head_dim]; 4-D keeps every SDPA kernel eligible
            split = projected.reshape(clips * positions, frames, self.heads, channels // self.heads)
            return split.transpose(1, 2)

        q, k, v = (heads_first(proj(encoded)) for proj in (self.to_q, self.to_k, self.to_v))
        attended = (attention or F.scaled_dot_product_attention)(q, k, v)  # scale = head_dim ** -0.5
        attended = attended.transpose(1, 2).reshape(clips, positions, frames, channels)
        return self.to_out(attended)


class GEGLU(nn.Module):
    """Value half times exact GELU of the gate half (gate is the second half of ``proj``)."""

    def __init__(self, channels: int, hidden: int, operations=nn):
        super().__init__()
        self.proj = operations.Linear(channels, hidden * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, channels: int, mult: int = 4, operations=nn):
        super().__init__()
        # The official index 1 is a dropout; a parameter-free placeholder keeps ``net.2`` aligned.
        self.net = nn.Sequential(GEGLU(channels, channels * mult, operations), nn.Identity(),
                                 operations.Linear(channels * mult, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Row chunks bound the hidden activations (the widest module's were a step's peak).
        return feed_forward_in_chunks(self.net, x, hidden_width(self.net))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, channels: int, heads: int, max_frames: int, operations=nn):
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalSelfAttention(channels, heads, max_frames, operations)
                                              for _ in range(2))
        self.norms = nn.ModuleList(operations.LayerNorm(channels) for _ in range(2))
        self.ff = FeedForward(channels, operations=operations)
        self.ff_norm = operations.LayerNorm(channels)

    def forward(self, tokens: torch.Tensor, attention: AttentionKernel | None = None) -> torch.Tensor:
        for attend, norm in zip(self.attention_blocks, self.norms):
            # Residual is the pre-norm tensor, without the position table.
            tokens = attend(norm(tokens), attention) + tokens
        return self.ff(self.ff_norm(tokens)) + tokens


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, max_frames: int, operations=nn):
        super().__init__()
        self.norm = operations.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.proj_in = operations.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_frames, operations)])
        self.proj_out = operations.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int, attention: AttentionKernel | None = None) -> torch.Tensor:
        stacked, channels, height, width = x.shape
        clips = stacked // frames
        normed = self.norm(x)  # per frame: GroupNorm never mixes batch entries
        # [clips, positions, frames, C]: every later op is per token except the frame attention,
        # so one layout serves the whole module.
        tokens = normed.reshape(clips, frames, channels, height * width).permute(0, 3, 1, 2)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, attention)
        tokens = self.proj_out(tokens)
        return tokens.permute(0, 2, 3, 1).reshape(stacked, channels, height, width) + x


class TemporalModule(nn.Module):
    """One temporal module; its state-dict keys start with ``temporal_transformer.``."""

    def __init__(self, channels: int, heads: int = HEADS, max_frames: int = MAX_FRAMES, operations=nn):
        super().__init__()
        if channels % 32 or channels % heads:
            raise ValueError(
                f"temporal module: channels={channels} must be divisible by 32 (GroupNorm groups) "
                f"and by heads={heads}"
            )
        self.channels = channels
        self.max_frames = max_frames
        self.temporal_transformer = TemporalTransformer(channels, heads, max_frames, operations)

    def forward(self, x: torch.Tensor, frames: int, attention: AttentionKernel | None = None) -> torch.Tensor:
        """``x``: ``[clips * frames, C, h, w]``, each clip ``frames`` consecutive frames.

        ``attention(q, k, v)`` on ``[batch, heads, frames, head_dim]``; torch's SDPA when None."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"temporal module: expected input [clips*frames, {self.channels}, h, w], got {tuple(x.shape)}"
            )
        if not 1 <= frames <= self.max_frames:
            raise ValueError(
                f"temporal module: frames={frames} per clip is outside 1..{self.max_frames}; the position "
                f"table has {self.max_frames} rows, so split the clip into windows of at most {self.max_frames} frames"
            )
        if x.shape[0] % frames:
            raise ValueError(
                f"temporal module: batch {x.shape[0]} is not a whole number of clips of frames={frames}"
            )
        return self.temporal_transformer(x, frames, attention)


_MODULE_KEY = re.compile(r"^(input|output)_blocks_motion_module\.(\d+)\.0\.temporal_transformer\.proj_in\.weight$")
_PE_SUFFIX = ".0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"


class TemporalModuleSet(nn.Module):
    """The 20 temporal modules under their checkpoint names (``model.diffusion_model.`` stripped)."""

    def __init__(
        self,
        input_channels: Sequence[int],
        output_channels: Sequence[int],
        heads: int = HEADS,
        max_frames: int = MAX_FRAMES,
        operations=nn,
    ):
        super().__init__()
        if len(input_channels) != len(INPUT_BLOCK_SLOTS) or len(output_channels) != OUTPUT_BLOCK_COUNT:
            raise ValueError(
                f"temporal module set: need {len(INPUT_BLOCK_SLOTS)} input and {OUTPUT_BLOCK_COUNT} output "
                f"channel counts, got {len(input_channels)} and {len(output_channels)}"
            )

        # The checkpoint wraps each module in a one-element container, hence the ``.0`` in the keys.
        def wrapped(channels: Sequence[int]) -> nn.ModuleList:
            return nn.ModuleList(nn.ModuleList([TemporalModule(c, heads, max_frames, operations)]) for c in channels)

        self.input_blocks_motion_module = wrapped(input_channels)
        self.output_blocks_motion_module = wrapped(output_channels)

    def after_input_block(self, block_index: int) -> TemporalModule | None:
        """The module that runs after UNet input block ``block_index``, or None."""
        if block_index not in INPUT_BLOCK_SLOTS:
            return None
        return self.input_blocks_motion_module[INPUT_BLOCK_SLOTS.index(block_index)][0]

    def after_output_block(self, block_index: int) -> TemporalModule:
        """The module that runs after UNet output block ``block_index`` (every one has one)."""
        return self.output_blocks_motion_module[block_index][0]

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], heads: int = HEADS, dtype: torch.dtype | None = None,
        operations=nn,
    ) -> "TemporalModuleSet":
        """Build from prefix-stripped checkpoint tensors, reading every module's width from its
        ``proj_in`` and the table length from ``pe``; the load is strict and the stored tables are
        used. Tensors are adopted as given (no random init, no copy); ``dtype`` casts afterwards.
        ``operations`` supplies the layer classes (see the module docstring)."""
        channels: dict[str, dict[int, int]] = {"input": {}, "output": {}}
        for key, tensor in state_dict.items():
            match = _MODULE_KEY.match(key)
            if match:
                channels[match.group(1)][int(match.group(2))] = int(tensor.shape[0])
        expected = {"input": len(INPUT_BLOCK_SLOTS), "output": OUTPUT_BLOCK_COUNT}
        for side, count in expected.items():
            missing = sorted(set(range(count)) - set(channels[side]))
            if missing or len(channels[side]) != count:
                raise ValueError(
                    f"temporal modules: checkpoint has {side} modules {sorted(channels[side])}, expected "
                    f"0..{count - 1}; missing {missing}. Is this an X-Portrait checkpoint with "
                    f"'model.diffusion_model.' stripped?"
                )
        pe_key = "input_blocks_motion_module.0" + _PE_SUFFIX
        if pe_key not in state_dict:
            raise ValueError(f"temporal modules: checkpoint lacks {pe_key!r}")
        max_frames = int(state_dict[pe_key].shape[1])
        with torch.device("meta"):
            module_set = cls(
                [channels["input"][k] for k in range(expected["input"])],
                [channels["output"][j] for j in range(expected["output"])],
                heads=heads,
                max_frames=max_frames,
                operations=operations,
            )
        try:
            result = module_set.load_state_dict(dict(state_dict), strict=False, assign=True)
        except RuntimeError as error:  # torch reports shape mismatches this way
            raise ValueError(f"temporal modules: checkpoint tensor shapes do not fit: {error}") from error
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"temporal modules: checkpoint does not match the official layout; "
                f"missing {result.missing_keys[:8]} ({len(result.missing_keys)} in all), "
                f"unexpected {result.unexpected_keys[:8]} ({len(result.unexpected_keys)} in all)"
            )
        return module_set if dtype is None else module_set.to(dtype)
