"""Bad input through the real nodes and ComfyUI's sampler: NaN images, latents and landmark files,
and a start latent whose length differs from the driving clip. Each is refused with an error that
names the input; a good run afterwards equals one before."""
from __future__ import annotations

import json

import pytest
import torch

from harness.parity_rig import pack_module


def _latent(inp, frames, seed=0):
    size = inp["x_t"].shape[-2:]
    return torch.randn(frames, inp["x_t"].shape[1], *size, generator=torch.Generator().manual_seed(seed))


def _good_run(rig, inp):
    pos, neg = rig.conditioning(inp["context"], (inp["hint"][:3], inp["local_hint"][:3]))
    return rig.sample(rig.patched(inp["z_ref"]), _latent(inp, 3), [501, 251], pos, neg, cfg=5.0)[1]


def test_nan_and_length_errors_leave_the_next_run_unchanged(rig, inp):
    before = _good_run(rig, inp)
    # a NaN latent
    latent = _latent(inp, 3)
    latent[1, 0, 0, 0] = float("nan")
    pos, neg = rig.conditioning(inp["context"], (inp["hint"][:3], inp["local_hint"][:3]))
    with pytest.raises(ValueError, match="latent_image: frame 1 contains NaN"):
        rig.sample(rig.patched(inp["z_ref"]), latent, [501, 251], pos, neg, cfg=5.0)
    # a start latent shorter than the driving clip (it used to make fewer frames silently)
    frames = min(8, inp["hint"].shape[0])
    pos, neg = rig.conditioning(inp["context"], (inp["hint"][:frames], inp["local_hint"][:frames]))
    with pytest.raises(ValueError, match=f"start latent has {frames - 3} frames but the driving hints have {frames}"):
        rig.sample(rig.patched(inp["z_ref"]), _latent(inp, frames - 3), [501, 251], pos, neg, cfg=5.0)
    assert torch.equal(_good_run(rig, inp), before)


def test_nan_images_are_refused_by_the_nodes(rig, comfy):
    sampling = pack_module("nodes.nodes_sampling")
    image = torch.rand(4, 64, 64, 3)
    image[3, 5, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="reference_image: frame 3 contains NaN"):
        pack_module("nodes.xportrait_patch").encode_references(rig.vae, rig.model, image)
    with pytest.raises(ValueError, match="aligned_frames: frame 3 contains NaN"):
        sampling.DrivingFromImages.execute(image, torch.zeros(4, 64, 64, 3))
    with pytest.raises(ValueError, match="source_image: frame 0 contains NaN"):
        sampling.StartLatent.execute(rig.vae, image[3:], None)


def test_nan_landmarks_in_a_file_name_the_file_and_frame(comfy, tmp_path):
    import folder_paths
    frames = [{"found": True, "lmk68": [[1.0, 2.0]] * 68}, {"found": True, "lmk68": [[float("nan"), 2.0]] * 68}]
    name = f"nan_landmarks_{tmp_path.name}.json"
    path = f"{folder_paths.get_input_directory()}/{name}"
    with open(path, "w") as f:
        json.dump({"driving": {"frames": frames}}, f)
    try:
        read = pack_module("nodes.landmark_files").read_landmarks_json
        with pytest.raises(ValueError, match=f"landmarks_file '{name}' \\(driving\\): frame 1 contains NaN"):
            read(name, "driving", (64, 64), 2)
    finally:
        import os
        os.remove(path)
