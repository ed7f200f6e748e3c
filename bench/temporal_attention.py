"""Compiled 16-frame temporal attention: batched matmuls against formulations inductor can fuse.

Temporal attention is softmax(q k^T / sqrt(d)) v over 16 frames at a batch of up to 65,536
(positions x heads x clips). As two batched matmuls, each GEMM is 16 x 16 x d: cuBLAS runs it in
64x16 tiles, mostly empty, and the score matrix makes a round trip through memory. Written as
elementwise products and sums, inductor can generate its own kernels for it; the pack's
frame_attention_kernel does it in one Triton kernel. This script times,
under torch.compile, the attention alone on the temporal modules' q/k/v layout, and whole
temporal modules with each formulation, at every width of the UNet (cond + uncond = 32 rows of
16 frames, fp16, activations channels-last as the compiled run has them), and prints the rel. L2
error of each against fp32.

    python bench/temporal_attention.py [--all]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xportrait_core import attention_kernels, frame_attention_kernel  # noqa: E402
from xportrait_core.temporal import HEADS, TemporalModule  # noqa: E402

ROWS, FRAMES = 32, 16
WIDTHS = ((320, 64), (640, 32), (1280, 16), (1280, 8))


def gpu_ms(fn, *args, reps: int = 20) -> float:
    for _ in range(3):
        fn(*args)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def products_and_sums(q, k, v):
    """Scores and output as broadcast products reduced over one axis, fp32 throughout."""
    scores = (q.unsqueeze(-2).float() * k.unsqueeze(-3).float()).sum(-1) * q.shape[-1] ** -0.5
    weights = torch.softmax(scores, dim=-1)
    return (weights.unsqueeze(-1) * v.unsqueeze(-3).float()).sum(-2).to(q.dtype)


def unrolled_frames(q, k, v):
    """One reduction per key frame, then the weighted sum of the 16 value rows as a pointwise sum."""
    qf, scale = q.float(), q.shape[-1] ** -0.5
    scores = [(qf * k[..., j:j + 1, :].float()).sum(-1, keepdim=True) * scale for j in range(k.shape[-2])]
    peak = scores[0]
    for s in scores[1:]:
        peak = torch.maximum(peak, s)
    exps = [torch.exp(s - peak) for s in scores]
    total = exps[0]
    out = exps[0] * v[..., 0:1, :].float()
    for j in range(1, len(exps)):
        total = total + exps[j]
        out = out + exps[j] * v[..., j:j + 1, :].float()
    return (out / total).to(q.dtype)


VARIANTS = {
    "batched matmuls": attention_kernels.attention,
    "fused Triton kernel": frame_attention_kernel.frame_attention,
}
#: Formulations measured once (2026-12-03, H200) and slower than the Triton kernel; --all adds them.
INDUCTOR_FORMULATIONS = {
    "products and sums": products_and_sums,
    "unrolled frames": unrolled_frames,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--all", action="store_true", help="also the formulations written for inductor to fuse")
    args = ap.parse_args()
    variants = {**VARIANTS, **(INDUCTOR_FORMULATIONS if args.all else {})}
    dt = torch.float16
    g = torch.Generator(device="cuda").manual_seed(0)
    print(f"\n{time.strftime('%Y-%m-%d')} {torch.cuda.get_device_name()} torch {torch.__version__}, fp16, "
          f"{ROWS} rows of {FRAMES} frames, compiled (inductor default mode)\n")
    print("| part | width | formulation | ms | first call s | rel. L2 vs fp32 |\n|---|---|---|---|---|---|")
    with torch.inference_mode():
        for channels, size in WIDTHS:
            n, d = ROWS // FRAMES * size * size, channels // HEADS

            def heads_first(t):  # the module's layout: a transposed view of [n, frames, heads * d]
                return t.reshape(n, FRAMES, HEADS, d).transpose(1, 2)

            q, k, v = (heads_first(torch.randn(n, FRAMES, channels, device="cuda", generator=g, dtype=dt))
                       for _ in range(3))
            reference = torch.softmax(q.float() @ k.float().transpose(-1, -2) * d ** -0.5, -1) @ v.float()
            module = TemporalModule(channels).to("cuda", dt).eval()
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g, device="cuda") / max(1, p.shape[-1]) ** 0.5)
            x = torch.randn(ROWS, channels, size, size, device="cuda", generator=g, dtype=dt)
            x = x.contiguous(memory_format=torch.channels_last)
            module_ref = module.float()(x.float(), FRAMES, None)
            module.to(dt)
            for name, fn in variants.items():
                torch._dynamo.reset()
                # fullgraph: a graph break around the kernel would fail here instead of hiding.
                for part, call, inputs, ref in (
                        ("attention", torch.compile(fn, dynamic=False, fullgraph=True), (q, k, v), reference),
                        ("temporal module", torch.compile(lambda x_, f=fn: module(x_, FRAMES, f), dynamic=False,
                                                          fullgraph=True), (x,), module_ref),
                        ("temporal module, eager", lambda x_, f=fn: module(x_, FRAMES, f), (x,), module_ref)):
                    t0 = time.perf_counter()
                    out = call(*inputs)
                    torch.cuda.synchronize()
                    compile_s = time.perf_counter() - t0
                    print(f"| {part} | {channels} ch {size}x{size} | {name} | {gpu_ms(call, *inputs):.3f} | "
                          f"{compile_s:.0f} | {rel_l2(out, ref):.1e} |", flush=True)

        print("\n| bf16 check | width | fused Triton kernel rel. L2 vs fp32 | batched matmuls |\n|---|---|---|---|")
        for channels, size in WIDTHS[:2]:
            n, d = ROWS // FRAMES * size * size, channels // HEADS
            q, k, v = (torch.randn(n, HEADS, FRAMES, d, device="cuda", generator=g) for _ in range(3))
            reference = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, -1) @ v
            half = [t.bfloat16() for t in (q, k, v)]
            print(f"| bf16 | {channels} ch {size}x{size} | {rel_l2(frame_attention_kernel.frame_attention(*half), reference):.1e} "
                  f"| {rel_l2(attention_kernels.attention(*half), reference):.1e} |")


if __name__ == "__main__":
    main()
