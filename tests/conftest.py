"""Session fixtures: a real ComfyUI (in-process and as a server) with the pack and tiny models."""
from __future__ import annotations

import pytest

from harness.paths import PARITY


def pytest_configure(config):
    config.addinivalue_line("markers", "server: runs a real ComfyUI HTTP server subprocess")


@pytest.fixture(scope="session")
def parity_available():
    if not PARITY.exists():
        pytest.skip(f"parity fixture not found at {PARITY} (it sits beside the repository in development and CI)")
    return PARITY


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, parity_available):
    from harness.tiny_models import populate_model_dir
    return populate_model_dir(tmp_path_factory.mktemp("models") / "xportrait")


@pytest.fixture(scope="session")
def comfy(model_dir, tmp_path_factory):
    from harness.inprocess import InProcessComfy
    return InProcessComfy({"xportrait": str(model_dir)}, str(tmp_path_factory.mktemp("output")))


@pytest.fixture(scope="session")
def comfy_server(model_dir, tmp_path_factory):
    from harness.server import ComfyServer
    server = ComfyServer(tmp_path_factory.mktemp("server"), {"xportrait": str(model_dir)}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rig(comfy):
    """The parity model's networks through the pack's glue (one per test module: patches stay local)."""
    from harness.parity_rig import TinyRig
    return TinyRig()


@pytest.fixture(scope="module")
def inp(parity_available):
    """The parity fixture's inputs (latents, hints, context, references)."""
    from harness.tiny_models import parity_inputs
    return parity_inputs()
