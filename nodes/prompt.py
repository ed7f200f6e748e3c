"""The empty-prompt text context X-Portrait is conditioned on (the official code encodes only "")."""
from __future__ import annotations

import functools
import os

import safetensors.torch
import torch

import comfy.sd

from . import model_files


def sidecar_path(model_path: str) -> str:
    """`<model file without extension>.empty_prompt.safetensors` beside the model file."""
    return os.path.splitext(model_path)[0] + model_files.SIDECAR_SUFFIX


@functools.lru_cache(maxsize=4)
def _encode_with_text_encoder(model_file: str, stamp: tuple) -> torch.Tensor:
    text_sd = model_files.load_component(model_file, "text_encoder")
    plain = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in text_sd.items()}
    clip = comfy.sd.load_text_encoder_state_dicts([plain], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    return clip.encode_from_tokens(clip.tokenize("")).float().cpu()


def empty_prompt_context(model_file: str) -> torch.Tensor:
    """[1, 77, C] context of "" from the file's text encoder, else from its stored sidecar."""
    path = model_files.resolve(model_file)
    sidecar = sidecar_path(path)
    if os.path.isfile(sidecar):
        tensors = safetensors.torch.load_file(sidecar)
        context = tensors.get("context")
        if context is None or context.ndim != 3:
            raise ValueError(f"'{os.path.basename(sidecar)}' has no [1,77,C] 'context' tensor (keys {sorted(tensors)})")
        return context.float()
    if model_files.has_component(model_file, "text_encoder"):
        return _encode_with_text_encoder(model_file, model_files.open_file(model_file).stamp)
    raise ValueError(f"'{model_file}' holds no text encoder and there is no '{os.path.basename(sidecar)}' beside "
                     "it; choose the X-Portrait file, or use CLIP Text Encode with an empty text and an SD1.5 CLIP")
