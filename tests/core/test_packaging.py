"""Packaging: what ComfyUI-Manager installs (requirements.txt) agrees with pyproject.toml."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _names(lines):
    return {re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.lstrip().startswith("#")}


def test_requirements_txt_matches_pyproject_dependencies():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = (REPO / "requirements.txt").read_text().splitlines()
    assert _names(listed) == _names(declared)
    # VideoHelperSuite and most video packs install opencv-python; the headless wheel would be a
    # second owner of the same cv2 module.
    assert "opencv-python" in _names(listed) and "opencv-python-headless" not in _names(listed)
