"""fp8 weights (weight_dtype fp8_e4m3fn / fp8_e4m3fn_fast): stored in fp8, computed in the
device's compute dtype. On the CPU that is fp32, so a run with fp8 weights must equal an fp32 run
whose weights were rounded to fp8 beforehand - the only difference fp8 makes is that rounding."""
from __future__ import annotations

import pytest
import torch

from harness.parity_rig import TinyRig, pack_module, tiny_components
from harness.tiny_models import parity_inputs, rel_l2

FP8 = torch.float8_e4m3fn
TIGHT = 1e-5


def _rounded_to_fp8(parts: dict[str, dict]) -> dict[str, dict]:
    """Every weight of the sampling networks rounded to fp8 and back; the temporal position tables
    (buffers, kept exact by the pack) and the VAE (never fp8) are left as they are."""
    def rounded(name, key, tensor):
        keep = name == "vae" or (name == "temporal" and key.endswith(".pe"))
        return tensor if keep else tensor.to(FP8).float()
    return {name: {k: rounded(name, k, v) for k, v in sd.items()} for name, sd in parts.items()}


@pytest.fixture(scope="module")
def rigs(comfy):
    parts = tiny_components()
    return {"fp8_e4m3fn": TinyRig("fp8_e4m3fn"), "fp8_e4m3fn_fast": TinyRig("fp8_e4m3fn_fast"),
            "rounded fp32": TinyRig("fp32", parts=_rounded_to_fp8(parts)), "fp32": TinyRig("fp32", parts=parts)}


@pytest.fixture(scope="module")
def inp(parity_available):
    return parity_inputs()


def _networks(rig):
    return {"unet": rig.model.model.diffusion_model, "temporal": rig.temporal.model,
            "reference net": rig.reference_net.model, "pose ControlNet": rig.pose.model,
            "local ControlNet": rig.local.model}


def _window_eps_cfg5(rig, inp):
    frames = slice(0, 16)
    model = rig.patched(inp["z_ref"])
    positive, negative = rig.conditioning(inp["context"], (inp["hint"][frames], inp["local_hint"][frames]))
    record, _ = rig.sample(model, inp["x_t"], [501], positive, negative, 5.0)
    return record["eps"][0]


def test_every_sampling_network_stores_its_weights_in_fp8(rigs):
    for name, net in _networks(rigs["fp8_e4m3fn"]).items():
        dtypes = {p.dtype for p in net.parameters()}
        assert dtypes == {FP8}, f"{name}: parameters in {dtypes}"
    pe = [b for n, b in rigs["fp8_e4m3fn"].temporal.model.named_buffers() if n.endswith(".pe")]
    assert pe and all(b.dtype == torch.float32 for b in pe), "the temporal position tables must stay exact"
    fp32_bytes = sum(p.numel() * p.element_size() for p in rigs["fp32"].model.model.diffusion_model.parameters())
    fp8_bytes = sum(p.numel() * p.element_size() for p in rigs["fp8_e4m3fn"].model.model.diffusion_model.parameters())
    assert fp8_bytes * 4 == fp32_bytes


def test_fp8_run_is_the_fp32_run_on_fp8_rounded_weights(rigs, inp):
    exact = _window_eps_cfg5(rigs["fp32"], inp)
    rounded = _window_eps_cfg5(rigs["rounded fp32"], inp)
    fp8 = _window_eps_cfg5(rigs["fp8_e4m3fn"], inp)
    assert rel_l2(fp8, rounded) < TIGHT
    # The rounding itself is visible, so the comparison above is not vacuous. (Its size on the
    # tiny random model says nothing about the real one: bench/precision.py --dtype fp8_e4m3fn
    # prints the full-size error.)
    assert rel_l2(fp8, exact) > 1e-3 and torch.isfinite(fp8).all()


def test_fp8_matmul_choice_falls_back_to_the_casting_layers_without_fp8_compute(rigs, inp):
    import comfy.model_management as mm
    assert not mm.supports_fp8_compute(mm.get_torch_device())  # the CPU: no fp8 matmul
    assert torch.equal(_window_eps_cfg5(rigs["fp8_e4m3fn_fast"], inp), _window_eps_cfg5(rigs["fp8_e4m3fn"], inp))


def test_loader_nodes_offer_fp8(comfy):
    from harness.paths import PACK_NAME  # noqa: F401  (the pack is loaded by the fixture)
    networks = pack_module("nodes.networks")
    assert {"fp8_e4m3fn", "fp8_e4m3fn_fast"} <= set(networks.WEIGHT_DTYPES)
