#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite against a real ComfyUI on CPU. tests/install/
# also builds (idempotent) the Manager-style installs beside the current and the floor ComfyUI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="${XPORTRAIT_CACHE:-$ROOT/.cache}/venv/bin/python"
cd "$ROOT"
set +e
"$PY" -m pytest tests -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
