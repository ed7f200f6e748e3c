"""Full-size X-Portrait sampling speed and peak GPU memory through the pack's ComfyUI glue.

Random weights with the official architecture (SD1.5 UNet, 20 temporal modules, reference net,
two ControlNets, SD VAE), a 512x512 clip of N frames, KSampler-equivalent sampling (ddim,
ddim_uniform, cfg 5) and VAE decode. Prints a table: seconds per output frame and peak memory.

    python bench/sampling_speed.py --comfyui PATH [--frames 60] [--steps 30] [--dtype fp16]
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load_comfy(comfy_dir: str, cpu: bool, flags: list[str]):
    sys.path.insert(0, comfy_dir)
    import comfy.options
    comfy.options.enable_args_parsing(False)
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu
    for flag in flags:
        setattr(comfy.cli_args.args, flag.lstrip("-").replace("-", "_"), True)
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    for name in list(sys.modules):
        if name.endswith("/comfyui-xportrait"):
            return lambda sub: importlib.import_module(f"{name}.{sub}")
    raise SystemExit("the pack did not load into ComfyUI (is it linked into custom_nodes?)")


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
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--window-mode", default="official")
    ap.add_argument("--tiny", action="store_true", help="tiny widths on CPU: a dry run of the script itself")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune convolutions")
    ap.add_argument("--comfy-flag", action="append", default=[],
                    help="a boolean ComfyUI command-line flag to set, e.g. --comfy-flag=--disable-dynamic-vram")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of the sampling run")
    args = ap.parse_args()

    pack = load_comfy(args.comfyui, cpu=args.tiny, flags=args.comfy_flag)
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sample
    import comfy.samplers
    arch = pack("xportrait_core.checkpoint.architecture")
    networks = pack("nodes.networks")
    temporal_mod = pack("xportrait_core.temporal")
    patch = pack("nodes.xportrait_patch")
    window = pack("nodes.window_sampling")
    control_mod = pack("nodes.motion_control")

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    dtype = networks.WEIGHT_DTYPES[args.dtype]
    t0 = time.perf_counter()
    config, device = (arch.TINY, "cpu") if args.tiny else (arch.FULL, "cuda")
    parts = {name: random_weights(arch.expected_inventory(name, config), dtype, device)
             for name in ("unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet", "vae")}
    build_s = time.perf_counter() - t0
    model = networks.build_base_model(parts["unet"], args.dtype)
    vae = networks.build_vae(parts["vae"])
    modules = temporal_mod.TemporalModuleSet.from_state_dict(parts["temporal"]).to(dtype).eval()
    temporal = comfy.model_patcher.ModelPatcher(modules, load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())
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

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_start = time.perf_counter()
    latents = patch.encode_references(vae, model, portrait)
    patched = patch.apply_xportrait(model, temporal, reference_net, latents, 1.0,
                                    window.WindowOptions(args.window_mode, 16, 4))
    control = control_mod.XPortraitMotionControl(pose, local, control_mod.MotionHints(frames, local_hint))
    positive = [[context, {"control": control}]]
    negative = [[context, {"control": control}]]
    start = vae.encode(portrait).repeat(n, 1, 1, 1)
    noise = comfy.sample.prepare_noise(start, 0)
    peak = (lambda: torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else (lambda: float("nan"))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if args.profile else None
    t_sample = time.perf_counter()
    if profiler:
        profiler.__enter__()
    samples = comfy.sample.sample(patched, noise, args.steps, 5.0, "ddim", "ddim_uniform", positive, negative,
                                  start, denoise=1.0, disable_pbar=True, seed=0)
    sync()
    t_decode = time.perf_counter()
    if profiler:
        profiler.__exit__(None, None, None)
        print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    sampling_peak = peak()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images = vae.decode(samples)
    sync()
    t_end = time.perf_counter()
    decode_peak = peak()

    rows = [("ComfyUI flags", " ".join(args.comfy_flag) or "(defaults)"), ("frames", n), ("steps (ddim_uniform)", args.steps), ("weights", args.dtype),
            ("random weights built (s)", f"{build_s:.1f}"),
            ("sampling (s)", f"{t_decode - t_sample:.1f}"), ("VAE decode (s)", f"{t_end - t_decode:.1f}"),
            ("total incl. encode (s)", f"{t_end - t_start:.1f}"),
            ("sampling s/frame", f"{(t_decode - t_sample) / n:.3f}"),
            ("total s/frame", f"{(t_end - t_start) / n:.3f}"), ("peak GPU memory, sampling (GiB)", f"{sampling_peak:.2f}"),
            ("peak GPU memory, VAE decode (GiB)", f"{decode_peak:.2f} (ComfyUI sizes decode batches to free memory)"),
            ("output finite", bool(torch.isfinite(images).all())),
            ("device", torch.cuda.get_device_name() if device == "cuda" else "cpu")]
    width = max(len(k) for k, _ in rows)
    print("\n| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
