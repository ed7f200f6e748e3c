"""Fixtures of the fresh-install tests: the pack installed as ComfyUI-Manager installs it beside
the current ComfyUI and beside the floor (harness/fresh_installs.py), and a real server on each."""
from __future__ import annotations

import pytest

from harness.fresh_installs import INSTALLS, Install, build


@pytest.fixture(scope="session", params=sorted(INSTALLS), ids=str)
def fresh(request) -> Install:
    """A fresh Manager-style install, current ComfyUI and floor (tests run once for each). An
    install that cannot be built fails the test: it is a broken promise, never a reason to skip."""
    install = INSTALLS[request.param]
    failure = build(install)
    if failure:
        pytest.fail(failure)
    return install


@pytest.fixture(scope="session")
def fresh_server(fresh, model_dir, tmp_path_factory):
    """That install's own python running its own ComfyUI's main.py, with the pack whitelisted."""
    from harness.server import ComfyServer
    server = ComfyServer(tmp_path_factory.mktemp(f"server-{fresh.comfyui}"), {"xportrait": str(model_dir)},
                         python=str(fresh.python), comfyui=fresh.comfy_dir).start()
    try:
        yield server
    finally:
        server.stop()
