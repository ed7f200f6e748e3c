"""Temporal modules: official key layout, parity with the official module (G4), an independent
float64 reference, clip independence and frame-count handling."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xportrait_core.temporal import (
    INPUT_BLOCK_SLOTS,
    MAX_FRAMES,
    OUTPUT_BLOCK_COUNT,
    TemporalModule,
    TemporalModuleSet,
    sinusoidal_position_table,
)

from harness.paths import PARITY  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)
UNET_PREFIX = "model.diffusion_model."
# Tiny fixture widths (README section 1): model_channels 32, channel_mult [1,1,2,2].
TINY_LEVEL_WIDTHS = [32 * m for m in (1, 1, 2, 2)]


def rel_l2(mine: torch.Tensor, golden: torch.Tensor) -> float:
    mine, golden = mine.double(), golden.double()
    return float((mine - golden).norm() / golden.norm())


@pytest.fixture(scope="module")
def parity():
    if not PARITY.exists():
        pytest.skip(f"parity fixture not found at {PARITY} (it sits beside the repository in development and CI)")
    from safetensors.torch import load_file

    weights = load_file(str(PARITY / "xportrait_tiny.safetensors"))
    motion = {k[len(UNET_PREFIX):]: v for k, v in weights.items() if "_motion_module." in k}
    inputs = load_file(str(PARITY / "inputs.safetensors"))
    goldens = load_file(str(PARITY / "g4_motion_module.safetensors"))
    return motion, inputs, goldens


def module_weights(motion: dict, name: str, dtype=torch.float32) -> dict:
    prefix = f"{name}.0."
    return {k[len(prefix):]: v.to(dtype) for k, v in motion.items() if k.startswith(prefix)}


def load_module(motion: dict, name: str, dtype=torch.float32) -> TemporalModule:
    sd = module_weights(motion, name, dtype)
    module = TemporalModule(sd["temporal_transformer.proj_in.weight"].shape[0]).to(dtype)
    module.load_state_dict(sd, strict=True)
    return module.eval()


@pytest.mark.parametrize(
    "name, input_key, golden_key",
    [
        ("input_blocks_motion_module.4", "mm_in_input4", "mm_out_input4"),
        ("output_blocks_motion_module.11", "mm_in_output11", "mm_out_output11"),
    ],
)
def test_matches_official_module(parity, name, input_key, golden_key):
    motion, inputs, goldens = parity
    module = load_module(motion, name)
    x = inputs[input_key].float()
    with torch.no_grad():
        out = module(x, frames=x.shape[0])
    assert rel_l2(out, goldens[golden_key]) < 1e-4
    # The golden is far from the input, so matching it is not the identity passing by chance.
    assert rel_l2(x, goldens[golden_key]) > 0.1


def test_stored_position_tables_follow_the_formula(parity):
    motion, _, _ = parity
    tables = {k: v for k, v in motion.items() if k.endswith("pos_encoder.pe")}
    assert len(tables) == 2 * (len(INPUT_BLOCK_SLOTS) + OUTPUT_BLOCK_COUNT)
    for key, stored in tables.items():
        built = sinusoidal_position_table(stored.shape[-1], stored.shape[1])
        assert stored.shape == (1, MAX_FRAMES, stored.shape[-1]), key
        torch.testing.assert_close(built, stored.float(), rtol=0, atol=1e-6, msg=key)


def test_position_table_layout():
    table = sinusoidal_position_table(64, 24)[0].double()
    position = torch.arange(24, dtype=torch.float64)
    for i in (0, 5, 31):
        frequency = 10000.0 ** (-2 * i / 64)
        torch.testing.assert_close(table[:, 2 * i], torch.sin(position * frequency), atol=1e-6, rtol=0)
        torch.testing.assert_close(table[:, 2 * i + 1], torch.cos(position * frequency), atol=1e-6, rtol=0)


def reference_forward(sd: dict, x: torch.Tensor, frames: int, heads: int = 8) -> torch.Tensor:
    """Written from the spec, independently of the module: explicit loops over clips, einsum
    attention with an explicit softmax."""
    p = "temporal_transformer."
    stacked, c, h, w = x.shape
    outputs = []
    for clip in x.split(frames):
        normed = F.group_norm(clip, 32, sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6)
        tokens = normed.flatten(2).transpose(1, 2)  # [F, hw, C]
        hidden = tokens @ sd[p + "proj_in.weight"].T + sd[p + "proj_in.bias"]
        b = p + "transformer_blocks.0."
        for a in range(2):
            ln = F.layer_norm(hidden, (c,), sd[f"{b}norms.{a}.weight"], sd[f"{b}norms.{a}.bias"], eps=1e-5)
            pe = sd[f"{b}attention_blocks.{a}.pos_encoder.pe"][0, :frames]
            encoded = ln + pe[:, None, :]
            att = f"{b}attention_blocks.{a}."
            q, k, v = (encoded @ sd[att + n + ".weight"].T for n in ("to_q", "to_k", "to_v"))
            d = c // heads
            q, k, v = (t.reshape(frames, h * w, heads, d) for t in (q, k, v))
            scores = torch.einsum("fphd,gphd->phfg", q, k) * d ** -0.5
            probs = scores.exp() / scores.exp().sum(-1, keepdim=True)
            mixed = torch.einsum("phfg,gphd->fphd", probs, v).reshape(frames, h * w, c)
            hidden = mixed @ sd[att + "to_out.0.weight"].T + sd[att + "to_out.0.bias"] + hidden
        ln = F.layer_norm(hidden, (c,), sd[b + "ff_norm.weight"], sd[b + "ff_norm.bias"], eps=1e-5)
        projected = ln @ sd[b + "ff.net.0.proj.weight"].T + sd[b + "ff.net.0.proj.bias"]
        value, gate = projected[..., : 4 * c], projected[..., 4 * c:]
        gelu = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))
        hidden = (value * gelu) @ sd[b + "ff.net.2.weight"].T + sd[b + "ff.net.2.bias"] + hidden
        out = hidden @ sd[p + "proj_out.weight"].T + sd[p + "proj_out.bias"]
        outputs.append(out.transpose(1, 2).reshape(frames, c, h, w) + clip)
    return torch.cat(outputs)


@pytest.mark.parametrize("clips, frames", [(1, 16), (2, 7), (3, 1)])
def test_matches_float64_reference(parity, clips, frames):
    motion, _, _ = parity
    name = "input_blocks_motion_module.4"
    module = load_module(motion, name, torch.float64)
    sd = module_weights(motion, name, torch.float64)
    x = torch.randn(clips * frames, 64, 4, 4, generator=torch.Generator().manual_seed(frames), dtype=torch.float64)
    with torch.no_grad():
        out = module(x, frames=frames)
    expected = reference_forward(sd, x, frames)
    assert rel_l2(out, expected) < 1e-10


def test_clips_are_independent(parity):
    motion, inputs, _ = parity
    module = load_module(motion, "output_blocks_motion_module.11")
    first = inputs["mm_in_output11"].float()
    second = torch.randn(first.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        together = module(torch.cat([first, second]), frames=16)
        alone = [module(first, frames=16), module(second, frames=16)]
    torch.testing.assert_close(together[:16], alone[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(together[16:], alone[1], rtol=0, atol=1e-6)


def test_attention_mixes_frames_within_a_clip(parity):
    motion, inputs, _ = parity
    module = load_module(motion, "output_blocks_motion_module.11")
    x = inputs["mm_in_output11"].float()
    perturbed = x.clone()
    # A random change (a constant shift would vanish in the per-frame GroupNorm).
    perturbed[5] += torch.randn(perturbed[5].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        delta = module(perturbed, frames=16) - module(x, frames=16)
        # ... but never a frame of another clip in the same batch.
        beside_perturbed = module(torch.cat([perturbed, x]), frames=16)[16:]
        beside_clean = module(torch.cat([x, x]), frames=16)[16:]
    assert delta[0].abs().max() > 1e-3  # frame 0 sees frame 5 through the temporal attention
    assert torch.equal(beside_perturbed, beside_clean)


@pytest.mark.parametrize("frames", [1, 5])
def test_short_clips_run(parity, frames):
    motion, inputs, _ = parity
    module = load_module(motion, "input_blocks_motion_module.4")
    x = inputs["mm_in_input4"].float()[:frames]
    with torch.no_grad():
        out = module(x, frames=frames)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert rel_l2(out, x) > 1e-3


def test_low_precision_tracks_float32(parity):
    motion, inputs, goldens = parity
    module = load_module(motion, "input_blocks_motion_module.4", torch.bfloat16)
    x = inputs["mm_in_input4"].to(torch.bfloat16)
    with torch.no_grad():
        out = module(x, frames=16)
    assert out.dtype == torch.bfloat16
    assert rel_l2(out, goldens["mm_out_input4"]) < 3e-2


@pytest.mark.parametrize("frames", [0, MAX_FRAMES + 1])
def test_frame_count_outside_the_table_is_refused(frames):
    module = TemporalModule(32)
    with pytest.raises(ValueError, match=rf"frames={frames}.*1\.\.{MAX_FRAMES}"):
        module(torch.zeros(max(frames, 1), 32, 2, 2), frames=frames)


def test_batch_must_hold_whole_clips():
    with pytest.raises(ValueError, match="whole number of clips"):
        TemporalModule(32)(torch.zeros(20, 32, 2, 2), frames=16)


def test_channel_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\[clips\*frames, 32, h, w\]"):
        TemporalModule(32)(torch.zeros(16, 64, 2, 2), frames=16)


def test_key_names_match_the_official_layout(parity):
    motion, _, _ = parity
    official = {k[len("input_blocks_motion_module.4.0."):] for k in motion
                if k.startswith("input_blocks_motion_module.4.0.")}
    assert set(TemporalModule(64).state_dict()) == official


def test_module_set_loads_the_checkpoint_strictly(parity):
    motion, inputs, goldens = parity
    module_set = TemporalModuleSet.from_state_dict(motion, dtype=torch.float32)
    assert set(module_set.state_dict()) == set(motion)
    for key, value in module_set.state_dict().items():
        assert torch.equal(value, motion[key].float()), key
    # Channel widths follow the UNet level each slot sits at.
    input_widths = [m[0].channels for m in module_set.input_blocks_motion_module]
    output_widths = [m[0].channels for m in module_set.output_blocks_motion_module]
    assert input_widths == [TINY_LEVEL_WIDTHS[k // 2] for k in range(8)]
    assert output_widths == [TINY_LEVEL_WIDTHS[3 - j // 3] for j in range(12)]
    assert module_set.after_input_block(3) is None
    assert module_set.after_input_block(INPUT_BLOCK_SLOTS[4]) is module_set.input_blocks_motion_module[4][0]
    x = inputs["mm_in_output11"].float()
    with torch.no_grad():
        out = module_set.after_output_block(11)(x, frames=16)
    assert rel_l2(out, goldens["mm_out_output11"]) < 1e-4


def test_module_set_names_missing_and_unexpected_keys(parity):
    motion, _, _ = parity
    missing_one = {k: v for k, v in motion.items() if "ff_norm.bias" not in k or ".7.0." not in k}
    with pytest.raises(ValueError, match="missing.*ff_norm.bias"):
        TemporalModuleSet.from_state_dict(missing_one)
    extra = dict(motion, **{"input_blocks_motion_module.0.0.temporal_transformer.stray": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected.*stray"):
        TemporalModuleSet.from_state_dict(extra)
    no_output_5 = {k: v for k, v in motion.items() if not k.startswith("output_blocks_motion_module.5.")}
    with pytest.raises(ValueError, match=r"output modules.*missing \[5\]"):
        TemporalModuleSet.from_state_dict(no_output_5)
