"""X-Portrait Empty Prompt: CLIP("") from the text encoder inside an X-Portrait file, or a sidecar."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from harness.graphs import xportrait_graph


@pytest.fixture(scope="module")
def clip_model_file(comfy, tmp_path_factory):
    """A tiny X-Portrait file whose networks take 768-wide context and which carries a full-size
    random CLIP ViT-L/14 text encoder under the official `cond_stage_model.` prefix."""
    import folder_paths
    from xportrait_core.checkpoint.architecture import TINY
    from xportrait_core.checkpoint.tiny import build_random_checkpoint
    folder = tmp_path_factory.mktemp("xportrait_clip")
    sd = build_random_checkpoint(TINY.with_(context_dim=768), seed=3, with_text_encoder=True)
    assert any(k.startswith("cond_stage_model.transformer.") for k in sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "xportrait_tiny_clip.safetensors"))
    folder_paths.add_model_folder_path("xportrait", str(folder))
    return "xportrait_tiny_clip.safetensors"


def test_empty_prompt_encodes_with_the_files_text_encoder(comfy, clip_model_file):
    node = comfy.node_class("XPortraitEmptyPrompt")
    first = node.execute(model_file=clip_model_file).result[0]
    again = node.execute(model_file=clip_model_file).result[0]
    context = first[0][0]
    assert context.shape == (1, 77, 768) and torch.isfinite(context).all()
    assert context.std() > 0.1
    assert torch.equal(context, again[0][0])


def test_graph_with_text_encoder_file_runs(comfy, clip_model_file):
    prompt, ids = xportrait_graph(frames=2, steps=1, model_file=clip_model_file)
    result = comfy.run(prompt)
    assert result.success, result.error_text()


def test_file_without_text_encoder_or_sidecar_is_refused_clearly(comfy, tmp_path_factory):
    import folder_paths
    from xportrait_core.checkpoint.tiny import build_random_checkpoint
    folder = tmp_path_factory.mktemp("xportrait_no_clip")
    save_file({k: v.contiguous() for k, v in build_random_checkpoint(seed=4).items()},
              str(folder / "xportrait_tiny_noclip.safetensors"))
    folder_paths.add_model_folder_path("xportrait", str(folder))
    with pytest.raises(ValueError, match="holds no text encoder.*CLIP Text Encode"):
        comfy.node_class("XPortraitEmptyPrompt").execute(model_file="xportrait_tiny_noclip.safetensors")
