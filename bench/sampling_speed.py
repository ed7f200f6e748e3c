"""Full-size X-Portrait sampling speed and peak GPU memory through the pack's ComfyUI glue.

Random weights with the official architecture (SD1.5 UNet, 20 temporal modules, reference net,
two ControlNets, SD VAE), a 512x512 clip of N frames, KSampler-equivalent sampling (ddim,
ddim_uniform, cfg 5) and VAE decode. Prints a table: seconds per output frame, peak memory per
phase, effective TFLOP/s, the ratio to the official script's figure on the same GPU, and the
measured activation memory per batch row (the constant in nodes/memory_estimate.py).

    python bench/sampling_speed.py --comfyui PATH [--frames 60] [--steps 30] [--dtype fp16]
        [--no-attention-kernels] [--no-reuse-residuals] [--usable-gib N] [--comfy-flag=--lowvram]

`--usable-gib N` starts a second process that holds all but N GiB of the GPU before ComfyUI
starts, so the pack's process sees an N GiB card (its own CUDA context included).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path

import subprocess

import torch

import gpu_diagnostics as diagnostics

REPO = Path(__file__).resolve().parents[1]
#: The official script on one H200 with the same random weights (../shared/docs/performance-baseline.md).
OFFICIAL_S_PER_FRAME = 0.921
OFFICIAL_TOTAL_S_PER_FRAME = 0.971
#: Forward FLOPs of one frame through UNet + temporal modules + both ControlNets, cond and
#: uncond, with the reference net once per step (the same accounting as the baseline).
GFLOP_PER_FRAME_EVALUATION = 3174


def hold_gpu_except(usable_gib: float) -> subprocess.Popen:
    """A child process that keeps all but ``usable_gib`` of the GPU allocated until killed."""
    code = ("import sys, time, torch; free, total = torch.cuda.mem_get_info(); "
            f"keep = free - int({usable_gib} * 2**30); "
            "x = torch.empty(max(keep, 0), dtype=torch.uint8, device='cuda'); "
            "print('blocker holds', round(keep / 2**30, 2), 'GiB', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    print(child.stdout.readline().strip())
    return child


def enable_dynamic_vram() -> None:
    """What ComfyUI 0.30's main.py does on NVIDIA when comfy-aimdo works: dynamic weight patchers."""
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy_aimdo.control
    try:
        ok = comfy_aimdo.control.init_devices((d.index, 0) for d in mm.get_all_torch_devices())
    except TypeError:
        ok = comfy_aimdo.control.init_devices(d.index for d in mm.get_all_torch_devices())
    if not ok:
        raise SystemExit("comfy-aimdo did not initialise: DynamicVRAM unavailable here")
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True


def load_comfy(comfy_dir: str, cpu: bool, flags: list[str], reserve_vram: float | None, dynamic_vram: bool = False):
    """ComfyUI's core plus this pack alone (no other custom or extra nodes: fewer imports)."""
    sys.path.insert(0, comfy_dir)
    import comfy.options
    comfy.options.enable_args_parsing(False)
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu
    if reserve_vram is not None:
        comfy.cli_args.args.reserve_vram = reserve_vram
    for flag in flags:
        setattr(comfy.cli_args.args, flag.lstrip("-").replace("-", "_"), True)
    if dynamic_vram:
        enable_dynamic_vram()
    import nodes
    asyncio.run(nodes.load_custom_node(str(REPO)))
    for name in list(sys.modules):
        if name.endswith("/" + REPO.name) or name == REPO.name:
            return lambda sub: importlib.import_module(f"{name}.{sub}")
    raise SystemExit("the pack did not load into ComfyUI")


