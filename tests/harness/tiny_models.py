"""Tiny X-Portrait model files (official key format) for whole-graph tests on CPU."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .paths import PARITY

PARITY_MODEL = "xportrait_tiny.safetensors"
CONTEXT_FILE = "xportrait_tiny.empty_prompt.safetensors"  # the sidecar X-Portrait Empty Prompt reads


def populate_model_dir(folder: Path) -> Path:
    """models/xportrait for tests: the parity fixture's tiny model and its text context (as the
    empty-prompt sidecar: the tiny model has no text encoder)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / PARITY_MODEL
    if not link.exists():
        link.symlink_to(PARITY / PARITY_MODEL)
    context = load_file(str(PARITY / "inputs.safetensors"))["context"].float()
    save_file({"context": context.contiguous()}, str(folder / CONTEXT_FILE))
    return folder


def parity_inputs() -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(PARITY / "inputs.safetensors")).items()}


def rel_l2(mine: torch.Tensor, golden: torch.Tensor) -> float:
    mine, golden = mine.detach().double().cpu(), golden.detach().double().cpu()
    return float((mine - golden).norm() / golden.norm())
