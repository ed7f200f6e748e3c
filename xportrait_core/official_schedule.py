"""The official X-Portrait DDIM schedule and start latent, in a k-diffusion sampler's terms.

The official sampler (LDM DDIM, eta 0, "uniform" discretisation) visits the timesteps
``range(0, T, T // steps) + 1`` in reverse; 30 steps give 31 of them, 991 down to 1, hence 31
model calls. Its last step does not reach a clean latent: it goes to ``alphas_cumprod[0]``. Its
start is ``x_T = sqrt(a_999) z + sqrt(1 - a_999) noise`` (the portrait latent noised to the last
training timestep), although the first model call is made at the first visited timestep.

A k-diffusion sampler (ComfyUI's ``ddim`` sampler is Euler, which is DDIM eta 0 in sigma space)
works on ``x / sqrt(a_t)`` with ``sigma_t = sqrt((1 - a_t) / a_t)``. So the official run is: sigmas
of the visited timesteps plus the sigma of timestep 0 as the last, and the start ``x_T / sqrt(a)``
of the first visited timestep, with no noise added by the sampler.
"""
from __future__ import annotations

import torch

TRAIN_TIMESTEPS = 1000


def official_timesteps(steps: int, train_timesteps: int = TRAIN_TIMESTEPS) -> list[int]:
    """The timesteps the official DDIM sampler calls the model at, in sampling order."""
    if not 1 <= steps <= train_timesteps:
        raise ValueError(f"official schedule: steps={steps} must be 1..{train_timesteps}")
    stride = train_timesteps // steps
    return [t + 1 for t in range(0, train_timesteps, stride)][::-1]


def sigma_of(alphas_cumprod: torch.Tensor, t: int) -> torch.Tensor:
    a = alphas_cumprod[t].double()
    return ((1 - a) / a).sqrt()


def official_sigmas(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """Sigmas for a k-diffusion sampler: each visited timestep, then timestep 0 (not 0)."""
    visited = official_timesteps(steps, len(alphas_cumprod))
    sigmas = [sigma_of(alphas_cumprod, t) for t in visited] + [sigma_of(alphas_cumprod, 0)]
    return torch.stack(sigmas).float()


def official_start(z: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The official ``x_T`` (variance-preserving space) from the portrait latent and the noise."""
    a = alphas_cumprod[len(alphas_cumprod) - 1].double()
    return (a.sqrt() * z.double() + (1 - a).sqrt() * noise.double()).to(z.dtype)


def start_for_sampler(x_t: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """``x_T`` as a k-diffusion sampler holds it at the first visited timestep: ``x_T / sqrt(a)``."""
    first = official_timesteps(steps, len(alphas_cumprod))[0]
    return (x_t.double() / alphas_cumprod[first].double().sqrt()).to(x_t.dtype)


def alphas_cumprod_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """``a_t = 1 / (1 + sigma_t^2)``: a host's per-timestep sigma table back to alphas_cumprod."""
    return 1.0 / (1.0 + sigmas.double() ** 2)
