"""The official sampler reproduced through the user-facing nodes: X-Portrait Official Sigmas and
Official Start Latent with SamplerCustom. G5 (both recorded offset sequences) through the sigmas
node, the start node against the official mixing formula, and the whole graph in a real prompt."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harness.graphs import xportrait_graph
from harness.parity_rig import pack_module
from harness.paths import PARITY
from harness.tiny_models import rel_l2

SAMPLER_BOUND = 1e-3


def _official_run(rig, inp, offsets_text):
    import comfy.sample
    import comfy.samplers
    nodes = pack_module("nodes.nodes_official")
    schedule = pack_module("xportrait_core.official_schedule")
    offsets = pack_module("nodes.window_sampling").parse_offsets(offsets_text)
    model = rig.patched(inp["z_ref"], mode="official", offsets=offsets)
    pos, neg = rig.conditioning(inp["context"], (inp["hint"], inp["local_hint"]))
    steps = 4
    sigmas = nodes.OfficialSigmas.execute(model=model, steps=steps).result[0]
    alphas = nodes._alphas_cumprod(model)
    # The recorded x_T as the start node hands it over: held at the first timestep, in VAE space.
    start = model.model.process_latent_out(schedule.start_for_sampler(inp["sampler_x_T"], alphas, steps))
    sampler = comfy.samplers.sampler_object("ddim")
    out = comfy.sample.sample_custom(model, torch.zeros_like(start), 5.0, sampler, sigmas, pos, neg, start,
                                     disable_pbar=True, seed=0)
    # Back to the official (variance-preserving) space at alphas_cumprod[0].
    return model.model.process_latent_in(out).float() * alphas[0].float().sqrt()


@pytest.mark.parametrize("run,offsets", [("a", "17,3,11,21"), ("b", "0")])
def test_g5_through_the_official_sigmas_node(rig, inp, run, offsets):
    g5 = load_file(str(PARITY / "g5_sampler.safetensors"))
    assert rel_l2(_official_run(rig, inp, offsets), g5[f"sampler_{run}.final"]) < SAMPLER_BOUND


def test_start_node_mixes_like_the_official_q_sample(rig, comfy):
    import comfy.sample
    nodes = pack_module("nodes.nodes_official")
    driving = pack_module("nodes.motion_control").MotionHints(torch.zeros(3, 3, 64, 64), torch.zeros(3, 3, 64, 64))
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    latent = nodes.OfficialStartLatent.execute(model=rig.model, vae=rig.vae, source_image=image, driving=driving,
                                               steps=30, seed=11).result[0]["samples"]
    base = rig.model.model
    sampling = rig.model.get_model_object("model_sampling")
    a = 1 / (1 + sampling.sigmas.double() ** 2)
    z = base.process_latent_in(rig.vae.encode(image)).double().repeat(3, 1, 1, 1)
    noise = comfy.sample.prepare_noise(z.float(), 11).double()
    x_t = a[999].sqrt() * z + (1 - a[999]).sqrt() * noise
    held = base.process_latent_in(latent).double()
    assert latent.shape[0] == 3
    assert torch.allclose(held * a[991].sqrt(), x_t, atol=1e-5)


def test_official_graph_runs_in_a_real_prompt(comfy):
    prompt, ids = xportrait_graph(frames=3, steps=2, size=64, official=True)
    result = comfy.run(prompt)
    assert result.success, result.error_text()
    assert len(result.outputs[ids["output"]]["images"]) == 3
    with pytest.raises(ValueError, match="whole numbers"):
        pack_module("nodes.window_sampling").parse_offsets("17, x")
    assert np.array_equal(pack_module("nodes.window_sampling").parse_offsets(" 17, 3 "), (17, 3))
