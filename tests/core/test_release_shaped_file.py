"""A file shaped like the released model_state-415001.th (tiny widths), and its likely variants,
through the converter: one policy for required networks, extras and non-learned buffers."""
from __future__ import annotations

import logging
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.paths import PARITY
from harness.tiny_models import (LEFTOVERS, POSITION_IDS, RELEASE_VARIANTS, release_shaped_state, release_variant,
                                 save_like_the_release, storage_locations)
from xportrait_core.checkpoint.architecture import FULL, SCHEDULE_BUFFERS, TINY
from xportrait_core.checkpoint.components import OTHER, official_key, split_components
from xportrait_core.checkpoint.rebuild import missing_buffers, with_rebuilt_buffers
from xportrait_core.checkpoint.safe_load import load_state_dict
from xportrait_core.checkpoint.split import OUTPUT_FILES
from xportrait_core.checkpoint.tiny import official_inventory
from xportrait_core.convert import main

CONFIG = TINY.with_(text_encoder=True)  # tiny widths; the CLIP text model at the tiny context width
RELEASE_TENSORS = 3082  # tensors in the release (issue 9's account of the official code's model)


@pytest.fixture(scope="module")
def release() -> OrderedDict:
    return release_shaped_state(TINY, seed=7)


def _save_variant(release, variant: str, folder: Path) -> Path:
    return save_like_the_release(folder / "model_state-415001.th", release_variant(release, variant),
                                 byteorder_record=variant != "no byteorder")


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "xportrait" and r.levelno >= logging.WARNING]


def _expected_outputs(state) -> dict[str, dict[str, torch.Tensor]]:
    """What each converter output must hold, from the official prefixes (independent of the writer)."""
    parts = split_components(state)
    base = {official_key(c, k): v for c in ("unet", "vae", "text_encoder", "buffers") for k, v in parts[c].items()}
    return {"base_sd15": base, **{c: dict(parts[c]) for c in OUTPUT_FILES if c != "base_sd15"}}


def test_fixture_is_shaped_like_the_release(release, tmp_path):
    path = save_like_the_release(tmp_path / "model_state-415001.th", release)
    assert zipfile.is_zipfile(path)
    assert any(n.endswith("/byteorder") for n in zipfile.ZipFile(path).namelist())
    assert storage_locations(path) == {"cuda:0"}, "storages must carry the GPU tag the release has"
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert type(loaded) is OrderedDict and loaded._metadata[""] == {"version": 1}
    assert "model.diffusion_model.input_blocks.0" in loaded._metadata
    assert {v.dtype for v in loaded.values() if v.is_floating_point()} == {torch.float32}
    ids = loaded[POSITION_IDS]
    assert ids.dtype == torch.int64 and torch.equal(ids, torch.arange(77).unsqueeze(0))
    assert set(SCHEDULE_BUFFERS) <= set(loaded) and "logvar" in loaded
    assert OTHER not in split_components(loaded), "no EMA, optimizer or other state outside the networks"
    assert len(loaded) == len(official_inventory(CONFIG)) + 1  # + position_ids
    assert len(official_inventory(FULL)) + 1 == RELEASE_TENSORS  # the same layout at the official widths

    older = save_like_the_release(tmp_path / "older_torch.th", release, byteorder_record=False)
    assert not any(n.endswith("/byteorder") for n in zipfile.ZipFile(older).namelist())
    assert storage_locations(older) == {"cuda:0"}
    mapped = load_state_dict(older)  # memory-mapped, as the loaders open it
    assert all(torch.equal(mapped[k], v) for k, v in release.items())


