"""The `models/xportrait/` folder and the cache of opened model files.

Loaders accept either the original all-in-one file (`model_state-415001.th`) or the per-component
files written by `python -m xportrait_core.convert`. A file is opened once (weights only,
memory-mapped or lazy) and split by key prefix; every loader node that names it afterwards reuses
that split until the file's size or modification time changes. Components are validated strictly
before use. The converter's policy holds here too: keys outside every network are ignored and
missing schedule buffers or position tables are rebuilt, each with one warning per opening.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import folder_paths

from ..xportrait_core.checkpoint import rebuild, safe_load, validate
from ..xportrait_core.checkpoint.components import BASE, FileKind, identify, split_components
from ..xportrait_core.checkpoint.split import OUTPUT_FILES

FOLDER = "xportrait"
EXTENSIONS = {".th", ".pt", ".pth", ".ckpt", ".safetensors", ".bin"}
OFFICIAL_FILE = "model_state-415001.th"
COMPONENT_LABELS = {"unet": "UNet", "vae": "VAE", "temporal": "temporal modules", "reference_net": "reference net",
                    "pose_controlnet": "motion ControlNet", "local_controlnet": "local ControlNet",
                    "text_encoder": "text encoder", "buffers": "noise schedule"}


@dataclass(frozen=True)
class OpenedFile:
    """One model file split into its components, valid while the file keeps its `stamp`."""

    stamp: tuple[int, int]  # (size, mtime_ns)
    kind: FileKind
    parts: dict[str, Mapping]


_lock = threading.Lock()
_opened: dict[str, OpenedFile] = {}  # full path -> the file as split on first use


def register_folder() -> None:
    """Register models/xportrait (extension-filtered; extra_model_paths.yaml may add paths)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER in folder_paths.folder_names_and_paths:
        # A YAML entry read before the pack loaded registered the name with no extension filter.
        paths, exts = folder_paths.folder_names_and_paths[FOLDER]
        if default not in paths:
            paths.insert(0, default)
        folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | EXTENSIONS)
    else:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], set(EXTENSIONS))


SIDECAR_SUFFIX = ".empty_prompt.safetensors"  # stored empty-prompt embeddings, read beside a model file


def model_files() -> list[str]:
    """Model files offered by the loaders (the empty-prompt sidecars are not models)."""
    return [name for name in folder_paths.get_filename_list(FOLDER)
            if not name.endswith(SIDECAR_SUFFIX) and not name.replace("\\", "/").startswith("face/")]


def resolve(name: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        folders = folder_paths.get_folder_paths(FOLDER)
        raise FileNotFoundError(f"X-Portrait model file '{name}' was not found in {folders}; put "
                                f"{OFFICIAL_FILE} (or the converted files) there")
    return path


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def open_file(name: str) -> OpenedFile:
    """The named file, split into components; opened only on first use or after it changed."""
    path = resolve(name)
    with _lock:
        # Changed or deleted files are dropped, so their memory maps do not outlive them.
        for stale in [p for p, entry in _opened.items() if _stamp(p) != entry.stamp]:
            del _opened[stale]
        entry = _opened.get(path)
        if entry is None:
            stamp = _stamp(path)
            state = rebuild.with_rebuilt_buffers(safe_load.load_state_dict(path), name)
            entry = OpenedFile(stamp, identify(state), split_components(state))
            # Logged once per opening; the converter applies the same policy.
            validate.warn_about_extras(entry.parts, name)
            _opened[path] = entry
    return entry


def has_component(name: str, component: str) -> bool:
    """Whether a file holds a (non-empty) component, without validating it."""
    return bool(open_file(name).parts.get(component))


def load_component(name: str, component: str) -> Mapping:
    """One validated component state dict (standard layout, prefixes stripped) from a file."""
    opened = open_file(name)
    state_dict = opened.parts.get(component)
    if not state_dict:
        raise ValueError(_missing_message(name, component, opened))
    validate.validate_component(component, state_dict, source=name)
    return state_dict


def _converted_file(component: str) -> str:
    """The converter's output file that holds `component`."""
    return OUTPUT_FILES.get(component, OUTPUT_FILES[BASE])


def _missing_message(name: str, component: str, opened: OpenedFile) -> str:
    wanted = COMPONENT_LABELS.get(component, component)
    held = [COMPONENT_LABELS.get(c, c) for c, part in opened.parts.items() if part and c in COMPONENT_LABELS]
    advice = validate.ADVICE.get(opened.kind)
    return (f"'{name}' is {opened.kind.value}; it holds no {wanted} (it holds: {', '.join(held) or 'nothing usable'})."
            + (f" {advice}" if advice else "")
            + f" Choose {OFFICIAL_FILE} or the converted {_converted_file(component)}.")
