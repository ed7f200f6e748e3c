"""What torch.compile (inductor) would gain per UNet building block, before wiring it in.

Times one forward of each block at X-Portrait's window shape (cond + uncond = 32 rows of
16 frames, fp16): the temporal module at 64x64 and 16x16, ComfyUI's own ResBlock at every width
(the 64x64 output blocks' 960-channel input included) and its SpatialTransformer at 64x64.
Prints eager ms, compiled ms, compile seconds and the compiled result's rel. L2 against eager,
per layout variant: NCHW always; channels-last weights and activations with --channels-last;
each of those with cuDNN's algorithm search with --cudnn-benchmark.

    python bench/block_compile.py --comfyui PATH [--channels-last] [--cudnn-benchmark]
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
                    help="also time each block with activations and conv weights in channels_last (NHWC)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="also time each variant with cuDNN's algorithm search (torch.backends.cudnn.benchmark)")
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
    for channels, size in ((320, 64), (1280, 16)):
        module = randomize(TemporalModule(channels).to("cuda", dt)).eval()
        x = torch.randn(rows, channels, size, size, device="cuda", dtype=dt)
        cases.append((f"temporal module {channels} ch {size}x{size}",
                      lambda m, x_: m(x_, frames, attention), module, (x,)))
    emb = torch.randn(rows, 1280, device="cuda", dtype=dt)
    # The UNet's ResBlocks at every width, the 64x64 output blocks' wider inputs included.
    for c_in, c_out, size in ((320, 320, 64), (960, 320, 64), (640, 640, 32), (1280, 1280, 16)):
        res = randomize(ResBlock(c_in, 1280, 0.0, out_channels=c_out, dtype=dt, device="cuda",
                                 operations=ops)).eval()
        cases.append((f"ResBlock {c_in}->{c_out} ch {size}x{size}", lambda m, x_, e: m(x_, e),
                      res, (torch.randn(rows, c_in, size, size, device="cuda", dtype=dt), emb)))
    st = randomize(SpatialTransformer(320, 8, 40, depth=1, context_dim=768, use_linear=False, dtype=dt,
                                      device="cuda", operations=ops)).eval()
    context = torch.randn(rows, 77, 768, device="cuda", dtype=dt)
    cases.append(("SpatialTransformer 320 ch 64x64", lambda m, x_, c: m(x_, context=c),
                  st, (torch.randn(rows, 320, 64, 64, device="cuda", dtype=dt), context)))

    variants = [("NCHW", False, False)]
    if args.channels_last:
        variants.append(("channels_last", True, False))
    if args.cudnn_benchmark:
        variants += [(f"{name} + cudnn.benchmark", cl, True) for name, cl, _ in list(variants)]
    print(f"\n{time.strftime('%Y-%m-%d')} {torch.cuda.get_device_name()} torch {torch.__version__}, fp16, "
          f"{rows} rows, compile mode {args.mode or 'default'}\n")
    print("| block | variant | eager ms | compiled ms | speed-up | compile s | rel. L2 vs eager NCHW |\n"
          "|---|---|---|---|---|---|---|")
    total_eager = total_compiled = 0.0
    with torch.inference_mode():
        for name, call, module, inputs in cases:
            reference = call(module, *inputs)
            for variant, channels_last, benchmark in variants:
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                module.to(memory_format=fmt)
                args_v = tuple(a.contiguous(memory_format=fmt) if a.ndim == 4 else a for a in inputs)
                torch.backends.cudnn.benchmark = benchmark
                eager_ms = timed(call, module, *args_v)
                torch._dynamo.reset()  # each variant compiles its own kernels
                compiled = torch.compile(call, mode=args.mode, dynamic=False)
                t0 = time.perf_counter()
                out = compiled(module, *args_v)
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - t0
                compiled_ms = timed(compiled, module, *args_v)
                err = float((out.float() - reference.float()).norm() / reference.float().norm())
                if variant == variants[0][0]:
                    total_eager += eager_ms
                    total_compiled += compiled_ms
                print(f"| {name} | {variant} | {eager_ms:.2f} | {compiled_ms:.2f} | {eager_ms / compiled_ms:.2f}x | "
                      f"{compile_s:.0f} | {err:.1e} |", flush=True)
            torch.backends.cudnn.benchmark = False
            module.to(memory_format=torch.contiguous_format)
    print(f"| all of the above | NCHW | {total_eager:.2f} | {total_compiled:.2f} | {total_eager / total_compiled:.2f}x "
          f"| | |")


if __name__ == "__main__":
    main()
