"""Reference (appearance) attention: the bank recorded by the reference net and how the
generation UNet's self-attention reads it.

The reference net runs once per sampling step on the clean reference latent. At each of its
transformer blocks it records ``norm1(x)``, the LayerNorm'd tokens entering self-attention.
The generation UNet's block i then attends with keys/values ``concat([own tokens, bank_i])``,
projected by its *own* ``to_k``/``to_v``. Because the reference latent is clean, the bank only
depends on the timestep and the text context, so it is computed at batch 1 and broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ReferenceBank:
    """The recorded ``norm1`` tokens of every transformer block, in forward order.

    ``entries[i]`` has shape ``[1, tokens, channels]``; several reference images are already
    concatenated along the token axis (the official extra-references rule).
    """

    entries: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_references(cls, per_reference: Sequence[Sequence[torch.Tensor]]) -> "ReferenceBank":
        """Merge the banks of several references: entry i is the token concat of every bank's i.

        Each reference bank may itself hold batch 1 or a batch of references; every row
        becomes its own block of tokens, in order.
        """
        if not per_reference:
            raise ValueError("reference bank: no reference image was given; connect at least one")
        sites = {len(b) for b in per_reference}
        if len(sites) != 1:
            raise ValueError(f"reference bank: references recorded different site counts {sorted(sites)}")
        merged = []
        for site_entries in zip(*per_reference):
            rows = [row for entry in site_entries for row in entry.unbind(0)]
            merged.append(torch.cat(rows, dim=0).unsqueeze(0))
        return cls(merged)


REFERENCE_MODES = ("shared", "per frame")


def per_frame_bank_rows(references: int, frames: Sequence[int], clip_frames: int) -> list[int] | None:
    """Which reference's bank each row of a window reads in ``per frame`` mode (the official
    batch-aligned banks: frame b reads reference b); None when one reference serves every frame."""
    if references == 1:
        return None
    if references != clip_frames:
        raise ValueError(f"reference_mode 'per frame': {references} reference images for a clip of {clip_frames} "
                         "frames; give one reference per driving frame, or a single reference, or use 'shared'")
    return list(frames)


def extend_keys_values(k: torch.Tensor, v: torch.Tensor, k_bank: torch.Tensor,
                       v_bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the projected bank tokens to every row's keys and values: ``[1, L_b, D]`` is shared
    by all rows, ``[rows, L_b, D]`` gives each row its own bank."""
    rows = k.shape[0]
    k_bank = k_bank.to(dtype=k.dtype, device=k.device).expand(rows, -1, -1)
    v_bank = v_bank.to(dtype=v.dtype, device=v.device).expand(rows, -1, -1)
    return torch.cat([k, k_bank], dim=1), torch.cat([v, v_bank], dim=1)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_bank: torch.Tensor,
                        v_bank: torch.Tensor, attention: AttentionFn, strength: float = 1.0) -> torch.Tensor:
    """Self-attention of ``q`` over its own tokens plus the bank.

    ``strength`` 1 is the official model; 0 is plain self-attention (the bank is not even
    touched, so the result is bit-identical); values in between blend the two outputs.
    """
    if strength == 0.0:
        return attention(q, k, v)
    k_ext, v_ext = extend_keys_values(k, v, k_bank, v_bank)
    with_bank = attention(q, k_ext, v_ext)
    if strength == 1.0:
        return with_bank
    return torch.lerp(attention(q, k, v), with_bank, strength)


def chunk_runs(cond_or_uncond: Sequence[int], batch: int) -> list[tuple[slice, bool]]:
    """The batch as row slices of consecutive conditional (tag 0) or other chunks, in order.

    Slices, unlike index tensors, select rows on the GPU without copying indices from the host,
    which would wait for every queued kernel (a host-device sync) at each attention site.
    """
    chunks = len(cond_or_uncond)
    if chunks == 0 or batch % chunks:
        raise ValueError(f"batch of {batch} rows cannot be split into {chunks} conditioning chunks")
    size = batch // chunks
    runs: list[tuple[slice, bool]] = []
    for i, tag in enumerate(cond_or_uncond):
        is_cond = tag == 0
        if runs and runs[-1][1] == is_cond:
            runs[-1] = (slice(runs[-1][0].start, (i + 1) * size), is_cond)
        else:
            runs.append((slice(i * size, (i + 1) * size), is_cond))
    return runs


def position_runs(positions: Sequence[int]) -> list[slice]:
    """Sorted positions grouped into slices of consecutive values ([4,5,6,9] -> 4:7, 9:10)."""
    runs: list[slice] = []
    for p in positions:
        if runs and runs[-1].stop == p:
            runs[-1] = slice(runs[-1].start, p + 1)
        else:
            runs.append(slice(p, p + 1))
    return runs


def take_rows(values: torch.Tensor, runs: Sequence[slice]) -> torch.Tensor:
    """The rows of ``values`` in the slices ``runs``, in order: a view for one slice, else a cat."""
    return values[runs[0]] if len(runs) == 1 else torch.cat([values[r] for r in runs])
