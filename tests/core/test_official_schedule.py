"""The official DDIM schedule in k-diffusion terms, against the G5 manifest and inputs."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from harness.paths import PARITY
from xportrait_core.official_schedule import (alphas_cumprod_from_sigmas, official_sigmas, official_start,
                                              official_timesteps, start_for_sampler)


def _scaled_linear(n=1000, start=0.00085, end=0.012):
    betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def test_timesteps_of_the_official_discretisation():
    assert official_timesteps(4) == [751, 501, 251, 1]
    thirty = official_timesteps(30)
    assert len(thirty) == 31 and thirty[0] == 991 and thirty[-1] == 1  # 31 model calls
    with pytest.raises(ValueError, match="steps=0"):
        official_timesteps(0)


def test_sigmas_follow_the_manifest_steps():
    if not (PARITY / "manifest.json").exists():
        pytest.skip(f"parity fixture not found at {PARITY}")
    steps = json.loads((PARITY / "manifest.json").read_text())["sampler"]["run_a"]["steps"]
    sigmas = official_sigmas(_scaled_linear().float(), len(steps))  # the official buffer is float32
    expected = [((1 - s["a_t"]) / s["a_t"]) ** 0.5 for s in steps] + [((1 - steps[-1]["a_prev"]) / steps[-1]["a_prev"]) ** 0.5]
    assert torch.allclose(sigmas.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5)


def test_start_equals_the_recorded_x_t():
    if not (PARITY / "inputs.safetensors").exists():
        pytest.skip(f"parity fixture not found at {PARITY}")
    inp = {k: v.float() for k, v in load_file(str(PARITY / "inputs.safetensors")).items() if v.is_floating_point()}
    frames = inp["sampler_noise"].shape[0]
    x_t = official_start(inp["z_ref"].expand(frames, -1, -1, -1), inp["sampler_noise"], _scaled_linear().float())
    assert float((x_t - inp["sampler_x_T"]).abs().max()) < 1e-3 * float(inp["sampler_x_T"].abs().max())


def test_sampler_space_round_trip():
    a = _scaled_linear()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    held = start_for_sampler(x, a, 4)
    assert torch.allclose(held * a[751].sqrt(), x)
    assert torch.allclose(alphas_cumprod_from_sigmas(((1 - a) / a).sqrt()), a)
