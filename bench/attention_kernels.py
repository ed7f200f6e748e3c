"""Time and accuracy of each attention kernel on X-Portrait's attention shapes (GPU).

For every shape of the full-size model at 512x512 (spatial self-attention, reference-bank
attention with twice the keys, text cross-attention, 16-frame temporal attention) it times
PyTorch's SDPA backends one by one, ComfyUI's priority (FLASH first), and the pack's choice
(`xportrait_core.attention_kernels.attention`), and prints the rel. L2 error of each against
fp32 math. Prints a markdown table.

    python bench/attention_kernels.py [--dtype fp16]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xportrait_core import attention_kernels  # noqa: E402

# (name, batch, heads, query tokens, key tokens, head_dim): 16-frame window, cond + uncond = 32 rows.
SHAPES = [
    ("spatial 64x64", 16, 8, 4096, 4096, 40),
    ("bank 64x64", 16, 8, 4096, 8192, 40),
    ("cross 64x64", 32, 8, 4096, 77, 40),
    ("spatial 32x32", 16, 8, 1024, 1024, 80),
    ("bank 32x32", 16, 8, 1024, 2048, 80),
    ("spatial 16x16", 16, 8, 256, 256, 160),
    ("bank 16x16", 16, 8, 256, 512, 160),
    ("temporal 64x64", 2 * 4096, 8, 16, 16, 40),
    ("temporal 32x32", 2 * 1024, 8, 16, 16, 80),
    ("temporal 16x16", 2 * 256, 8, 16, 16, 160),
]

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
COMFY_PRIORITY = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                  SDPBackend.MATH]


def timed(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    args = ap.parse_args()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    g = torch.Generator(device="cuda").manual_seed(0)
    variants = {name: (lambda b: (lambda q, k, v: _with(b, q, k, v)))(b) for name, b in BACKENDS.items()}
    variants["comfy order"] = lambda q, k, v: _with(COMFY_PRIORITY, q, k, v, priority=True)
    variants["short-seq matmul"] = attention_kernels.short_sequence_attention
    variants["pack choice"] = attention_kernels.attention
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}; ms per call "
          "(rel. L2 vs fp32 math)\n")
    print("| shape | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for name, b, h, lq, lk, d in SHAPES:
        q = torch.randn(b, h, lq, d, device="cuda", generator=g, dtype=dtype)
        k = torch.randn(b, h, lk, d, device="cuda", generator=g, dtype=dtype)
        v = torch.randn(b, h, lk, d, device="cuda", generator=g, dtype=dtype)
        ref = None
        if b * h * lq * lk <= 2 ** 31:
            with sdpa_kernel([SDPBackend.MATH]):
                ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        cells = []
        for fn in variants.values():
            try:
                out = fn(q, k, v)
                err = "" if ref is None else f" ({float((out.float() - ref).norm() / ref.norm()):.1e})"
                cells.append(f"{timed(lambda: fn(q, k, v)):.3f}{err}")
            except RuntimeError as error:
                cells.append("n/a: " + str(error).split("\n")[0][:40])
        print(f"| {name} [{b}x{h}, {lq}x{lk}, d{d}] | " + " | ".join(cells) + " |")
        torch.cuda.empty_cache()


def _with(backends, q, k, v, priority=False):
    if not isinstance(backends, list):
        backends = [backends]
    with sdpa_kernel(backends, set_priority=True) if priority else sdpa_kernel(backends):
        return F.scaled_dot_product_attention(q, k, v)


if __name__ == "__main__":
    main()
