"""Fixtures shared by the host-independent tests (no ComfyUI here)."""
from __future__ import annotations


import numpy as np
import pytest

from harness.paths import PARITY  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)

G6 = PARITY / "g6_preprocess.npz"


@pytest.fixture(scope="module")
def g6():
    """The official driving-preprocessing goldens (../shared/parity/g6_preprocess.npz)."""
    if not G6.exists():
        pytest.skip(f"G6 golden not found at {G6} (it sits beside the repository in development and CI)")
    return dict(np.load(G6))
