"""Run the example workflow (raw portrait + raw driving video -> full-resolution video) through a
real, headless ComfyUI server with this pack, and print where the video went. The graph is
workflows/api/xportrait_example_api.json, the API form of workflows/xportrait_example.json.

    scripts/run_example.sh [--tiny] [--portrait P --driving V --landmarks J] [--models-dir D] [--out D]

Inputs default to ../shared/assets (the official sample). Real weights are looked up in
--models-dir (default: the provisioned ComfyUI's models/xportrait); --tiny generates random
tiny weights in the official format instead and shrinks the working size so a CPU finishes in
about a minute.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness.graphs import tiny_version, use_landmark_file, without_previews  # noqa: E402
from harness.paths import ASSETS, CACHE, comfyui_dir  # noqa: E402
from harness.server import ComfyServer  # noqa: E402
from xportrait_core.face.detector import WEIGHTS as DETECTOR_WEIGHTS  # noqa: E402

REAL_MODEL = "model_state-415001.th"
TINY_MODEL = "xportrait_tiny_random.safetensors"
EXAMPLE_PROMPT = REPO / "workflows" / "api" / "xportrait_example_api.json"  # written by scripts/build_workflows.py


def make_tiny_models(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from xportrait_core.checkpoint.tiny import build_random_checkpoint
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / TINY_MODEL).exists():
        sd = build_random_checkpoint(seed=0)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / TINY_MODEL))
        context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(0))
        save_file({"context": context}, str(folder / TINY_MODEL.replace(".safetensors", ".empty_prompt.safetensors")))


def link_inputs(args, input_dir: Path) -> None:
    input_dir.mkdir(parents=True, exist_ok=True)
    for source, name in ((args.portrait, "source_image.png"), (args.driving, "driving_video.mp4"),
                         (args.landmarks, "landmarks.json")):
        source = Path(source).resolve()
        if not source.exists():
            raise SystemExit(f"input not found: {source} (pass --portrait/--driving/--landmarks)")
        target = input_dir / name
        if target.is_symlink() or target.exists():
            target.unlink()
        # A copy, not a link: ComfyUI refuses inputs that resolve outside its input folder.
        shutil.copyfile(source, target)


def prompt_for(args, detector_ready: bool) -> dict:
    """The example's API prompt without its previews (nobody looks at them in a headless run)."""
    prompt = without_previews(json.loads(EXAMPLE_PROMPT.read_text()))
    if args.landmarks_from_file or not detector_ready:
        use_landmark_file(prompt)
    if args.tiny:
        tiny_version(prompt, size=128, steps=4, model_file=TINY_MODEL)
    elif args.steps:
        next(n for n in prompt.values() if n["class_type"] == "KSampler")["inputs"]["steps"] = args.steps
    return prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="generated tiny weights, small working size (offline demo)")
    ap.add_argument("--portrait", default=ASSETS / "source_image.png")
    ap.add_argument("--driving", default=ASSETS / "driving_video.mp4")
    ap.add_argument("--landmarks", default=ASSETS / "landmarks.json",
                    help="landmarks JSON used when the detector's weights are absent (or with --landmarks-from-file)")
    ap.add_argument("--landmarks-from-file", action="store_true", help="always use --landmarks, not the detector")
    ap.add_argument("--models-dir", type=Path, help="folder holding model_state-415001.th (real run)")
    ap.add_argument("--steps", type=int, help="sampling steps for the real run (default: the workflow's 30)")
    ap.add_argument("--out", type=Path, default=CACHE / "example")
    args = ap.parse_args()

    work = args.out.resolve()
    models = work / "models" / "xportrait" if args.tiny else (args.models_dir or comfyui_dir() / "models" / "xportrait")
    if args.tiny:
        make_tiny_models(models)
    elif not (Path(models) / REAL_MODEL).exists():
        from xportrait_core.download import KNOWN_FILES
        url = KNOWN_FILES[REAL_MODEL].url
        raise SystemExit(f"{REAL_MODEL} is not in {models}. Fetch it from {url} into that folder "
                         f"(or `python -m xportrait_core.download --models-dir {Path(models).parent}`), "
                         "or run with --tiny for the offline demo.")
    link_inputs(args, work / "input")
    server = ComfyServer(work / "server", {"xportrait": str(models)}, input_dir=work / "input")
    started = time.time()
    server.start()
    try:
        print(f"[example] ComfyUI {comfyui_dir()} on {server.base}; running the workflow...", flush=True)
        detector_ready = any((Path(models) / "face" / w.name).exists() for w in DETECTOR_WEIGHTS.values())
        if not detector_ready:
            print(f"[example] no detector weights in {Path(models) / 'face'}: landmarks come from {args.landmarks}")
        prompt = prompt_for(args, detector_ready)
        run = server.run(prompt, timeout=6 * 3600, on_event=ProgressPrinter(prompt, started))
        if "rejected" in run:
            raise SystemExit(f"ComfyUI rejected the workflow: {json.dumps(run['rejected'], indent=1)[:4000]}")
        errors = [e for e in run["events"] if e["type"] == "execution_error"]
        if errors:
            raise SystemExit(f"the workflow failed: {errors[0]['data'].get('exception_message')}\n{server.log()}")
    finally:
        server.stop()
    videos = sorted(server.output_dir.rglob("*.webm"), key=lambda p: p.stat().st_mtime)
    if not videos:
        raise SystemExit(f"no video was written under {server.output_dir}\n{server.log()}")
    print(f"[example] wrote {videos[-1]} in {time.time() - started:.0f} s")


class ProgressPrinter:
    """Prints each node as it starts and the sampler's progress (one line per window or step)."""

    def __init__(self, prompt: dict, started: float):
        self.prompt, self.started, self.last = prompt, started, None

    def __call__(self, event: dict) -> None:
        data = event.get("data", {})
        if event["type"] == "executing" and data.get("node"):
            node = self.prompt.get(str(data["node"]), {}).get("class_type", data["node"])
            print(f"[example] {time.time() - self.started:6.0f} s  running {node}", flush=True)
        elif event["type"] == "progress":
            shown = (data.get("node"), data.get("value"), data.get("max"))
            if shown != self.last:
                self.last = shown
                print(f"[example] {time.time() - self.started:6.0f} s    {data.get('value')}/{data.get('max')}",
                      flush=True)


if __name__ == "__main__":
    main()
