"""The ComfyUI interfaces that differ between the releases the pack supports, in one place.

Everything here is found by feature detection (an attribute, a parameter in a signature), never
by comparing version strings: forks, backports and the desktop builds carry their own numbers,
and a feature that exists is what matters. The floor is recorded as `requires-comfyui` in
pyproject.toml; CI runs the pack on it and on the current ComfyUI (README, *Install*).
"""
from __future__ import annotations

import functools
import inspect

import comfy.model_patcher


def core_model_patcher() -> type:
    """The patcher class ComfyUI itself wraps model weights in.

    `CoreModelPatcher` appeared in ComfyUI 0.12; on NVIDIA GPUs main.py later points it at the
    DynamicVRAM patcher at start-up, so it is read at call time rather than bound at import.
    Releases without it use ModelPatcher for the same job.
    """
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


@functools.lru_cache(maxsize=None)
def _takes_keyword(function, name: str) -> bool:
    """Whether `function` accepts the keyword argument `name` (named, or through **kwargs)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: do not guess it takes more
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def set_inference_dtype(model_config, dtype, manual_cast_dtype, device) -> None:
    """`model_config.set_inference_dtype`, telling it the load device where it can use it.

    The `device` keyword appeared in ComfyUI 0.28 (some model configs choose their layers by the
    device); older configs take the two dtypes only. The check is on the config's own class, so a
    model whose override lacks the keyword is called without it.
    """
    if _takes_keyword(type(model_config).set_inference_dtype, "device"):
        model_config.set_inference_dtype(dtype, manual_cast_dtype, device=device)
    else:
        model_config.set_inference_dtype(dtype, manual_cast_dtype)
