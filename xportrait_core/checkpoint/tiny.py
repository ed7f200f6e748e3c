"""Random X-Portrait checkpoints in the exact official key format, for tests and the offline demo.

Parameters are normal with fan-in scaling (norm scales around 1), so activations stay in range
in float16. Buffers hold what the official modules register: the real DDPM schedule and the
sinusoidal positional encodings, in float32.
"""
from __future__ import annotations

import math
import os
import zlib

import torch

from .architecture import COMPONENTS, TINY, XPortraitConfig, expected_inventory
from .components import official_key
from .rebuild import ddpm_schedule
from ..temporal import sinusoidal_position_table


def official_inventory(config: XPortraitConfig) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the whole official file for these widths."""
    return {official_key(c, k): shape for c in COMPONENTS for k, shape in expected_inventory(c, config).items()}


def _random_parameter(key: str, shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    # Seeded per name, so a tensor does not change when another component is added or removed.
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    value = torch.randn(shape, generator=generator)
    if len(shape) >= 2:
        value /= math.sqrt(math.prod(shape[1:]))
    elif key.endswith(".weight"):  # a norm's scale
        value = 1.0 + 0.1 * value
    else:
        value *= 0.1
    return value.to(dtype)


def build_random_checkpoint(config: XPortraitConfig = TINY, seed: int = 0, dtype: torch.dtype = torch.float16,
                            with_text_encoder: bool = False) -> dict[str, torch.Tensor]:
    """A random state dict with every official key (parameters in `dtype`, buffers in float32)."""
    config = config.with_(text_encoder=with_text_encoder)
    schedule = ddpm_schedule()
    out: dict[str, torch.Tensor] = {}
    for component in COMPONENTS:
        for key, shape in expected_inventory(component, config).items():
            name = official_key(component, key)
            if component == "buffers":
                out[name] = schedule[key]
            elif key.endswith("pos_encoder.pe"):
                out[name] = sinusoidal_position_table(shape[2], shape[1])
            else:
                out[name] = _random_parameter(name, shape, seed, dtype)
    return out


def save_official_th(path: str | os.PathLike, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a state dict the way the official release is stored: one torch zip pickle."""
    torch.save(state_dict, os.fspath(path))