class NetworkTimer:
    """GPU time of the networks the pack calls from Python (ControlNets, reference net), by CUDA
    events around our own entry points; the rest of a step is the generation UNet + temporal
    modules. Only with --profile: the bench patches its own classes, never ComfyUI's."""

    def __init__(self):
        self.events: dict[str, list] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        plain = getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                return plain(*args, **kwargs)
            finally:
                end.record()
                timer.events.setdefault(label, []).append((start, end))

        setattr(owner, name, timed)

    def rows(self, total_s: float, calls: int) -> list[tuple[str, str]]:
        torch.cuda.synchronize()
        out = []
        for label, pairs in self.events.items():
            ms = sum(a.elapsed_time(b) for a, b in pairs)
            out.append((f"GPU time in {label} (ms per call, share)", f"{ms / calls:.1f} ({ms / 1000 / total_s:.0%}), "
                        f"{len(pairs)} invocations"))
        return out


class WindowMemory:
    """GPU memory each window needs on top of what is alive when it starts (weights, the clip's
    latents and sampler state): the allocator's peak since the previous window ended, minus what
    was allocated then. Read at the pack's own per-window hook; the allocator's counters need no
    GPU sync. With --window-memory only."""

    def __init__(self, window_state_class):
        self.start = torch.cuda.memory_allocated()
        self.needs: list[int] = []
        self.alive: list[int] = []
        plain = window_state_class.window_done
        meter = self

        def measured(state, *args, **kwargs):
            meter.needs.append(torch.cuda.max_memory_allocated() - meter.start)
            meter.start = torch.cuda.memory_allocated()
            meter.alive.append(meter.start)
            torch.cuda.reset_peak_memory_stats()
            return plain(state, *args, **kwargs)

        window_state_class.window_done = measured
        torch.cuda.reset_peak_memory_stats()

    def rows(self) -> list[tuple[str, str]]:
        gib = 2 ** 30
        return [("windows measured", len(self.needs)),
                ("largest need of one window above what was alive at its start (GiB)", f"{max(self.needs) / gib:.3f}"),
                ("median need of one window (GiB)", f"{sorted(self.needs)[len(self.needs) // 2] / gib:.3f}"),
                ("alive between windows, first / largest (GiB)",
                 f"{self.alive[0] / gib:.3f} / {max(self.alive) / gib:.3f}")]


def graph_replays(patched) -> int:
    """Calls of the timed run replayed from CUDA graphs (the lever's own counter)."""
    graphs = patched.model_options.get("transformer_options", {}).get("xportrait_cuda_graphs")
    return getattr(getattr(graphs, "replay", None), "replays", 0)