@pytest.mark.parametrize("variant", RELEASE_VARIANTS)
def test_converter_reads_every_variant(release, variant, tmp_path, caplog):
    path = _save_variant(release, variant, tmp_path)
    with caplog.at_level(logging.WARNING, logger="xportrait"):
        assert main([str(path), str(tmp_path / "out"), "--dtype", "fp32"]) == 0
    written = {o: load_file(str(tmp_path / "out" / name)) for o, name in OUTPUT_FILES.items()}
    # Every variant gives the release's networks; the new CLIP layout only lacks position_ids,
    # which transformers stopped saving (ComfyUI builds it).
    source = {k: v for k, v in release.items() if variant != "current clip layout" or k != POSITION_IDS}
    for output, tensors in _expected_outputs(source).items():
        assert set(written[output]) == set(tensors), output
        for key, value in tensors.items():
            assert written[output][key].dtype == value.dtype, (output, key)
            assert torch.equal(written[output][key], value), (output, key)
    notes = _warnings(caplog)
    if variant == "training leftovers":
        assert len(notes) == 1 and all(name in notes[0] for name in LEFTOVERS), notes
    elif variant == "missing buffers":
        tables = sum(k.endswith("pos_encoder.pe") for k in release)
        assert len(notes) == 1, notes
        assert f"{len(SCHEDULE_BUFFERS)} noise-schedule buffer(s)" in notes[0] and "logvar" in notes[0]
        assert f"{tables} temporal position table(s)" in notes[0]
    else:
        assert notes == []


def test_a_missing_learned_weight_is_refused_even_when_buffers_are_rebuilt(release, tmp_path, capsys):
    state = release_variant(release, "missing buffers")
    gone = ["model.diffusion_model.output_blocks_motion_module.3.0.temporal_transformer.proj_in.weight",
            "cond_stage_model.transformer.text_model.encoder.layers.5.mlp.fc1.bias"]
    for key in gone:
        del state[key]
    path = save_like_the_release(tmp_path / "model_state-415001.th", state)
    out = tmp_path / "out"
    assert main([str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert "temporal" in err and "output_blocks_motion_module.3.0.temporal_transformer.proj_in.weight" in err
    assert "text_encoder" in err and "encoder.layers.5.mlp.fc1.bias" in err
    assert "pos_encoder.pe" not in err and "betas" not in err, "rebuilt buffers must not be reported missing"
    assert not out.exists() or not any(out.iterdir())


def test_rebuilt_buffers_equal_the_official_ones(tmp_path):
    """The parity fixture was written by the official code: its buffers are the reference."""
    official = PARITY / "xportrait_tiny.safetensors"
    if not official.exists():
        pytest.skip(f"parity fixture not found at {official} (it sits beside the repository in development and CI)")
    fixture = load_file(str(official))
    learned = {k: v for k, v in fixture.items() if k not in SCHEDULE_BUFFERS and not k.endswith("pos_encoder.pe")}
    rebuilt = missing_buffers(learned)
    assert set(rebuilt) == set(fixture) - set(learned)
    for key, value in rebuilt.items():
        assert value.dtype == fixture[key].dtype and value.shape == fixture[key].shape, key
        if key in SCHEDULE_BUFFERS:
            assert torch.equal(value, fixture[key]), key
        else:
            torch.testing.assert_close(value, fixture[key], atol=1e-6, rtol=0)

    # A converted temporal file (keys without prefix, read lazily) gets its tables under its own names.
    temporal = {k: v.contiguous() for k, v in split_components(learned)["temporal"].items()}
    save_file(temporal, str(tmp_path / "t.safetensors"), metadata={"xportrait.component": "temporal"})
    lazy = with_rebuilt_buffers(load_state_dict(tmp_path / "t.safetensors"), "t.safetensors")
    tables = [k for k in lazy if k.endswith("pos_encoder.pe")]
    assert len(tables) == sum(k.endswith("pos_encoder.pe") for k in fixture)
    assert all(not k.startswith("model.") for k in tables)
    assert split_components(lazy)["temporal"].shape(tables[0]) == tuple(fixture[official_key("temporal", tables[0])].shape)
    assert missing_buffers(split_components(fixture)["vae"]) == {}, "a file without a UNet gets no schedule"
