"""The converter: validated first, exact tensors out, one file per component, atomic writes."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from xportrait_core.checkpoint.architecture import SCHEDULE_BUFFERS, TINY
from xportrait_core.checkpoint.components import official_key, split_components
from xportrait_core.checkpoint.safe_load import load_state_dict
from xportrait_core.checkpoint.split import OUTPUT_FILES
from xportrait_core.checkpoint.stream_writer import MappedFilePages, TensorEntry, write_safetensors
from xportrait_core.checkpoint.tiny import build_random_checkpoint, save_official_th
from xportrait_core.checkpoint.validate import validate_checkpoint
from xportrait_core.convert import main

from harness.paths import SHARED  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)
TINY_FILE = SHARED / "parity" / "xportrait_tiny.safetensors"


def _converted(out_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {output: load_file(str(out_dir / name)) for output, name in OUTPUT_FILES.items()
            if (out_dir / name).exists()}


def _expected_outputs(source: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """What each output must hold, computed independently of the writer from official prefixes."""
    parts = split_components(source)
    base = {official_key(c, k): v for c in ("unet", "vae", "text_encoder", "buffers")
            for k, v in parts.get(c, {}).items()}
    return {"base_sd15": base, **{c: dict(parts[c]) for c in OUTPUT_FILES if c != "base_sd15"}}


def test_parity_checkpoint_converts_to_exact_fp32_components(tmp_path, capsys):
    if not TINY_FILE.exists():
        pytest.skip(f"parity fixture not found at {TINY_FILE} (it sits beside the repository in development and CI)")
    assert main([str(TINY_FILE), str(tmp_path), "--dtype", "fp32"]) == 0
    assert "hashing source" in capsys.readouterr().err
    source = load_file(str(TINY_FILE))
    written = _converted(tmp_path)
    expected = _expected_outputs(source)
    assert set(written) == set(OUTPUT_FILES)
    for output, tensors in expected.items():
        assert set(written[output]) == set(tensors), output
        for key, value in tensors.items():
            assert written[output][key].dtype == torch.float32
            assert torch.equal(written[output][key], value.float()), (output, key)
    assert not any(k.startswith("input_hint_block.") for k in written["reference_net"])
    assert "model.diffusion_model.out.2.weight" in written["base_sd15"] and "betas" in written["base_sd15"]
    assert not any("_motion_module" in k for k in written["base_sd15"])
    digest = hashlib.sha256(TINY_FILE.read_bytes()).hexdigest()
    for output, name in OUTPUT_FILES.items():
        with safe_open(str(tmp_path / name), framework="pt") as f:
            assert f.metadata() == {"xportrait.component": output, "xportrait.source_sha256": digest,
                                    "xportrait.dtype": "fp32", "xportrait.format_version": "1"}
        opened = load_state_dict(tmp_path / name)
        validate_checkpoint(opened, source=name)
        parts = split_components(opened)
        if output != "base_sd15":
            assert list(parts) == [output]
    assert not list(tmp_path.glob(".*partial"))


def test_fp16_and_bf16_cast_parameters_and_keep_buffers(tmp_path):
    source = build_random_checkpoint(TINY, seed=1, dtype=torch.float32, with_text_encoder=True)
    path = tmp_path / "model_state-415001.th"
    save_official_th(path, source)
    expected = _expected_outputs(source)
    for dtype, torch_dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        out = tmp_path / dtype
        assert main([str(path), str(out), "--dtype", dtype]) == 0
        written = _converted(out)
        for output, tensors in expected.items():
            for key, value in tensors.items():
                kept = key in SCHEDULE_BUFFERS or key.endswith("pos_encoder.pe")
                assert torch.equal(written[output][key], value if kept else value.to(torch_dtype)), (dtype, key)
        assert written["base_sd15"]["alphas_cumprod"].dtype == torch.float32
        assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in written["base_sd15"]


def test_component_subset_and_reconversion_of_a_component_file(tmp_path):
    path = tmp_path / "model_state-415001.th"
    save_official_th(path, build_random_checkpoint(TINY, seed=2))
    assert main([str(path), str(tmp_path / "a"), "--components", "temporal", "pose_controlnet"]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["xportrait_pose_controlnet.safetensors",
                                                                    "xportrait_temporal.safetensors"]
    temporal = tmp_path / "a" / "xportrait_temporal.safetensors"
    assert main([str(temporal), str(tmp_path / "b"), "--dtype", "fp32"]) == 0
    again = load_file(str(tmp_path / "b" / "xportrait_temporal.safetensors"))
    original = load_file(str(temporal))
    assert set(again) == set(original) and all(torch.equal(again[k], original[k].float()) for k in original)


def test_bad_input_exits_non_zero_with_the_reason_and_writes_nothing(tmp_path, capsys):
    state = {k: v for k, v in build_random_checkpoint(TINY).items()
             if k.startswith(("model.diffusion_model.", "first_stage_model.")) and "_motion_module" not in k}
    path = tmp_path / "v1-5-pruned.ckpt"
    torch.save(state, path)
    out = tmp_path / "out"
    assert main([str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: v1-5-pruned.ckpt is not a usable X-Portrait checkpoint" in err and "plain Stable Diffusion" in err
    assert not out.exists() or not any(out.iterdir())
    assert main([str(tmp_path / "absent.th"), str(out)]) == 2
    assert "absent.th does not exist" in capsys.readouterr().err


def test_streamed_file_is_atomic_and_readable(tmp_path):
    data = {"w": torch.randn(3, 4), "i": torch.arange(5), "flag": torch.tensor([True, False]), "s": torch.tensor(2.5)}
    entries = [TensorEntry(k, v.dtype, tuple(v.shape), lambda v=v: v) for k, v in data.items()]
    path = write_safetensors(tmp_path / "x.safetensors", entries, {"note": "hi"})
    loaded = load_file(str(path))
    assert set(loaded) == set(data) and all(torch.equal(loaded[k], v) for k, v in data.items())

    def broken():
        raise OSError("disk vanished")

    with pytest.raises(OSError, match="disk vanished"):
        write_safetensors(tmp_path / "y.safetensors", entries[:1] + [TensorEntry("z", torch.float32, (2,), broken)], {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_page_release_touches_only_the_mapped_source(tmp_path):
    path = tmp_path / "m.th"
    torch.save({"a": torch.arange(300_000, dtype=torch.float32)}, path)
    mapped = torch.load(path, mmap=True, weights_only=True)["a"]
    in_memory = torch.arange(300_000, dtype=torch.float32)
    pages = MappedFilePages(path)
    pages.release(in_memory)
    pages.release(mapped)
    assert torch.equal(in_memory, torch.arange(300_000, dtype=torch.float32))
    assert torch.equal(mapped, in_memory)  # released pages come back from the file
