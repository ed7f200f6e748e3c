"""Tiny X-Portrait model files (official key format) for whole-graph tests on CPU."""
from __future__ import annotations

import contextlib
import contextvars
import os
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .paths import PARITY

PARITY_MODEL = "xportrait_tiny.safetensors"
CONTEXT_FILE = "xportrait_tiny.empty_prompt.safetensors"  # the sidecar X-Portrait Empty Prompt reads


def populate_model_dir(folder: Path) -> Path:
    """models/xportrait for tests: the parity fixture's tiny model and its text context (as the
    empty-prompt sidecar: the tiny model has no text encoder)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / PARITY_MODEL
    if not link.exists():
        link.symlink_to(PARITY / PARITY_MODEL)
    context = load_file(str(PARITY / "inputs.safetensors"))["context"].float()
    save_file({"context": context.contiguous()}, str(folder / CONTEXT_FILE))
    return folder


def write_stand_in_face_weights(folder: Path, seed: int = 0) -> None:
    """Random-weight S3FD and plain-weights 2D-FAN files under the released names in `folder`
    (models/xportrait/face/): Detect Landmarks loads them like the real ones."""
    from xportrait_core.face.fan_weights import PLAIN_FAN
    from xportrait_core.face.detector import WEIGHTS
    from xportrait_core.face.networks import FAN2D, S3FD
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(FAN2D().state_dict(), folder / PLAIN_FAN.name)
    torch.save(S3FD().state_dict(), folder / WEIGHTS["s3fd"].name)


def parity_inputs() -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(PARITY / "inputs.safetensors")).items()}


def rel_l2(mine: torch.Tensor, golden: torch.Tensor) -> float:
    mine, golden = mine.detach().double().cpu(), golden.detach().double().cpu()
    return float((mine - golden).norm() / golden.norm())


# --- Files shaped like the released model_state-415001.th -----------------------------------
#
# What the release is, from the official code and ByteDance's sibling training scripts: a bare
# `model.state_dict()` (an OrderedDict carrying `_metadata`) written by torch.save in the zip
# format from a GPU process, so every storage is tagged `cuda:0`; fp32; the CLIP text model of
# transformers 4.30 (keys under `transformer.text_model.`, with its int64 `position_ids` [1, 77]
# buffer); the 13 schedule buffers; no EMA or optimizer state. Torch before 2.1 wrote no
# `byteorder` record, so a variant without one is made as well.

RELEASE_VARIANTS = ("as released", "no byteorder", "training leftovers", "missing buffers", "current clip layout")
CLIP_OFFICIAL_ROOT = "cond_stage_model.transformer.text_model."
CLIP_CURRENT_ROOT = "cond_stage_model.transformer."  # transformers >= 4.31 drops the text_model level
POSITION_IDS = CLIP_OFFICIAL_ROOT + "embeddings.position_ids"
LEFTOVERS = {"model_ema.decay": lambda: torch.tensor(0.9999), "model_ema.num_updates": lambda: torch.tensor(415001),
             "lvlb_weights": lambda: torch.ones(1000), "scale_factor": lambda: torch.tensor(0.18215),
             "global_step": lambda: torch.tensor(415001)}

_storage_tag = contextvars.ContextVar("xportrait_test_storage_tag", default=None)
_tagger_registered = False


def _tag_as_gpu(storage) -> str | None:
    # Consulted by torch.save before its own taggers: inside `_saved_from` every storage gets the
    # chosen tag, exactly where torch would write "cuda:0" for a GPU tensor; outside, it stays out.
    return _storage_tag.get()


def _not_ours(storage, location):
    return None  # loading goes on to torch's own deserializers, so a cuda tag behaves as usual


@contextlib.contextmanager
def _saved_from(location: str):
    global _tagger_registered
    if not _tagger_registered:
        torch.serialization.register_package(1, _tag_as_gpu, _not_ours)
        _tagger_registered = True
    token = _storage_tag.set(location)
    try:
        yield
    finally:
        _storage_tag.reset(token)


def _module_metadata(keys) -> "OrderedDict[str, dict]":
    """`_metadata` as nn.Module.state_dict writes it: one entry per module path, root included."""
    metadata: OrderedDict[str, dict] = OrderedDict()
    for key in keys:
        parts = key.split(".")[:-1]
        for depth in range(len(parts) + 1):
            metadata.setdefault(".".join(parts[:depth]), {"version": 1})
    return metadata


def release_shaped_state(config, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """The release's layout at `config`'s widths: random fp32 weights from the tiny generator,
    the CLIP text model with its position ids, the schedule buffers; an OrderedDict with `_metadata`."""
    from xportrait_core.checkpoint.tiny import build_random_checkpoint
    state = OrderedDict(build_random_checkpoint(config, seed=seed, dtype=torch.float32, with_text_encoder=True))
    state[POSITION_IDS] = torch.arange(77, dtype=torch.int64).unsqueeze(0)
    state._metadata = _module_metadata(state)
    return state


def release_variant(state, variant: str) -> "OrderedDict[str, torch.Tensor]":
    """One of RELEASE_VARIANTS as a state dict (the byteorder variant differs only when saved)."""
    from xportrait_core.checkpoint.architecture import SCHEDULE_BUFFERS
    if variant in ("as released", "no byteorder"):
        out = OrderedDict(state)
    elif variant == "training leftovers":
        out = OrderedDict(state)
        out.update({k: make() for k, make in LEFTOVERS.items()})
    elif variant == "missing buffers":  # saved by code that registers them with persistent=False
        out = OrderedDict((k, v) for k, v in state.items() if k not in SCHEDULE_BUFFERS and not k.endswith(".pe"))
    elif variant == "current clip layout":  # position_ids is not persistent there any more
        out = OrderedDict((k.replace(CLIP_OFFICIAL_ROOT, CLIP_CURRENT_ROOT), v) for k, v in state.items()
                          if k != POSITION_IDS)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {RELEASE_VARIANTS}")
    out._metadata = _module_metadata(out)
    return out


def save_like_the_release(path, state, byteorder_record: bool = True, location: str = "cuda:0") -> Path:
    """torch.save's zip format with every storage tagged `location`; without the `byteorder`
    record when asked (torch always writes one now, so it is taken out of the archive afterwards)."""
    path = Path(path)
    with _saved_from(location):
        torch.save(state, path)
    if not byteorder_record:
        _drop_zip_record(path, "byteorder")
    return path


def _drop_zip_record(path: Path, record: str) -> None:
    """Rewrite a torch zip archive without one record. Every entry stays uncompressed with its data
    at a 64-byte boundary (padding in an extra field, as torch's writer does), so memory-mapped
    loading reads it like an original."""
    temporary = path.with_name(path.name + ".rewrite")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            if info.filename.split("/", 1)[-1] == record:
                continue
            data = source.read(info)
            entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            entry.compress_type = zipfile.ZIP_STORED
            header_end = target.fp.tell() + 30 + len(info.filename.encode()) + 4
            padding = -header_end % 64
            entry.extra = struct.pack("<HH", 0x4246, padding) + b"Z" * padding
            target.writestr(entry, data)
    os.replace(temporary, path)


def storage_locations(path) -> set[str]:
    """The location tags torch reads for the file's storages (through map_location's hook)."""
    seen: set[str] = set()

    def keep_on_cpu(storage, location):
        seen.add(location)
        return storage

    torch.load(path, map_location=keep_on_cpu, weights_only=True)
    return seen
