"""Run by a fresh-install venv's own python (scripts/fresh_install.sh), not by pytest.

Loads that venv's ComfyUI in process with the pack, the way tests/harness/inprocess.py does for
the main suite, runs one tiny X-Portrait graph through ComfyUI's executor and prints one JSON
line with what the tests in this folder check. Only the standard library, the harness and what
ComfyUI's and the pack's requirements install may be imported here: that venv has nothing else.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

# The smallest graph that still runs every part of the pack: all five loaders, Empty Prompt,
# Apply X-Portrait, Motion Control, a 2-frame driving clip at 64x64 and one ddim step, decoded.
GRAPH = {"frames": 2, "steps": 1, "size": 64}


class _Collect(logging.Handler):
    """Keeps every warning and error ComfyUI logs while it loads nodes and runs the graph."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def _frame_stats(outputs: dict, node_id: str) -> list[dict]:
    import folder_paths
    import numpy as np
    from PIL import Image
    stats = []
    for item in outputs.get(node_id, {}).get("images", []):
        path = Path(folder_paths.get_directory_by_type(item["type"])) / item["subfolder"] / item["filename"]
        array = np.asarray(Image.open(path))
        stats.append({"shape": list(array.shape), "std": float(array.std())})
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--comfyui", required=True, help="the fresh install's ComfyUI folder")
    parser.add_argument("--models", help="a models/xportrait folder with the tiny model")
    parser.add_argument("--output", help="ComfyUI's output folder for this run")
    parser.add_argument("--print-prompt", metavar="OUTPUT_NODE",
                        help="only print the graph's API prompt ending in this node (for the HTTP test) "
                             "as {prompt, ids}, built by this ComfyUI's own GraphBuilder")
    args = parser.parse_args()
    os.environ["COMFYUI_PATH"] = args.comfyui  # harness.paths.comfyui_dir() reads it
    if args.print_prompt:
        sys.path.insert(0, args.comfyui)
        from harness.graphs import xportrait_graph
        prompt, ids = xportrait_graph(**GRAPH, output=args.print_prompt)
        print(json.dumps({"prompt": prompt, "ids": ids}))
        return
    if not (args.models and args.output):
        parser.error("--models and --output are needed to run the graph")
    collected = _Collect()
    logging.getLogger().addHandler(collected)

    from harness.inprocess import InProcessComfy
    from harness.paths import PACK_NAME
    comfy = InProcessComfy({"xportrait": args.models}, args.output)
    from comfyui_version import __version__ as comfyui_version
    import torch
    pack_dirs = [d for d in comfy.nodes.LOADED_MODULE_DIRS.values() if Path(d).name == PACK_NAME]
    registered = sorted(name for name, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items()
                        if str(getattr(cls, "RELATIVE_PYTHON_MODULE", "")).endswith(PACK_NAME))

    from harness.graphs import xportrait_graph
    prompt, ids = xportrait_graph(**GRAPH)
    result = comfy.run(prompt)
    report = {
        "comfyui_version": comfyui_version,
        "torch": torch.__version__,
        "python": sys.executable,
        "pack_dirs": pack_dirs,
        "registered": registered,
        "log": collected.lines,
        "success": result.success,
        "error": "" if result.success else result.error_text()[-4000:],
        "frames": _frame_stats(result.outputs, ids["output"]) if result.success else [],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
