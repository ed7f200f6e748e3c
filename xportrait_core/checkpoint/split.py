"""Write a checkpoint's components as separate ``.safetensors`` files.

Output files (in the chosen folder):

- ``xportrait_base_sd15.safetensors``: the SD1.5 backbone in standard SD1.5 checkpoint layout
  (``model.diffusion_model.*`` without temporal keys, ``first_stage_model.*``,
  ``cond_stage_model.transformer.*`` when the source has a text encoder, and the DDPM buffers),
  so ComfyUI's own checkpoint loader reads it.
- ``xportrait_temporal.safetensors``: the 20 temporal modules, keys
  ``{input,output}_blocks_motion_module.*``.
- ``xportrait_reference_net.safetensors``: the appearance net without its unused ``input_hint_block``.
- ``xportrait_pose_controlnet.safetensors`` and ``xportrait_local_controlnet.safetensors``: the
  global and local motion ControlNets, bare LDM ControlNet keys.

Every file carries metadata ``xportrait.component``, ``xportrait.source_sha256``,
``xportrait.dtype`` and ``xportrait.format_version``. Parameters are cast to the chosen dtype;
buffers (schedule, positional encodings, position ids) keep their stored precision. Components
are written one tensor at a time from the (memory-mapped) source, never as a second full copy.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from .architecture import is_buffer
from .components import BASE, COMPONENT_META, dtype_of, official_key, shape_of, split_components
from .stream_writer import MappedFilePages, TensorEntry, write_safetensors

FORMAT_VERSION = "1"
OUTPUT_FILES = {
    BASE: "xportrait_base_sd15.safetensors",
    "temporal": "xportrait_temporal.safetensors",
    "reference_net": "xportrait_reference_net.safetensors",
    "pose_controlnet": "xportrait_pose_controlnet.safetensors",
    "local_controlnet": "xportrait_local_controlnet.safetensors",
}
BASE_PARTS = ("unet", "vae", "text_encoder", "buffers")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

#: progress(output name, bytes written so far, bytes of all outputs)
Progress = Callable[[str, int, int], None]


def plan_outputs(state_dict: Mapping, dtype: torch.dtype, outputs: Iterable[str] | None = None
                 ) -> dict[str, list[TensorEntry]]:
    """Output name -> the tensors it will hold, for every output whose components are present."""
    parts = split_components(state_dict)
    wanted = list(OUTPUT_FILES) if outputs is None else list(outputs)
    unknown = [o for o in wanted if o not in OUTPUT_FILES]
    if unknown:
        raise ValueError(f"unknown output(s) {unknown}; choose from {', '.join(OUTPUT_FILES)}")
    plan = {}
    for output in wanted:
        if output == BASE:
            if not parts.get("unet"):  # schedule buffers alone are no SD1.5 checkpoint
                continue
            sources = [(c, k, official_key(c, k)) for c in BASE_PARTS for k in parts.get(c, {})]
        else:
            sources = [(output, k, k) for k in parts.get(output, {})]
        if sources:
            plan[output] = [_entry(parts[c], c, key, name, dtype) for c, key, name in sources]
    return plan


def _entry(part: Mapping, component: str, key: str, name: str, dtype: torch.dtype) -> TensorEntry:
    stored = dtype_of(part, key)
    final = dtype if stored.is_floating_point and not is_buffer(component, key) else stored
    return TensorEntry(name, final, shape_of(part, key), lambda: part[key])


def write_components(state_dict: Mapping, out_dir: str | os.PathLike, dtype: str = "fp16",
                     outputs: Iterable[str] | None = None, source_sha256: str = "",
                     source_path: str | os.PathLike | None = None,
                     progress: Progress | None = None) -> dict[str, Path]:
    """Write the component files into `out_dir`; returns output name -> path written.

    `source_path` names the memory-mapped file the tensors come from, so its pages can be
    released as soon as each tensor is written.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_outputs(state_dict, DTYPES[dtype], outputs)
    if not plan:
        raise ValueError("nothing to write: the checkpoint holds none of the requested components")
    pages = MappedFilePages(source_path) if source_path else None
    total, done = sum(e.nbytes for entries in plan.values() for e in entries), 0
    written = {}
    for output, entries in plan.items():
        def advance(entry: TensorEntry, output: str = output) -> None:
            nonlocal done
            done += entry.nbytes
            if progress:
                progress(output, done, total)

        metadata = {COMPONENT_META: output, "xportrait.source_sha256": source_sha256,
                    "xportrait.dtype": dtype, "xportrait.format_version": FORMAT_VERSION}
        written[output] = write_safetensors(out_dir / OUTPUT_FILES[output], entries, metadata, advance, pages)
    return written
