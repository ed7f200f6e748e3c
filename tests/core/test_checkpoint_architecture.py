"""Expected inventories: equal to the parity fixture at tiny size, to the spec's table at full size."""
from __future__ import annotations


import pytest
import torch

from xportrait_core.checkpoint.architecture import (COMPONENTS, FULL, TINY, expected_inventory, optional_keys,
                                                    parameter_count, temporal_widths)
from xportrait_core.checkpoint.components import component_of
from xportrait_core.checkpoint.tiny import build_random_checkpoint, ddpm_schedule, official_inventory
from xportrait_core.checkpoint.validate import validate_checkpoint

from harness.paths import SHARED  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)
TINY_FILE = SHARED / "parity" / "xportrait_tiny.safetensors"

# Parameter counts from the spec's component table (docs/xportrait-spec.md section 1), in millions.
SPEC_MILLIONS = {"unet": 859.5, "temporal": 417.1, "reference_net": 860.6, "pose_controlnet": 361.3,
                 "local_controlnet": 361.3, "vae": 83.7, "text_encoder": 123.1}


def _fixture_inventory() -> dict[str, dict[str, tuple[int, ...]]]:
    if not TINY_FILE.exists():
        pytest.skip(f"parity fixture not found at {TINY_FILE} (it sits beside the repository in development and CI)")
    from safetensors import safe_open
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    with safe_open(str(TINY_FILE), framework="pt") as f:
        for key in f.keys():
            component, inner = component_of(key)
            found.setdefault(component, {})[inner] = tuple(f.get_slice(key).get_shape())
    return found


@pytest.mark.parametrize("component", COMPONENTS)
def test_tiny_inventory_equals_parity_fixture(component):
    found = _fixture_inventory()
    assert set(found) <= set(COMPONENTS), f"fixture keys outside every component: {set(found) - set(COMPONENTS)}"
    assert expected_inventory(component, TINY) == found.get(component, {})


@pytest.mark.parametrize("component", sorted(SPEC_MILLIONS))
def test_full_parameter_counts_match_spec_table(component):
    assert round(parameter_count(component, FULL) / 1e6, 1) == SPEC_MILLIONS[component]


def test_full_totals_and_key_names():
    total = sum(parameter_count(c, FULL) for c in COMPONENTS)
    assert round(total / 1e9, 2) == 3.07  # spec: "fp32, about 3.07 B parameters, 12.3 GB"
    unet = expected_inventory("unet", FULL)
    assert unet["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"] == (320, 320)
    assert unet["input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight"] == (1280, 768)
    assert unet["out.2.weight"] == (4, 320, 3, 3)
    control = expected_inventory("pose_controlnet", FULL)
    assert control["input_hint_block.14.weight"] == (320, 256, 3, 3)
    assert control["middle_block_out.0.weight"] == (1280, 1280, 1, 1)
    assert len([k for k in control if k.startswith("zero_convs.") and k.endswith(".weight")]) == 12
    assert "out.0.weight" not in expected_inventory("reference_net", FULL)
    assert set(optional_keys("reference_net", FULL)) <= set(expected_inventory("reference_net", FULL))


def test_temporal_widths_follow_the_spec():
    inputs, outputs = temporal_widths(FULL)
    assert inputs == [320, 320, 640, 640, 1280, 1280, 1280, 1280]
    assert outputs == [1280] * 6 + [640] * 3 + [320] * 3
    temporal = expected_inventory("temporal", FULL)
    pe = [k for k in temporal if k.endswith("pos_encoder.pe")]
    assert len(pe) == 40
    assert temporal["output_blocks_motion_module.11.0.temporal_transformer.transformer_blocks.0.attention_blocks.1"
                    ".pos_encoder.pe"] == (1, 24, 320)


def test_full_size_inventory_is_accepted_exactly_on_meta_tensors():
    state = {k: torch.empty(shape, device="meta") for k, shape in official_inventory(FULL).items()}
    checked = validate_checkpoint(state, source="model_state-415001.th")
    assert checked["unet"].model_channels == 320 and checked["vae"].vae_ch == 128
    assert checked["text_encoder"].context_dim == 768


def test_random_checkpoint_has_official_keys_and_real_schedule():
    state = build_random_checkpoint(TINY, seed=3)
    assert {k: tuple(v.shape) for k, v in state.items()} == official_inventory(TINY.with_(text_encoder=False))
    assert state["model.diffusion_model.out.2.weight"].dtype == torch.float16
    assert state["betas"].dtype == torch.float32
    assert state["betas"][0].item() == pytest.approx(0.00085) and state["betas"][-1].item() == pytest.approx(0.012)
    assert state["alphas_cumprod"][0].item() == pytest.approx(0.99915)
    other = build_random_checkpoint(TINY, seed=4)
    assert not torch.equal(state["model.diffusion_model.out.2.weight"], other["model.diffusion_model.out.2.weight"])
    assert torch.equal(state["model.diffusion_model.out.2.weight"],
                       build_random_checkpoint(TINY, seed=3)["model.diffusion_model.out.2.weight"])


def test_random_checkpoint_buffers_equal_the_fixture():
    _fixture_inventory()  # skips without the fixture
    from safetensors.torch import load_file
    fixture = load_file(str(TINY_FILE))
    for name, value in ddpm_schedule().items():
        assert torch.equal(value, fixture[name]), name
    state = build_random_checkpoint(TINY)
    pe = [k for k in state if k.endswith("pos_encoder.pe")]
    assert len(pe) == 40
    for key in pe:
        torch.testing.assert_close(state[key], fixture[key], atol=1e-6, rtol=0)
