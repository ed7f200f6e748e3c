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


def load_comfy(comfy_dir: str):
    sys.path.insert(0, comfy_dir)
    import comfy.options
    comfy.options.enable_args_parsing(False)
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    for name in list(sys.modules):
        if name.endswith("/comfyui-xportrait"):
            return lambda sub: importlib.import_module(f"{name}.{sub}")
    raise SystemExit("the pack did not load into ComfyUI (is it linked into custom_nodes?)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--window-mode", default="official")
    args = ap.parse_args()

    pack = load_comfy(args.comfyui)
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sample
    import comfy.samplers
    tiny = pack("xportrait_core.checkpoint.tiny")
    arch = pack("xportrait_core.checkpoint.architecture")
    components = pack("xportrait_core.checkpoint.components")
    networks = pack("nodes.networks")
    temporal_mod = pack("xportrait_core.temporal")
    patch = pack("nodes.xportrait_patch")
    window = pack("nodes.window_sampling")
    control_mod = pack("nodes.motion_control")

    torch.backends.cuda.matmul.allow_tf32 = True
    dtype = networks.WEIGHT_DTYPES[args.dtype]
    t0 = time.perf_counter()
    parts = components.split_components(tiny.build_random_checkpoint(arch.FULL, seed=0, dtype=dtype))
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
    context = torch.randn(1, 77, 768, generator=g)

    torch.cuda.synchronize()
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
    t_sample = time.perf_counter()
    samples = comfy.sample.sample(patched, noise, args.steps, 5.0, "ddim", "ddim_uniform", positive, negative,
                                  start, denoise=1.0, disable_pbar=True, seed=0)
    torch.cuda.synchronize()
    t_decode = time.perf_counter()
    images = vae.decode(samples)
    torch.cuda.synchronize()
    t_end = time.perf_counter()
    peak = torch.cuda.max_memory_allocated() / 2**30
    assert torch.isfinite(images).all(), "non-finite output"

    rows = [("frames", n), ("steps (ddim_uniform)", args.steps), ("weights", args.dtype),
            ("random weights built (s)", f"{build_s:.1f}"),
            ("sampling (s)", f"{t_decode - t_sample:.1f}"), ("VAE decode (s)", f"{t_end - t_decode:.1f}"),
            ("total incl. encode (s)", f"{t_end - t_start:.1f}"),
            ("sampling s/frame", f"{(t_decode - t_sample) / n:.3f}"),
            ("total s/frame", f"{(t_end - t_start) / n:.3f}"), ("peak GPU memory (GiB)", f"{peak:.2f}"),
            ("device", torch.cuda.get_device_name())]
    width = max(len(k) for k, _ in rows)
    print("\n| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
