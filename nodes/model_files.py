"""The `models/xportrait/` folder and the component cache.

Loaders accept either the original all-in-one file (`model_state-415001.th`), which is opened
once (memory-mapped, weights-only) and split by key prefix, or the per-component files written
by `python -m xportrait_core.convert`. Components are validated strictly before use.
"""
from __future__ import annotations

import os
import threading

import folder_paths


FOLDER = "xportrait"
EXTENSIONS = {".th", ".pt", ".pth", ".ckpt", ".safetensors", ".bin"}

_lock = threading.Lock()
_opened: dict[tuple, dict] = {}


def register_folder() -> None:
    """Register models/xportrait (extension-filtered; extra_model_paths.yaml may add paths)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[FOLDER]
        if default not in paths:
            paths.insert(0, default)
        folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | EXTENSIONS)
    else:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], set(EXTENSIONS))


def model_files() -> list[str]:
    return folder_paths.get_filename_list(FOLDER)


def resolve(name: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        folders = folder_paths.get_folder_paths(FOLDER)
        raise FileNotFoundError(f"X-Portrait model file '{name}' was not found in {folders}; put "
                                "model_state-415001.th (or the converted files) there")
    return path


def load_component(name: str, component: str) -> dict:
    """One validated component state dict (standard layout, prefixes stripped) from a file."""
    from ..xportrait_core.checkpoint import components as ckpt_components
    from ..xportrait_core.checkpoint import safe_load, validate

    path = resolve(name)
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _lock:
        parts = _opened.get(key)
        if parts is None:
            state = safe_load.load_state_dict(path)
            parts = ckpt_components.split_components(state)
            for stale in [k for k in _opened if k[0] == path]:
                del _opened[stale]
            _opened[key] = parts
    if component not in parts or not parts[component]:
        found = sorted(k for k, v in parts.items() if v)
        raise ValueError(f"'{name}' holds no {component.replace('_', ' ')} (it holds: {', '.join(found) or 'nothing'}); "
                         f"choose the X-Portrait file or the converted xportrait_{component}.safetensors")
    sd = parts[component]
    validate.validate_component(component, sd, source=name)
    return sd
