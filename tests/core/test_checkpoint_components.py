"""Splitting by prefix without copying, and recognising what a file is."""
from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from xportrait_core.checkpoint.architecture import TINY, expected_inventory
from xportrait_core.checkpoint.components import (FileKind, KeyView, identify, official_key, shape_of,
                                                  split_components)
from xportrait_core.checkpoint.tiny import official_inventory


def _marker_checkpoint() -> dict[str, object]:
    """Official keys whose values are plain objects: splitting must pass them through untouched."""
    return {key: object() for key in official_inventory(TINY)}


def test_split_strips_prefixes_and_passes_values_through():
    state = _marker_checkpoint()
    parts = split_components(state)
    assert set(parts) == {"unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet", "vae",
                          "buffers"}
    for component, part in parts.items():
        for key, value in part.items():
            assert value is state[official_key(component, key)]
    assert "out.2.weight" in parts["unet"] and "input_blocks_motion_module.0.0.temporal_transformer.norm.weight" \
        in parts["temporal"]
    assert not any("_motion_module" in k for k in parts["unet"])
    assert set(parts["pose_controlnet"]) == set(expected_inventory("pose_controlnet", TINY))


def test_reference_net_hint_block_is_dropped_unless_asked_for():
    state = _marker_checkpoint()
    assert not any(k.startswith("input_hint_block.") for k in split_components(state)["reference_net"])
    kept = split_components(state, keep_unused=True)["reference_net"]
    assert set(kept) == set(expected_inventory("reference_net", TINY))


def test_state_dict_wrapper_is_unwrapped_and_strays_are_collected():
    state = _marker_checkpoint()
    state["model_ema.decay"] = object()
    parts = split_components({"state_dict": state, "global_step": 415001})
    assert parts["vae"]["encoder.conv_in.weight"] is state["first_stage_model.encoder.conv_in.weight"]
    assert list(parts["other"]) == ["model_ema.decay"]


class _Lazy(Mapping):
    """A non-dict mapping that counts reads, standing in for a lazily opened file."""

    def __init__(self, data, metadata=None):
        self.data, self.reads, self.metadata = data, 0, metadata or {}

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]

    def __contains__(self, key):
        return key in self.data

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


def test_split_of_a_lazy_mapping_reads_nothing():
    source = _Lazy({k: torch.zeros(shape) for k, shape in official_inventory(TINY).items() if "motion" in k})
    parts = split_components(source)
    assert source.reads == 0
    temporal = parts["temporal"]
    assert isinstance(temporal, KeyView) and len(temporal) == 560
    assert "input_blocks_motion_module.0.0.temporal_transformer.norm.weight" in temporal and source.reads == 0
    assert shape_of(temporal, "input_blocks_motion_module.0.0.temporal_transformer.norm.weight") == (32,)
    assert source.reads == 1


def test_converted_component_file_is_split_by_metadata():
    keys = expected_inventory("pose_controlnet", TINY)
    meta = {"xportrait.component": "pose_controlnet"}
    source = _Lazy({k: object() for k in keys}, meta)
    parts = split_components(source)
    assert list(parts) == ["pose_controlnet"] and set(parts["pose_controlnet"]) == set(keys)
    assert source.reads == 0
    assert identify(source) is FileKind.XPORTRAIT_COMPONENT
    assert identify(dict(source)) is FileKind.CONTROLNET  # without metadata only the key signature speaks


@pytest.mark.parametrize("keys, kind", [
    (["model.diffusion_model.input_blocks.0.0.weight", "appearance_control_model.time_embed.0.weight"],
     FileKind.XPORTRAIT),
    (["model.diffusion_model.input_blocks_motion_module.0.0.temporal_transformer.norm.weight"], FileKind.XPORTRAIT),
    (["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight",
      "cond_stage_model.transformer.text_model.final_layer_norm.weight"], FileKind.SD15),
    (["down_blocks.0.motion_modules.0.temporal_transformer.norm.weight",
      "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"], FileKind.ANIMATEDIFF),
    (["control_model.input_hint_block.0.weight", "control_model.zero_convs.0.0.weight"], FileKind.CONTROLNET),
    (["input_hint_block.0.weight", "zero_convs.0.0.weight", "middle_block_out.0.weight"], FileKind.CONTROLNET),
    (["controlnet_cond_embedding.conv_in.weight"], FileKind.CONTROLNET),
    (["encoder.layers.0.weight"], FileKind.UNKNOWN),
])
def test_identify_by_key_signature(keys, kind):
    assert identify({k: None for k in keys}) is kind
    assert identify({"state_dict": {k: None for k in keys}}) is kind
