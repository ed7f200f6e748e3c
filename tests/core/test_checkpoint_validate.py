"""Strict validation: every error variant names the problem and, where it can, what the file is."""
from __future__ import annotations

import re

import pytest
import torch

from xportrait_core.checkpoint.architecture import FULL, TINY, expected_inventory, optional_keys
from xportrait_core.checkpoint.errors import CheckpointError
from xportrait_core.checkpoint.tiny import official_inventory
from xportrait_core.checkpoint.validate import detect_config, validate_checkpoint, validate_component


def _meta_state(config=TINY) -> dict[str, torch.Tensor]:
    """A shape-exact official checkpoint that holds no memory."""
    return {k: torch.empty(shape, device="meta") for k, shape in official_inventory(config).items()}


def _error(state, source="model_state-415001.th") -> str:
    with pytest.raises(CheckpointError) as caught:
        validate_checkpoint(state, source=source)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


def test_tiny_and_wrapped_checkpoints_validate():
    checked = validate_checkpoint(_meta_state())
    assert checked["unet"].model_channels == 32 and checked["unet"].channel_mult == (1, 1, 2, 2)
    assert checked["vae"].vae_ch == 32
    assert validate_checkpoint({"state_dict": _meta_state(), "epoch": 3})["temporal"].model_channels == 32


def test_custom_consistent_width_is_detected():
    custom = TINY.with_(model_channels=16, channel_mult=(1, 2, 2, 4), context_dim=24, vae_ch=8)
    checked = validate_checkpoint(_meta_state(custom))
    assert all(checked[c].model_channels == 16 and checked[c].channel_mult == (1, 2, 2, 4)
               for c in ("unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet"))
    assert checked["unet"].context_dim == 24 and checked["vae"].vae_ch == 8


def test_plain_sd15_checkpoint_is_named_as_such():
    state = {k: v for k, v in _meta_state().items() if k.startswith(("model.diffusion_model.", "first_stage_model."))
             and "_motion_module" not in k}
    message = _error(state, "v1-5-pruned.ckpt")
    assert message.startswith("v1-5-pruned.ckpt is not a usable X-Portrait checkpoint")
    assert "plain Stable Diffusion 1.5 checkpoint" in message and "model_state-415001.th" in message
    for component in ("temporal", "pose_controlnet", "local_controlnet", "buffers"):
        assert re.search(rf"^- {component}\b.*missing entirely", message, re.M), component
    assert "\n- unet" not in message and "\n- vae" not in message


def test_missing_keys_are_counted_and_at_most_ten_are_listed():
    state = _meta_state()
    gone = [k for k in state if k.startswith("model.diffusion_model.output_blocks.")][:15]
    for key in gone:
        del state[key]
    message = _error(state)
    line = next(l for l in message.splitlines() if l.startswith("- unet"))
    assert "15 missing key(s)" in line and "(5 more)" in line
    listed = [k[len("model.diffusion_model."):] for k in gone if k[len("model.diffusion_model."):] in line]
    assert len(listed) == 10
    assert "plain Stable Diffusion" not in message  # still recognisably X-Portrait


def test_unexpected_keys_inside_and_outside_components(caplog):
    state = _meta_state()
    state["pose_control_model.zero_convs.12.0.weight"] = torch.empty(64, 64, 1, 1, device="meta")
    state["model_ema.decay"] = torch.empty((), device="meta")
    message = _error(state)
    assert re.search(r"^- pose_controlnet .*1 unexpected key\(s\): zero_convs\.12\.0\.weight", message, re.M)
    assert "model_ema" not in message and "local_controlnet" not in message
    # Keys outside every network (training left-overs) are ignored with one warning naming them.
    assert "ignoring 1 key(s) outside every X-Portrait network" in caplog.text and "model_ema.decay" in caplog.text


def test_training_leftovers_alone_are_ignored_with_one_warning(caplog):
    state = _meta_state()
    for key in ("model_ema.decay", "model_ema.num_updates", "lvlb_weights", "scale_factor", "global_step"):
        state[key] = torch.empty((), device="meta")
    validate_checkpoint(state, "leftovers.th")
    warnings = [r for r in caplog.records if "outside every X-Portrait network" in r.getMessage()]
    assert len(warnings) == 1 and "leftovers.th" in warnings[0].getMessage()


def test_wrong_shape_names_file_and_expected_shapes():
    state = _meta_state()
    key = "local_pose_control_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    state[key] = torch.empty(32, 77, device="meta")
    message = _error(state)
    assert "local_controlnet (tiny test sizes): 1 key(s) with the wrong shape: input_blocks.4.1.transformer_" \
           "blocks.0.attn2.to_k.weight: file [32, 77], expected [32, 32]" in message


def test_a_wrong_anchor_tensor_does_not_mislead_width_detection():
    state = _meta_state()
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.empty(48, 4, 3, 3, device="meta")
    message = _error(state)
    assert "unet (tiny test sizes): 1 key(s) with the wrong shape: input_blocks.0.0.weight" in message


def test_non_tensor_value_is_reported():
    state = _meta_state()
    state["first_stage_model.quant_conv.bias"] = "oops"
    assert "1 key(s) with the wrong shape: quant_conv.bias: holds a str, not a tensor" in _error(state)


def test_components_from_different_models_are_rejected():
    state = _meta_state()
    other = {k: v for k, v in _meta_state(TINY.with_(model_channels=16)).items() if k.startswith("pose_control_model.")}
    state.update(other)
    assert "components disagree on the backbone width" in _error(state)


def test_animatediff_and_ordinary_controlnet_files_are_named():
    animatediff = {f"down_blocks.0.motion_modules.0.temporal_transformer.{n}": torch.empty(320, device="meta")
                   for n in ("norm.weight", "norm.bias")}
    assert "AnimateDiff motion module" in _error(animatediff, "mm_sd_v15.ckpt")
    control = {"control_model." + k: torch.empty(s, device="meta")
               for k, s in expected_inventory("pose_controlnet", FULL).items()}
    assert "ordinary ControlNet" in _error(control, "control_v11p_sd15_openpose.pth")


def test_component_validation_accepts_reference_net_with_or_without_hint_block():
    inventory = expected_inventory("reference_net", TINY)
    with_hint = {k: torch.empty(s, device="meta") for k, s in inventory.items()}
    without = {k: v for k, v in with_hint.items() if k not in optional_keys("reference_net", TINY)}
    assert validate_component("reference_net", with_hint).model_channels == 32
    assert validate_component("reference_net", without).model_channels == 32
    without.pop("middle_block.1.proj_out.weight")
    with pytest.raises(CheckpointError, match=r"xportrait_reference_net.safetensors: reference_net .*"
                                              r"1 missing key\(s\): middle_block.1.proj_out.weight"):
        validate_component("reference_net", without, source="xportrait_reference_net.safetensors")


def test_full_text_encoder_with_legacy_position_ids_validates():
    state = _meta_state(FULL)
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.empty(1, 77, device="meta")
    assert validate_checkpoint(state)["text_encoder"].context_dim == 768
    assert detect_config("unet", {}) is None


def test_both_clip_text_layouts_read_as_the_official_one():
    from xportrait_core.checkpoint.components import split_components
    from xportrait_core.checkpoint.tiny import build_random_checkpoint
    official = build_random_checkpoint(seed=5, with_text_encoder=True)
    current = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
               for k, v in official.items()}
    assert current.keys() != official.keys()
    assert set(validate_checkpoint(current, "new_clip_layout.th")) == set(validate_checkpoint(official))
    assert split_components(current)["text_encoder"].keys() == split_components(official)["text_encoder"].keys()
