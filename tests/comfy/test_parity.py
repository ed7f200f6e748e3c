"""Numerical parity with the official X-Portrait code (goldens in ../shared/parity), computed
through the pack's ComfyUI glue and ComfyUI's own sampler on CPU in fp32."""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from harness.parity_rig import TinyRig, pack_module
from harness.paths import PARITY
from harness.tiny_models import parity_inputs, rel_l2

BOUND = 1e-4
SAMPLER_BOUND = 1e-3


@pytest.fixture(scope="module")
def rig(comfy):
    torch.manual_seed(0)
    return TinyRig()


@pytest.fixture(scope="module")
def inp(parity_available):
    return parity_inputs()


def golden(name):
    return load_file(str(PARITY / name))


def test_reference_bank_matches_g1(rig, inp):
    state = pack_module("nodes.reference_attention").ReferenceState(rig.reference_net, inp["z_ref"], 1.0)
    bank = state._record(inp["z_ref"].to(state._compute_dtype(inp["context"])), torch.tensor([501.0]), inp["context"])
    g1 = golden("g1_reference_bank.safetensors")
    assert len(bank) == 16
    for i, entry in enumerate(bank.entries):
        assert rel_l2(entry, g1[f"bank.{i:02d}"]) < BOUND, f"bank entry {i}"


def test_controlnet_residuals_match_g2(rig, inp):
    g2 = golden("g2_controlnets.safetensors")
    t = torch.full((2,), 501.0)
    context = inp["context"].expand(2, -1, -1)
    for prefix, net, hint in (("pose", rig.pose, inp["hint"][:2]), ("local", rig.local, inp["local_hint"][:2])):
        out = net.model(x=inp["x_t"][:2], hint=hint, timesteps=t, context=context)
        residuals = out["output"] + out["middle"]
        assert len(residuals) == 13
        for i, r in enumerate(residuals):
            assert rel_l2(r, g2[f"{prefix}.{i:02d}"]) < BOUND, f"{prefix} residual {i}"


def _one_step_eps(rig, model, inp, positive, negative, cfg):
    record, _ = rig.sample(model, inp["x_t"], [501], positive, negative, cfg)
    return record["eps"][0]


def _hints(inp, frames=slice(0, 16)):
    return inp["hint"][frames], inp["local_hint"][frames]


def test_window_eps_match_g3(rig, inp):
    g3 = golden("g3_unet_eps.safetensors")
    model = rig.patched(inp["z_ref"])
    pos, neg = rig.conditioning(inp["context"], _hints(inp))
    eps_cond = _one_step_eps(rig, model, inp, pos, neg, cfg=1.0)
    eps_uncond = _one_step_eps(rig, model, inp, pos, neg, cfg=0.0)
    eps_cfg5 = _one_step_eps(rig, model, inp, pos, neg, cfg=5.0)
    assert rel_l2(eps_cond, g3["eps_cond"]) < BOUND
    assert rel_l2(eps_uncond, g3["eps_uncond"]) < BOUND
    assert rel_l2(eps_cfg5, g3["eps_cfg5"]) < BOUND


def test_eps_variants_match_g3(rig, inp):
    g3 = golden("g3_unet_eps.safetensors")
    pos, neg = rig.conditioning(inp["context"], _hints(inp))
    two_refs = torch.cat([inp["z_ref"], inp["z_ref_extra"]])
    eps = _one_step_eps(rig, rig.patched(two_refs), inp, pos, neg, cfg=1.0)
    assert rel_l2(eps, g3["eps_cond_two_refs"]) < BOUND
    no_bank = _one_step_eps(rig, rig.patched(inp["z_ref"], reference_strength=0.0), inp, pos, neg, cfg=1.0)
    assert rel_l2(no_bank, g3["diag.eps_cond_no_bank"]) < BOUND
    for name, strengths in (("diag.eps_cond_no_pose_control", (0.0, 1.0)),
                            ("diag.eps_cond_no_local_control", (1.0, 0.0)),
                            ("diag.eps_cond_no_controls", (0.0, 0.0))):
        p, n = rig.conditioning(inp["context"], _hints(inp), strengths)
        assert rel_l2(_one_step_eps(rig, rig.patched(inp["z_ref"]), inp, p, n, cfg=1.0), g3[name]) < BOUND, name
    no_mm = _one_step_eps(rig, rig.patched(inp["z_ref"], temporal=False), inp, pos, neg, cfg=1.0)
    assert rel_l2(no_mm, g3["diag.eps_cond_no_motion_modules"]) < BOUND


