#!/usr/bin/env bash
# Main job: set up (idempotent), then run workflows/api/xportrait_example_api.json through a headless
# ComfyUI and write the video. `--tiny` runs the same graph on generated tiny weights (offline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
exec "${XPORTRAIT_CACHE:-$ROOT/.cache}/venv/bin/python" "$ROOT/scripts/run_example.py" "$@"
