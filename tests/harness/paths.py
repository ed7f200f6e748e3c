"""Where things are: the repository, ../shared, the provisioned ComfyUI and venv."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("XPORTRAIT_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "parity"
ASSETS = SHARED / "assets"
PACK_NAME = "comfyui-xportrait"  # the link scripts/setup_env.sh puts in ComfyUI/custom_nodes
CACHE = Path(os.environ.get("XPORTRAIT_CACHE", REPO / ".cache"))


def comfyui_dir() -> Path:
    """The ComfyUI tree set up by scripts/setup_env.sh (COMFYUI_PATH wins)."""
    explicit = os.environ.get("COMFYUI_PATH")
    if explicit:
        return Path(explicit).resolve()
    recorded = CACHE / "comfyui_path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    raise RuntimeError("No ComfyUI found: run `bash scripts/setup_env.sh` (or set COMFYUI_PATH)")