def print_table(rows: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    print("\n| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |", flush=True)


def random_weights(inventory: dict, dtype: torch.dtype, device: str) -> dict:
    """Fan-in-scaled random tensors for every key of a component (timing needs no trained values)."""
    g = torch.Generator(device=device).manual_seed(0)
    out = {}
    for key, shape in inventory.items():
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else shape[0]
        t = torch.randn(shape, generator=g, device=device, dtype=torch.float32) / fan_in ** 0.5
        out[key] = t.to(torch.float32 if key.endswith("pos_encoder.pe") else dtype).cpu()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--scheduler", default="ddim_uniform")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e4m3fn_fast"])
    ap.add_argument("--window-mode", default="official")
    ap.add_argument("--tiny", action="store_true", help="tiny widths on CPU: a dry run of the script itself")
    ap.add_argument("--no-attention-kernels", action="store_true", help="speed lever off: torch/ComfyUI's kernels")
    ap.add_argument("--no-reuse-residuals", action="store_true", help="speed lever off: ControlNets per window")
    ap.add_argument("--no-reuse-hint-features", action="store_true",
                    help="speed lever off: the ControlNets' hint encoder in every step")
    ap.add_argument("--compile", action="store_true", help="speed lever on: compiled UNet blocks (off by default)")
    ap.add_argument("--no-channels-last", action="store_true",
                    help="speed lever off: compiled networks keep NCHW conv weights (the lever needs --compile)")
    ap.add_argument("--no-frame-attention-kernel", action="store_true",
                    help="speed lever off: the temporal frame attention as batched matmuls, not one Triton kernel")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="speed lever on: UNet window calls and ControlNet batches replayed from CUDA graphs")
    modes = ap.add_mutually_exclusive_group()
    modes.add_argument("--separate-cond-uncond", dest="batch_cond_uncond", action="store_false", default=None,
                       help="cond and uncond as separate passes (default: the Speed Options default)")
    modes.add_argument("--batched-cond-uncond", dest="batch_cond_uncond", action="store_true",
                       default=None, help="cond and uncond in one batch")
    ap.add_argument("--warm-runs", type=int, default=0,
                    help="sampling runs before the timed one (compiling happens in the first)")
    ap.add_argument("--check-warm", action="store_true",
                    help="with --check-levers: time each other setting on a second run (the first may compile)")
    ap.add_argument("--check-levers", nargs="?", const="all", default=None,
                    help="sample again with each lever off (all, or comma-separated SpeedOptions fields) and "
                         "print the final latents' difference")
    ap.add_argument("--dynamic-vram", action="store_true",
                    help="ComfyUI's DynamicVRAM (comfy-aimdo), as its main.py enables it on NVIDIA by default")
    ap.add_argument("--usable-gib", type=float, help="simulate a card of this size with a blocker process")
    ap.add_argument("--reserve-vram", type=float, help="ComfyUI's --reserve-vram (GiB)")
    ap.add_argument("--memory-cap-gib", type=float, help="hard cap: torch.cuda.set_per_process_memory_fraction")
    ap.add_argument("--comfy-flag", action="append", default=[],
                    help="a boolean ComfyUI command-line flag to set, e.g. --comfy-flag=--lowvram")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of the sampling run")
    ap.add_argument("--stack-sample", action="store_true",
                    help="after the timed run, run again while sampling the Python stack: where the wall time "
                         "goes on the host (inclusive shares by function)")
    ap.add_argument("--profile-after", type=int, metavar="STEPS",
                    help="after the timed run, profile a separate run of STEPS steps (GPU busy share by kernel "
                         "kind) so that the timed run carries no profiler overhead")
    ap.add_argument("--memory-trace", action="store_true",
                    help="sample once more with torch's allocation history on and print what is alive at the peak")
    ap.add_argument("--compile-cache", help="torch.compile's portable cache (gzip): loaded before sampling if the "
                                            "file exists, written after the warm-up runs otherwise")
    ap.add_argument("--save-compile-cache", help="write the compile cache here after the warm-up runs, also when "
                                                 "--compile-cache loaded one (it then holds both)")
    ap.add_argument("--window-memory", action="store_true",
                    help="GPU memory per window above what is alive at its start (a run after the timed one)")
    ap.add_argument("--network-times", action="store_true",
                    help="GPU time of the ControlNets and the reference net (CUDA events; also with --profile)")
    args = ap.parse_args()

    blocker = hold_gpu_except(args.usable_gib) if args.usable_gib else None
    try:
        # ComfyUI's executor runs every node under inference mode; without it autograd would keep
        # the VAE decoder's activations (60 frames: >130 GiB, then ComfyUI's tiled fallback).
        with torch.inference_mode():
            run(args)
    finally:
        if blocker is not None:
            blocker.kill()