def test_per_frame_references_match_g3(rig, inp):
    g3 = golden("g3_unet_eps.safetensors")
    pos, neg = rig.conditioning(inp["context"], _hints(inp))
    model = rig.patched(inp["z_ref_perframe"], reference_mode="per frame")
    eps = _one_step_eps(rig, model, inp, pos, neg, cfg=1.0)
    assert rel_l2(eps, g3["eps_cond_perframe_ref"]) < BOUND
    # The shared mode joins the same references into one bank: a different model, far from the golden.
    shared = _one_step_eps(rig, rig.patched(inp["z_ref_perframe"]), inp, pos, neg, cfg=1.0)
    assert rel_l2(shared, g3["eps_cond_perframe_ref"]) > 100 * BOUND


def test_strength_zero_and_uncond_are_exactly_unet_plus_temporal(rig, inp):
    plain_model = rig.patched(None)
    plain_pos, plain_neg = rig.conditioning(inp["context"])
    reference = _one_step_eps(rig, plain_model, inp, plain_pos, plain_neg, cfg=1.0)
    zero_model = rig.patched(inp["z_ref"], reference_strength=0.0)
    pos, neg = rig.conditioning(inp["context"], _hints(inp), (0.0, 0.0))
    assert torch.equal(_one_step_eps(rig, zero_model, inp, pos, neg, cfg=1.0), reference)
    full_pos, full_neg = rig.conditioning(inp["context"], _hints(inp))
    uncond = _one_step_eps(rig, rig.patched(inp["z_ref"]), inp, full_pos, full_neg, cfg=0.0)
    assert torch.equal(uncond, reference)


def _sampler_run(rig, inp, offsets):
    hints = (inp["hint"], inp["local_hint"])
    pos, neg = rig.conditioning(inp["context"], hints)
    model = rig.patched(inp["z_ref"], mode="official", offsets=offsets)
    # The official last step goes to alphas_cumprod[0], i.e. the sigma of timestep 0, not to sigma 0.
    return rig.sample(model, inp["sampler_x_T"], [751, 501, 251, 1], pos, neg, cfg=5.0, final_sigma=rig.sigma(0))


def test_sampler_run_a_matches_g5(rig, inp):
    g5 = golden("g5_sampler.safetensors")
    offsets = tuple(int(o) for o in inp["sampler_offsets_a"])
    record, final = _sampler_run(rig, inp, offsets)
    for k in range(4):
        assert rel_l2(record["eps"][k], g5[f"sampler_a.step{k}.eps"]) < SAMPLER_BOUND, f"eps step {k}"
    for k in range(3):
        assert rel_l2(record["x"][k + 1], g5[f"sampler_a.step{k}.x_prev"]) < SAMPLER_BOUND, f"x after step {k}"
    assert rel_l2(final, g5["sampler_a.final"]) < SAMPLER_BOUND


def test_sampler_run_b_offset_zero_matches_g5(rig, inp):
    g5 = golden("g5_sampler.safetensors")
    record, final = _sampler_run(rig, inp, (0,))
    assert rel_l2(record["eps"][0], g5["sampler_b.step0.eps"]) < SAMPLER_BOUND
    assert rel_l2(record["x"][1], g5["sampler_b.step0.x_prev"]) < SAMPLER_BOUND
    assert rel_l2(final, g5["sampler_b.final"]) < SAMPLER_BOUND


def test_vae_matches_g8(rig, inp):
    g8 = golden("g8_vae.safetensors")
    first_stage = rig.vae.first_stage_model
    with torch.no_grad():
        decoded = first_stage.decode(inp["vae_z"] / 0.18215)
    assert rel_l2(decoded, g8["vae_decoded"]) < BOUND
