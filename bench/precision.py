"""fp16 / bf16 / fp8 weights against fp32 at full size: one window's CFG-5 eps at t=991 and a 4-step run.

The issue's bound: the pack's fp16 window eps at t=991 within 5.2e-3 rel. L2 of its own fp32
(the official fp16 autocast's error against the official fp32 on the same random weights), and
the same order over a 4-step sampler run. Same random weights in every dtype (drawn in fp32,
then cast), the official 16-frame window, CFG 5, every speed lever on; fp32 with TF32 off.

    python bench/precision.py --comfyui PATH [--dtypes fp16 bf16 fp8_e4m3fn fp8_e4m3fn_fast]
"""
from __future__ import annotations

import argparse
import time

import torch

from sampling_speed import load_comfy, random_weights

#: The official script's fp16 autocast against its fp32 (../shared/docs/performance-baseline.md).
OFFICIAL_AUTOCAST_EPS = 5.17e-3
OFFICIAL_AUTOCAST_4_STEPS = 3.62e-3


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"])
    ap.add_argument("--run-frames", type=int, default=29, help="frames of the 4-step run (the baseline's 29)")
    ap.add_argument("--compile", action="store_true", help="with the compiled-blocks lever on")
    ap.add_argument("--tiny", action="store_true", help="tiny widths on CPU at 64x64: a dry run of the script")
    args = ap.parse_args()
    with torch.inference_mode():
        run(args)


def run(args) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pack = load_comfy(args.comfyui, cpu=args.tiny, flags=[], reserve_vram=None)
    import comfy.model_management as mm
    import comfy.sample
    import comfy.samplers
    arch = pack("xportrait_core.checkpoint.architecture")
    networks = pack("nodes.networks")
    patch = pack("nodes.xportrait_patch")
    window = pack("nodes.window_sampling")
    control_mod = pack("nodes.motion_control")
    speed_options = pack("nodes.speed_options").SpeedOptions

    names = ("unet", "temporal", "reference_net", "pose_controlnet", "local_controlnet", "vae")
    config, device, s = (arch.TINY, "cpu", 64) if args.tiny else (arch.FULL, "cuda", 512)
    master = {name: random_weights(arch.expected_inventory(name, config), torch.float32, device) for name in names}
    g = torch.Generator().manual_seed(0)
    n = args.run_frames
    portrait = torch.rand(1, s, s, 3, generator=g)
    frames = torch.rand(n, 3, s, s, generator=g) * 2 - 1
    local_hint = -torch.ones(n, 3, s, s)
    local_hint[:, :, s // 4: s // 2, s // 4: s // 2] = frames[:, :, s // 4: s // 2, s // 4: s // 2]
    context = torch.randn(1, 77, config.context_dim, generator=g)
    vae = networks.build_vae(dict(master["vae"]))
    start = vae.encode(portrait).repeat(n, 1, 1, 1)
    noise = comfy.sample.prepare_noise(start, 0)
    window_frames = 16

    def results(dtype: str):
        parts = {name: {k: v.to(networks.WEIGHT_DTYPES[dtype]) if not k.endswith("pos_encoder.pe") else v
                        for k, v in master[name].items()} for name in names[:-1]}
        model = networks.build_base_model(parts["unet"], dtype)
        patched = patch.apply_xportrait(model, networks.build_temporal_modules(parts["temporal"], dtype),
                                        networks.build_reference_net(parts["reference_net"], dtype),
                                        patch.encode_references(vae, model, portrait), 1.0,
                                        window.WindowOptions("official", 16, 4),
                                        # the fp32 reference is the plain path
                                        speed_options(compile_blocks=args.compile and dtype != "fp32"))
        nets = (networks.build_controlnet(parts["pose_controlnet"], dtype),
                networks.build_controlnet(parts["local_controlnet"], dtype))

        def conditioning(count):
            control = control_mod.XPortraitMotionControl(*nets, control_mod.MotionHints(frames[:count],
                                                                                      local_hint[:count]))
            return [[context, {"control": control}]], [[context, {"control": control}]]

        sampling = model.get_model_object("model_sampling")
        sigma_991 = sampling.sigma(torch.tensor(991.0)).reshape(1)
        seen = {}

        def remember(step, x0, x, total):
            seen.setdefault("eps", ((x - x0) / sigma_991.to(x.device)).float().cpu())

        # Euler from sigma(991) to 0: the callback sees the model input x and its denoised x0,
        # so eps = (x - x0) / sigma is exactly the window's CFG-5 prediction.
        sampler = comfy.samplers.sampler_object("euler")
        w = window_frames
        comfy.sample.sample_custom(patched, noise[:w], 5.0, sampler, torch.cat([sigma_991, sigma_991.new_zeros(1)]),
                                   *conditioning(w), start[:w], callback=remember, disable_pbar=True, seed=0)
        four = comfy.sample.sample(patched, noise, 4, 5.0, "ddim", "ddim_uniform", *conditioning(n), start,
                                   denoise=1.0, disable_pbar=True, seed=0)
        del patched, model, nets
        mm.unload_all_models()
        mm.soft_empty_cache()
        return seen["eps"], four.float().cpu()

    t0 = time.perf_counter()
    eps32, four32 = results("fp32")
    rows = [("date", time.strftime("%Y-%m-%d")), ("device", "cpu" if args.tiny else torch.cuda.get_device_name()),
            ("settings", f"{'tiny' if args.tiny else 'full-size'} random weights, {s}x{s}, CFG 5, levers on "
                         f"(compiled blocks {'on' if args.compile else 'off'}); "
                         f"eps: one official window of {window_frames} frames; 4-step ddim: {n} frames; "
                         "fp32 with TF32 off")]
    for dtype in args.dtypes:
        eps, four = results(dtype)
        rows.append((f"{dtype}: window eps at t=991, rel. L2 vs fp32", f"{rel_l2(eps, eps32):.2e} "
                     f"(official autocast {OFFICIAL_AUTOCAST_EPS:.2e})"))
        rows.append((f"{dtype}: {n}-frame 4-step ddim final latent, rel. L2 vs fp32", f"{rel_l2(four, four32):.2e} "
                     f"(official autocast {OFFICIAL_AUTOCAST_4_STEPS:.2e})"))
    rows.append(("wall time (s)", f"{time.perf_counter() - t0:.0f}"))
    print("\n| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
