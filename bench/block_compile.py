"""What torch.compile (inductor) would gain per UNet building block, before wiring it in.

Times one forward of each block at X-Portrait's window shape (cond + uncond = 32 rows of
16 frames, fp16): the temporal module at each width, and ComfyUI's own ResBlock and
SpatialTransformer at 64x64. Prints eager ms, compiled ms, compile seconds and the compiled
result's rel. L2 against eager.

    python bench/block_compile.py --comfyui PATH
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, *args, repeat: int = 20) -> float:
    for _ in range(3):
        fn(*args)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat * 1000


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = max(1, p[0].numel()) if p.ndim > 1 else p.shape[0]
            p.copy_(torch.randn(p.shape, generator=g, device="cuda") / fan_in ** 0.5)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--mode", default=None, help="torch.compile mode (default: inductor's default)")
    ap.add_argument("--channels-last", action="store_true",
                    help="activations and conv weights in channels_last (NHWC) memory format")
    args = ap.parse_args()
    sys.path.insert(0, args.comfyui)
    import comfy.options
    comfy.options.enable_args_parsing(False)
    import comfy.ops
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
    from xportrait_core.attention_kernels import attention
    from xportrait_core.temporal import TemporalModule

    ops = comfy.ops.disable_weight_init
    dt, rows, frames = torch.float16, 32, 16
    cases = []
    for channels, size in ((320, 64), (640, 32), (1280, 16), (1280, 8)):
        module = randomize(TemporalModule(channels).to("cuda", dt)).eval()
        x = torch.randn(rows, channels, size, size, device="cuda", dtype=dt)
        cases.append((f"temporal module {channels} ch {size}x{size}",
                      lambda m, x_: m(x_, frames, attention), module, (x,)))
    emb = torch.randn(rows, 1280, device="cuda", dtype=dt)
    res = randomize(ResBlock(320, 1280, 0.0, out_channels=320, dtype=dt, device="cuda", operations=ops)).eval()
    cases.append(("ResBlock 320 ch 64x64", lambda m, x_, e: m(x_, e),
                  res, (torch.randn(rows, 320, 64, 64, device="cuda", dtype=dt), emb)))
    st = randomize(SpatialTransformer(320, 8, 40, depth=1, context_dim=768, use_linear=False, dtype=dt,
                                      device="cuda", operations=ops)).eval()
    context = torch.randn(rows, 77, 768, device="cuda", dtype=dt)
    cases.append(("SpatialTransformer 320 ch 64x64", lambda m, x_, c: m(x_, context=c),
                  st, (torch.randn(rows, 320, 64, 64, device="cuda", dtype=dt), context)))

    if args.channels_last:
        fmt = torch.channels_last
        cases = [(name, call, module.to(memory_format=fmt),
                  tuple(a.contiguous(memory_format=fmt) if a.ndim == 4 else a for a in inputs))
                 for name, call, module, inputs in cases]
    print(f"\n{time.strftime('%Y-%m-%d')} {torch.cuda.get_device_name()} torch {torch.__version__}, fp16, "
          f"{rows} rows, compile mode {args.mode or 'default'}, "
          f"{'channels_last' if args.channels_last else 'contiguous (NCHW)'}\n")
    print("| block | eager ms | compiled ms | speed-up | compile s | rel. L2 |\n|---|---|---|---|---|---|")
    total_eager = total_compiled = 0.0
    with torch.inference_mode():
        for name, call, module, inputs in cases:
            eager_ms = timed(call, module, *inputs)
            compiled = torch.compile(call, mode=args.mode, dynamic=False)
            t0 = time.perf_counter()
            out = compiled(module, *inputs)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            compiled_ms = timed(compiled, module, *inputs)
            ref = call(module, *inputs)
            err = float((out.float() - ref.float()).norm() / ref.float().norm())
            total_eager += eager_ms
            total_compiled += compiled_ms
            print(f"| {name} | {eager_ms:.2f} | {compiled_ms:.2f} | {eager_ms / compiled_ms:.2f}x | {compile_s:.0f} | "
                  f"{err:.1e} |", flush=True)
    print(f"| all of the above | {total_eager:.2f} | {total_compiled:.2f} | {total_eager / total_compiled:.2f}x | | |")


if __name__ == "__main__":
    main()
