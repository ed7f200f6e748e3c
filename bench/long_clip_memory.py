"""Peak host memory (RSS) and time per frame of the example graph on long clips, tiny weights.

The example graph's nodes, with the sample portrait and the sample driving video repeated to N
frames (its 68-point landmarks repeated alongside, read by Load X-Portrait Landmarks instead of
detected, to keep the run short), one ddim step, VAE decode, Preview Image. The driving clip is
512x512; `--size` sets the working size (portrait, hints, output). Each clip length runs in its
own process (peak RSS only grows), in-process through ComfyUI's executor on the CPU, or the GPU
with --gpu. On the CPU at the working size 512, ComfyUI's attention (4,096 tokens against an
8,192-token reference bank) takes about 15 s per frame on two cores and its score matrices
dominate the peak, so CPU runs use `--size 128`: what the pack keeps per driving frame does not
depend on the working size. Prints, per N: peak RSS, the IMAGE batches ComfyUI holds anyway (the
repeated input and the cut input at 512x512x3 float32, the decoded output at the working size),
the rest ("pack and other"), seconds per frame, and the node during which the peak was reached
(with how far it rose above that node's starting RSS).

`--detect` runs only the detection branch instead: Detect Landmarks (stand-in random weights in
the released files' format) on the clip, shown with Preview Any. `--detection-chunk N` sets the
frames converted for the detector at a time; the clip length gives the whole-clip conversion of
earlier versions, for comparison.

    python bench/long_clip_memory.py [--frames 250 500 1000 1500] [--size 128] [--gpu]   (needs ../shared)
    python bench/long_clip_memory.py --detect --frames 100 200 [--detection-chunk 100000]
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))  # xportrait_core, which the harness's stand-in face weights use


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(frames: int, gpu: bool, size: int, detect: bool, detection_chunk: int | None) -> None:
    from harness.inprocess import InProcessComfy
    from harness.paths import SHARED
    from harness.tiny_models import PARITY_MODEL, populate_model_dir, write_stand_in_face_weights

    work = Path(tempfile.mkdtemp())
    model_dir = populate_model_dir(work / "models" / "xportrait")
    comfy = InProcessComfy({"xportrait": str(model_dir)}, str(work / "output"), cpu=not gpu)
    import folder_paths
    from comfy_execution.graph_utils import GraphBuilder

    assets = SHARED / "assets"
    inputs = Path(folder_paths.get_input_directory())
    inputs.mkdir(parents=True, exist_ok=True)
    for name in ("driving_video.mp4", "source_image.png"):
        shutil.copy(assets / name, inputs / name)
    marks = json.loads((assets / "landmarks.json").read_text())
    recorded = [f["lmk68"] if f["found"] else None for f in marks["driving"]["frames"]]
    (inputs / "bench_driving.json").write_text(json.dumps([recorded[i % len(recorded)] for i in range(frames)]))
    (inputs / "bench_source.json").write_text(json.dumps([marks["source"]["lmk68"]]))

    g = GraphBuilder(prefix="lc")
    video = g.node("GetVideoComponents", video=g.node("LoadVideo", file="driving_video.mp4").out(0))
    repeated = g.node("RepeatImageBatch", image=video.out(0), amount=math.ceil(frames / len(recorded)))
    driving_frames = g.node("ImageFromBatch", image=repeated.out(0), batch_index=0, length=frames)
    if detect:  # only the detection branch: Detect Landmarks on the clip, shown as text
        write_stand_in_face_weights(model_dir / "face")  # random: it may find no face, which is fine here
        if detection_chunk:
            from harness.parity_rig import pack_module
            pack_module("nodes.landmark_detection").DETECTION_CHUNK = detection_chunk
        marks_node = g.node("XPortraitDetectLandmarks", images=driving_frames.out(0), face="largest",
                            official_256=True, download_weights=False)
        g.node("PreviewAny", source=marks_node.out(0))
        report(comfy, g, frames, size, len(recorded), detect=True)
        return
    portrait = g.node("LoadImage", image="source_image.png")
    if size != 512:  # the working size: the portrait and Encode Driving's output; the clip stays 512x512
        portrait = g.node("ImageScale", image=portrait.out(0), upscale_method="bilinear", width=size, height=size,
                          crop="disabled")
    drive_marks = g.node("XPortraitLoadLandmarks", images=driving_frames.out(0), landmarks_file="bench_driving.json",
                         entry="driving")
    source_marks = g.node("XPortraitLoadLandmarks", images=portrait.out(0), landmarks_file="bench_source.json",
                          entry="driving")
    driving = g.node("XPortraitEncodeDriving", driving_frames=driving_frames.out(0), driving_landmarks=drive_marks.out(0),
                     source_landmarks=source_marks.out(0), best_frame=-1, landmark_smoothing=0.0, size=size, fps=12.0)
    load = {k: g.node(k, model_file=PARITY_MODEL, weight_dtype="fp32") for k in (
        "XPortraitLoadBaseModel", "XPortraitLoadTemporalModules", "XPortraitLoadReferenceNet",
        "XPortraitLoadMotionControlNet", "XPortraitLoadLocalControlNet")}
    base = load["XPortraitLoadBaseModel"]
    text = g.node("XPortraitEmptyPrompt", model_file=PARITY_MODEL)
    applied = g.node("XPortraitApply", model=base.out(0), temporal_modules=load["XPortraitLoadTemporalModules"].out(0),
                     reference_net=load["XPortraitLoadReferenceNet"].out(0), vae=base.out(1),
                     reference_image=portrait.out(0), reference_strength=1.0, window_mode="official",
                     window_length=16, window_overlap=4)
    control = g.node("XPortraitMotionControl", positive=text.out(0), negative=text.out(0),
                     motion_controlnet=load["XPortraitLoadMotionControlNet"].out(0),
                     local_controlnet=load["XPortraitLoadLocalControlNet"].out(0), driving=driving.out(0),
                     motion_strength=1.0, local_strength=1.0, start_percent=0.0, end_percent=1.0)
    start = g.node("XPortraitStartLatent", vae=base.out(1), source_image=portrait.out(0), driving=driving.out(0))
    sampled = g.node("KSampler", model=applied.out(0), seed=0, steps=1, cfg=5.0, sampler_name="ddim",
                     scheduler="ddim_uniform", positive=control.out(0), negative=control.out(1),
                     latent_image=start.out(0), denoise=1.0)
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampled.out(0), vae=base.out(1)).out(0))
    report(comfy, g, frames, size, len(recorded), detect)


def report(comfy, g, frames: int, size: int, recorded: int, detect: bool) -> None:
    prompt = g.finalize()
    before = rss_gib()
    # Where the peak happens: at each node start, the current RSS and the peak reached so far.
    marks: list[tuple[str, float, float]] = []

    class Watched(type(comfy.server)):
        # The executor announces each node only while a client is connected.
        client_id = property(lambda self: "bench", lambda self, value: None)

        def send_sync(self, event, data, sid=None):
            if event == "executing" and data.get("node"):
                marks.append((prompt[data["node"]]["class_type"], rss_gib(), peak_gib()))
            super().send_sync(event, data, sid)

    comfy.server.__class__ = Watched
    t0 = time.perf_counter()
    result = comfy.run(prompt)
    seconds = time.perf_counter() - t0
    if not result.success:
        raise SystemExit(result.error_text())
    marks.append(("(end)", rss_gib(), peak_gib()))
    per_node = [(marks[i][0], marks[i][1], marks[i + 1][2]) for i in range(len(marks) - 1)]
    print(json.dumps({"per_node": per_node}), file=sys.stderr)
    peak = marks[-1][2]
    # The node during which the peak was reached, and how far above its starting RSS it went.
    peak_node, peak_start, _ = next(n for n in per_node if n[2] >= peak)
    batch = frames * 512 * 512 * 3 * 4 / 2**30
    repeated_frames = math.ceil(frames / recorded) * recorded
    output = 0.0 if detect else frames * size * size * 3 * 4 / 2**30
    held = batch * (repeated_frames / frames) + batch + output  # repeated input, cut input, decoded output
    print(json.dumps({"frames": frames, "rss_before": before, "peak": peak, "image_batch": batch,
                      "comfyui_images": held, "rest": peak - before - held, "s_per_frame": seconds / frames,
                      "peak_node": peak_node, "peak_node_rise": peak - peak_start}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, nargs="+", default=[250, 500, 1000, 1500])
    ap.add_argument("--gpu", action="store_true", help="sample on the GPU (host RSS is still what is measured)")
    ap.add_argument("--size", type=int, default=512,
                    help="working size (portrait, hints, output); the driving clip stays 512x512. 128 makes a CPU "
                         "run take minutes instead of hours, without changing what the pack keeps per frame")
    ap.add_argument("--detect", action="store_true",
                    help="only the detection branch: Detect Landmarks (stand-in random weights) on the clip")
    ap.add_argument("--detection-chunk", type=int,
                    help="frames converted for the detector at a time (the pack's DETECTION_CHUNK by default; "
                         "the clip length gives the whole-clip conversion of earlier versions)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.gpu, args.size, args.detect, args.detection_chunk)
        return
    what = (f"Detect Landmarks only (official 256, detection chunk {args.detection_chunk or 'default'})" if args.detect
            else f"working size {args.size}, 1 ddim step, official 16/4 windows")
    print(f"\n{time.strftime('%Y-%m-%d')}, {'GPU' if args.gpu else 'CPU'}, tiny weights, 512x512 driving clip, {what}\n")
    print("| frames | peak RSS GiB | one IMAGE batch GiB | IMAGE batches ComfyUI holds GiB | rest GiB (pack, "
          "models, ComfyUI) | rest / IMAGE batch | s/frame | peak reached in (GiB above the node's start) |\n"
          "|---|---|---|---|---|---|---|---|")
    for n in args.frames:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--size", str(args.size)]
                             + (["--gpu"] if args.gpu else []) + (["--detect"] if args.detect else [])
                             + ([f"--detection-chunk={args.detection_chunk}"] if args.detection_chunk else []),
                             capture_output=True, text=True)
        line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
        if line is None:
            print(f"| {n} | failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]} | | | | | | |")
            continue
        r = json.loads(line)
        print(f"| {n} | {r['peak']:.2f} | {r['image_batch']:.2f} | {r['comfyui_images']:.2f} | {r['rest']:.2f} | "
              f"{r['rest'] / r['image_batch']:.2f} | {r['s_per_frame']:.3f} | {r['peak_node']} "
              f"(+{r['peak_node_rise']:.2f}) |", flush=True)


if __name__ == "__main__":
    main()
