"""Buffers a checkpoint may lack, rebuilt from the official model config.

Two kinds of tensors in the X-Portrait file are not learned: LatentDiffusion's 13 DDPM schedule
buffers and the temporal modules' sinusoidal position tables. Both follow from the config alone
(linear betas from 0.00085 to 0.012 over 1000 steps; AnimateDiff's 24-row sin/cos table), and
whether a training script saves them depends on how it registered them: a buffer registered with
``persistent=False`` never reaches the state dict. A file without them still holds every learned
weight, so the converter and the loader nodes rebuild what is missing and say so in one warning,
instead of refusing the file. Learned weights are never rebuilt: their absence stays an error.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..temporal import sinusoidal_position_table
from .architecture import SCHEDULE_BUFFERS, expected_inventory
from .components import (BASE, COMPONENT_META, dtype_of, metadata_of, official_key, shape_of, split_components,
                         unwrap)
from .validate import detect_config

log = logging.getLogger("xportrait")

#: The official YAML's schedule (``cldm_v15_appearance_pose_local_mm.yaml``, LatentDiffusion defaults).
TIMESTEPS, LINEAR_START, LINEAR_END = 1000, 0.00085, 0.012
POSITION_TABLE = "pos_encoder.pe"
TABLES_SHOWN = 2  # position-table keys are long; the count says the rest


def ddpm_schedule() -> dict[str, torch.Tensor]:
    """LatentDiffusion's 13 registered buffers: computed in float64, stored as float32 (as saved)."""
    betas = torch.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, TIMESTEPS, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    values = {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": abar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - abar).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        "logvar": torch.zeros(TIMESTEPS, dtype=torch.float64),
    }
    return {name: values[name].float() for name in SCHEDULE_BUFFERS}


class WithRebuilt(Mapping):
    """A lazy state dict plus rebuilt tensors; nothing of the source is read until asked for."""

    def __init__(self, source: Mapping, rebuilt: dict[str, torch.Tensor], metadata: dict[str, str]):
        self._source, self._rebuilt, self.metadata = source, rebuilt, metadata

    def __getitem__(self, key: str) -> Any:
        return self._rebuilt[key] if key in self._rebuilt else self._source[key]

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the tensor
        return key in self._rebuilt or key in self._source

    def __iter__(self) -> Iterator[str]:
        yield from self._source
        yield from self._rebuilt

    def __len__(self) -> int:
        return len(self._source) + len(self._rebuilt)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._rebuilt[key].shape) if key in self._rebuilt else shape_of(self._source, key)

    def dtype(self, key: str) -> torch.dtype:
        return self._rebuilt[key].dtype if key in self._rebuilt else dtype_of(self._source, key)


def missing_buffers(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """Rebuilt values of the schedule buffers and position tables the file lacks, under the key
    names the file itself uses (official layout, converted base file, or a converted component).

    Schedule buffers belong to a file that holds a UNet; position tables to any temporal
    component whose widths can be read off its own weights. Anything else is left to validation.
    """
    own_component = metadata_of(state_dict).get(COMPONENT_META)
    bare_component = own_component not in (None, BASE)  # a converted single-network file: no prefixes

    def file_key(component: str, key: str) -> str:
        return key if bare_component else official_key(component, key)

    parts = split_components(state_dict, keep_unused=True)
    rebuilt: dict[str, torch.Tensor] = {}
    if parts.get("unet") and not bare_component:
        present = parts.get("buffers", {})
        absent = [name for name in SCHEDULE_BUFFERS if name not in present]
        if absent:
            schedule = ddpm_schedule()
            rebuilt.update({file_key("buffers", name): schedule[name] for name in absent})
    temporal = parts.get("temporal")
    if temporal:
        config = detect_config("temporal", temporal)
        if config is not None:
            for key, shape in expected_inventory("temporal", config).items():
                if key.endswith(POSITION_TABLE) and key not in temporal:
                    rebuilt[file_key("temporal", key)] = sinusoidal_position_table(shape[2], shape[1])
    return rebuilt


def with_rebuilt_buffers(state_dict: Mapping, source: str = "") -> Mapping:
    """`state_dict` itself when nothing is missing; else the same weights with the missing
    buffers filled in, after one warning that names them."""
    rebuilt = missing_buffers(state_dict)
    if not rebuilt:
        return state_dict
    log.warning(rebuilt_note(rebuilt, source))
    inner = unwrap(state_dict)
    if isinstance(inner, dict):
        return {**inner, **rebuilt}
    return WithRebuilt(inner, rebuilt, metadata_of(state_dict))


def rebuilt_note(rebuilt: Mapping[str, torch.Tensor], source: str = "") -> str:
    tables = sorted(k for k in rebuilt if k.endswith(POSITION_TABLE))
    schedule = sorted(k for k in rebuilt if not k.endswith(POSITION_TABLE))
    said = []
    if schedule:
        said.append(f"{len(schedule)} noise-schedule buffer(s) ({', '.join(schedule)}) from the official config "
                    f"(linear betas {LINEAR_START}..{LINEAR_END}, {TIMESTEPS} steps)")
    if tables:
        shown = ", ".join(tables[:TABLES_SHOWN]) + (", ..." if len(tables) > TABLES_SHOWN else "")
        said.append(f"{len(tables)} temporal position table(s) ({shown}) as the standard sinusoidal tables")
    return f"{source or 'checkpoint'} lacks buffers that are not learned; rebuilt " + " and ".join(said)