def run(args) -> None:
    if args.memory_cap_gib and not args.tiny:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total))
    pack = load_comfy(args.comfyui, cpu=args.tiny, flags=args.comfy_flag, reserve_vram=args.reserve_vram,
                      dynamic_vram=args.dynamic_vram)
    import comfy.sample
    import comfy.samplers
    arch = pack("xportrait_core.checkpoint.architecture")
    windows_core = pack("xportrait_core.windows")
    networks = pack("nodes.networks")
    patch = pack("nodes.xportrait_patch")
    window = pack("nodes.window_sampling")
    control_mod = pack("nodes.motion_control")
    speed_mod = pack("nodes.speed_options")

    torch.backends.cuda.matmul.allow_tf32 = True
    dtype = networks.WEIGHT_DTYPES[args.dtype]
    t0 = time.perf_counter()
    config, device = (arch.TINY, "cpu") if args.tiny else (arch.FULL, "cuda")
    parts = {name: random_weights(arch.expected_inventory(name, config), dtype, device)
             for name in ("unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet", "vae")}
    build_s = time.perf_counter() - t0
    model = networks.build_base_model(parts["unet"], args.dtype)
    vae = networks.build_vae(parts["vae"])
    temporal = networks.build_temporal_modules(parts["temporal"], args.dtype)
    reference_net = networks.build_reference_net(parts["reference_net"], args.dtype)
    pose = networks.build_controlnet(parts["pose_controlnet"], args.dtype)
    local = networks.build_controlnet(parts["local_controlnet"], args.dtype)
    del parts

    g = torch.Generator().manual_seed(0)
    n, s = args.frames, args.size
    portrait = torch.rand(1, s, s, 3, generator=g)
    frames = torch.rand(n, 3, s, s, generator=g) * 2 - 1
    local_hint = -torch.ones(n, 3, s, s)
    local_hint[:, :, s // 4: s // 2, s // 4: s // 2] = frames[:, :, s // 4: s // 2, s // 4: s // 2]
    context = torch.randn(1, 77, config.context_dim, generator=g)
    if args.batch_cond_uncond is None:
        args.batch_cond_uncond = speed_mod.SpeedOptions().batch_cond_uncond
    speed = speed_mod.SpeedOptions(attention_kernels=not args.no_attention_kernels,
                                   reuse_control_residuals=not args.no_reuse_residuals,
                                   compile_blocks=args.compile,
                                   reuse_hint_features=not args.no_reuse_hint_features,
                                   cuda_graphs=args.cuda_graphs, batch_cond_uncond=args.batch_cond_uncond,
                                   channels_last=not args.no_channels_last,
                                   frame_attention_kernel=not args.no_frame_attention_kernel)

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    peak = (lambda: torch.cuda.max_memory_allocated() / 2**30) if cuda else (lambda: float("nan"))
    reset = torch.cuda.reset_peak_memory_stats if cuda else (lambda: None)
    reset()
    t_start = time.perf_counter()
    latents = patch.encode_references(vae, model, portrait)
    patched = patch.apply_xportrait(model, temporal, reference_net, latents, 1.0,
                                    window.WindowOptions(args.window_mode, 16, 4), speed)
    control = control_mod.XPortraitMotionControl(pose, local, control_mod.MotionHints(frames, local_hint))
    positive = [[context, {"control": control}]]
    negative = [[context, {"control": control}]]
    start = vae.encode(portrait).repeat(n, 1, 1, 1)
    noise = comfy.sample.prepare_noise(start, 0)
    sync()
    encode_s, encode_peak = time.perf_counter() - t_start, peak()
    reset()
    def sample(model, steps=None):
        return comfy.sample.sample(model, noise, steps or args.steps, args.cfg, args.sampler, args.scheduler, positive,
                                   negative, start, denoise=1.0, disable_pbar=True, seed=0)

    cache_loaded = diagnostics.compile_cache_load(args.compile_cache)
    warm_s = []
    for _ in range(args.warm_runs):
        t_warm = time.perf_counter()
        sample(patched)
        sync()
        warm_s.append(time.perf_counter() - t_warm)
    cache_saved = (diagnostics.compile_cache_save(args.save_compile_cache) if args.save_compile_cache else
                   diagnostics.compile_cache_save(args.compile_cache)
                   if args.compile and args.warm_runs and cache_loaded == "none" else "not saved")
    reset()
    timer = None
    if (args.profile or args.network_times) and cuda:
        timer = NetworkTimer()
        timer.wrap(control_mod.XPortraitMotionControl, "_residuals", "ControlNets")
        # Around the cache lookup, outside any CUDA-graph recording (events must not be captured).
        timer.wrap(pack("nodes.reference_attention").ReferenceState, "projected_bank",
                   "reference net + bank projection")
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if args.profile else None
    replays_before = graph_replays(patched)
    t_sample = time.perf_counter()
    if profiler:
        profiler.__enter__()
    samples = sample(patched)
    sync()
    sampling_s = time.perf_counter() - t_sample
    if profiler:
        profiler.__exit__(None, None, None)
        print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=110))
    sampling_peak = peak()
    sampling_reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else float("nan")
    replays = graph_replays(patched) - replays_before
    resident = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")
    reset()
    t_decode = time.perf_counter()
    images = vae.decode(samples)
    sync()
    t_end = time.perf_counter()
    decode_peak = peak()

    calls = args.steps + (1 if args.sampler == "ddim" else 0)
    plan = (windows_core.official_windows(n, 0) if args.window_mode == "official"
            else windows_core.sliding_windows(n) if args.window_mode == "sliding" else [list(range(n))])
    # The per-evaluation figure counts cond and uncond; CFG 1 runs the conditional pass alone.
    evaluations = calls * sum(len(w) for w in plan) * (0.5 if args.cfg == 1.0 else 1.0)
    total_s = encode_s + sampling_s + (t_end - t_decode)  # warm-up runs excluded
    # Rows in one UNet call: cond + uncond together only when batched (and CFG needs both).
    rows_per_call = 2 * min(n, 16) if args.cfg != 1.0 and speed.batch_cond_uncond else min(n, 16)
    per_row = (sampling_peak - resident) * 2**30 / rows_per_call / (s // 8) ** 2 if cuda else float("nan")
    rows = [("date", time.strftime("%Y-%m-%d")),
            ("device", torch.cuda.get_device_name() if cuda else "cpu"),
            ("settings", f"{n} frames {s}x{s}, {args.sampler}/{args.scheduler} {args.steps} steps ({calls} calls), "
                         f"cfg {args.cfg}, windows {args.window_mode} 16/4, {args.dtype}"),
            ("levers", f"attention kernels {'on' if speed.attention_kernels else 'off'}, "
                       f"residual reuse {'on' if speed.reuse_control_residuals else 'off'}, "
                       f"compiled blocks {'on' if speed.compile_blocks else 'off'}"
                       f"{(' (channels-last ' + ('on' if speed.channels_last else 'off') + ')') if speed.compile_blocks else ''}, "
                       f"hint-feature reuse {'on' if speed.reuse_hint_features else 'off'}, "
                       f"CUDA graphs {'on' if speed.cuda_graphs else 'off'}, "
                       f"cond/uncond {'batched' if speed.batch_cond_uncond else 'separate passes'}"),
            ("calls replayed from CUDA graphs (UNet windows, ControlNet batches, reference net)", replays),
            ("untimed warm-up runs (s)", ", ".join(f"{w:.1f}" for w in warm_s) or "-"),
            ("ComfyUI weight patcher", type(model).__name__),
            ("memory limits", f"usable {args.usable_gib} GiB (blocker), reserve-vram {args.reserve_vram}, "
                              f"cap {args.memory_cap_gib}, flags {' '.join(args.comfy_flag) or '-'}"),
            ("random weights built (s)", f"{build_s:.1f}"),
            ("encode portrait + start (s) / peak GiB", f"{encode_s:.2f} / {encode_peak:.2f}"),
            ("sampling (s)", f"{sampling_s:.1f}"), ("VAE decode (s)", f"{t_end - t_decode:.2f}"),
            ("sampling s/frame", f"{sampling_s / n:.3f}"),
            ("  vs official 0.921 s/frame", f"{OFFICIAL_S_PER_FRAME / (sampling_s / n):.2f}x"),
            ("total s/frame (encode + sampling + decode)", f"{total_s / n:.3f}"),
            ("  vs official 0.971 s/frame", f"{OFFICIAL_TOTAL_S_PER_FRAME / (total_s / n):.2f}x"),
            ("effective TFLOP/s", f"{GFLOP_PER_FRAME_EVALUATION * evaluations / sampling_s / 1000:.0f}"),
            ("peak GPU memory, sampling (GiB)", f"{sampling_peak:.2f}"),
            ("peak GPU memory reserved by torch, sampling (GiB)", f"{sampling_reserved:.2f}"),
            ("resident after sampling (GiB)", f"{resident:.2f}"),
            ("activations per row and latent pixel (bytes)", f"{per_row:.0f}"),
            ("peak GPU memory, VAE decode (GiB)", f"{decode_peak:.2f}"),
            ("output finite", bool(torch.isfinite(images).all()))]
    if args.compile:
        rows.append(("compile cache", f"{cache_loaded}; {cache_saved}"))
    if timer is not None:
        rows += timer.rows(sampling_s, calls)
    print_table(rows)  # before the diagnostics, so a time limit during them keeps the timings
    rows = []
    try:  # a diagnostics failure must not lose the timings above
        if profiler:
            rows += diagnostics.kernel_categories(profiler, sampling_s)
        if args.profile_after and cuda:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as short:
                t_short = time.perf_counter()
                sample(patched, args.profile_after)
                sync()
                short_s = time.perf_counter() - t_short
            rows += [(f"profiled run of {args.profile_after} steps: {label}", value)
                     for label, value in diagnostics.kernel_categories(short, short_s) + diagnostics.idle_gaps(short)]
        if args.stack_sample:
            with diagnostics.StackSampler() as sampler:
                sample(patched)
                sync()
            rows += sampler.rows()
        if args.window_memory and cuda:
            meter = WindowMemory(window.WindowState)
            sample(patched)
            sync()
            rows += meter.rows()
        if args.memory_trace and cuda:
            del images
            with diagnostics.MemoryPeakTrace() as trace:
                sample(patched)
            rows += trace.rows()
    except Exception as error:  # noqa: BLE001 - reported in the table
        rows.append(("diagnostics failed", repr(error)[:300]))
    if rows:
        print_table(rows)

    if args.check_levers:
        # Each lever must compute what the plain path computes (only rounding may differ).
        def rel(a, b):
            return f"{float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)):.2e}"

        wanted = None if args.check_levers == "all" else set(args.check_levers.split(","))
        for label, off in (("attention kernels off", dict(attention_kernels=False)),
                           ("residual reuse off", dict(reuse_control_residuals=False)),
                           ("compiled blocks off", dict(compile_blocks=False)),
                           ("channels-last off", dict(channels_last=False)),
                           ("fused frame-attention kernel off", dict(frame_attention_kernel=False)),
                           ("hint-feature reuse off", dict(reuse_hint_features=False)),
                           ("CUDA graphs off", dict(cuda_graphs=False)),
                           ("cond/uncond in the other mode", dict(batch_cond_uncond=not speed.batch_cond_uncond)),
                           ("every lever off", dict(attention_kernels=False, reuse_control_residuals=False,
                                                    compile_blocks=False, reuse_hint_features=False,
                                                    cuda_graphs=False, frame_attention_kernel=False))):
            if off in (dict(compile_blocks=False), dict(channels_last=False)) and not speed.compile_blocks or \
                    off == dict(channels_last=False) and not speed.channels_last or \
                    off == dict(frame_attention_kernel=False) and not speed.frame_attention_kernel or \
                    off == dict(cuda_graphs=False) and not speed.cuda_graphs:
                continue
            if wanted is not None and not wanted & set(off):
                continue
            options = speed_mod.SpeedOptions(**{**speed.__dict__, **off})
            other = patch.apply_xportrait(model, temporal, reference_net, latents, 1.0,
                                          window.WindowOptions(args.window_mode, 16, 4), options)
            runs = 2 if args.check_warm else 1
            for _ in range(runs):
                t_other = time.perf_counter()
                other_samples = sample(other)
                sync()
            which = "second" if runs == 2 else "first"
            print(f"| final latent rel. L2, levers on vs {label} | {rel(samples, other_samples)} "
                  f"({(time.perf_counter() - t_other) / n:.3f} s/frame, {which} run of that setting) |", flush=True)


if __name__ == "__main__":
    main()
