"""Fixtures of the workflow and blueprint tests: the example's input files and model file name."""
from __future__ import annotations

import pytest

from harness.graphs import EXAMPLE_FRAMES, write_short_example_inputs
from harness.paths import ASSETS


@pytest.fixture(scope="module")
def example_inputs(comfy, tmp_path_factory):
    """The example's input files (a 4-frame driving clip) and a tiny model under the name the
    workflows use."""
    import folder_paths
    import torch
    from safetensors.torch import save_file
    from xportrait_core.checkpoint.tiny import build_random_checkpoint, save_official_th
    if not ASSETS.exists():
        pytest.skip(f"sample assets not found at {ASSETS}")
    inputs = tmp_path_factory.mktemp("input")
    write_short_example_inputs(ASSETS, inputs, EXAMPLE_FRAMES)
    models = tmp_path_factory.mktemp("xportrait_named")
    save_official_th(models / "model_state-415001.th", build_random_checkpoint(seed=1))
    # The tiny checkpoint has no text encoder: Empty Prompt reads its context from the sidecar file.
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(0))
    save_file({"context": context}, str(models / "model_state-415001.empty_prompt.safetensors"))
    folder_paths.add_model_folder_path("xportrait", str(models))
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))
    yield inputs
    folder_paths.set_input_directory(previous)
