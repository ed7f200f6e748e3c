"""Where a sampling run's GPU time and GPU memory go: helpers for bench/sampling_speed.py.

- `kernel_categories`: torch.profiler's CUDA kernels summed by kind (GEMM, convolution,
  attention, inductor-fused, norms, copies, ...) and the GPU's busy share of the wall time.
- `MemoryPeakTrace`: records every CUDA allocation of a run (torch's memory history) and
  prints what was alive at the run's peak, grouped by the first Python line outside torch.
- `compile_cache_load` / `compile_cache_save`: torch.compile's portable cache, so a later bench
  process on the same GPU type skips most of the compiling (minutes of device time).
"""
from __future__ import annotations

import gzip
import os
from collections import defaultdict

import torch

#: (category, substrings of the kernel name, lower-case); the first match wins.
KERNEL_KINDS = (
    ("attention", ("fmha", "flash", "cudnn_generated_fort_native_sdpa", "sdpa", "attention")),
    ("convolution", ("conv", "implicit_gemm", "dgrad", "wgrad", "xmma_fprop", "sm90_xmma_fprop")),
    ("GEMM", ("gemm", "cutlass", "cublas", "sm90_xmma", "matmul", "_mm_", "nvjet")),
    ("layout / copy", ("nchwtonhwc", "nhwctonchw", "copy", "transpose", "cat", "permute", "elementwise_kernel<128, 2")),
    ("norms", ("norm", "welford")),
    ("elementwise / reduce", ("elementwise", "reduce", "vectorized")),
)


def kernel_category(name: str) -> str:
    low = name.lower()
    if low.startswith("triton_"):  # inductor's fused kernels name the aten ops they fuse
        return "inductor fused: with a norm" if "norm" in low else "inductor fused: other"
    for category, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return category
    return "other"


def kernel_categories(profiler, wall_s: float) -> list[tuple[str, str]]:
    """Rows (category, 'ms (share)') over every CUDA kernel the profiler saw, plus GPU busy time."""
    per_kind: dict[str, float] = defaultdict(float)
    launches: dict[str, int] = defaultdict(int)
    for event in profiler.key_averages():
        device_us = getattr(event, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "self_cuda_time_total", 0)
        if not device_us:  # only CUDA activity is recorded, so every timed event is a kernel or a copy
            continue
        kind = "memcpy / memset" if event.key.startswith(("Memcpy", "Memset")) else kernel_category(event.key)
        per_kind[kind] += device_us / 1000
        launches[kind] += event.count
    busy = sum(per_kind.values())
    rows = [(f"GPU kernels: {kind}", f"{ms:.0f} ms ({ms / busy:.1%}), {launches[kind]} launches")
            for kind, ms in sorted(per_kind.items(), key=lambda kv: -kv[1])]
    rows.append(("GPU busy / wall", f"{busy:.0f} ms / {wall_s * 1000:.0f} ms ({busy / (wall_s * 1000):.1%})"))
    return rows


class MemoryPeakTrace:
    """Allocations alive at the peak of the traced region, by the Python line that made them."""

    def __init__(self, max_entries: int = 400_000):
        self.max_entries = max_entries
        self.baseline = 0

    def __enter__(self):
        torch.cuda.synchronize()
        self.baseline = torch.cuda.memory_allocated()
        torch.cuda.memory._record_memory_history(max_entries=self.max_entries, stacks="python")
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        return False

    @staticmethod
    def _site(frames) -> str:
        for frame in frames or ():
            name = frame.get("filename", "")
            if "/torch/" in name or name.startswith("<"):
                continue
            short = "/".join(name.split("/")[-2:])
            return f"{short}:{frame.get('line')} {frame.get('name')}"
        return "(torch internals / compiled code)"

    def rows(self, top: int = 25) -> list[tuple[str, str]]:
        events = self.snapshot["device_traces"][torch.cuda.current_device()]
        live: dict[int, tuple[int, str]] = {}
        current = peak = 0
        peak_live: dict[int, tuple[int, str]] = {}
        for event in events:
            action, addr, size = event["action"], event["addr"], event["size"]
            if action == "alloc":
                live[addr] = (size, self._site(event.get("frames")))
                current += size
                if current > peak:
                    peak, peak_live = current, dict(live)
            elif action in ("free_requested", "free_completed") and addr in live:
                current -= live.pop(addr)[0]
        by_site: dict[str, int] = defaultdict(int)
        for size, site in peak_live.values():
            by_site[site] += size
        gib = 2 ** 30
        rows = [("traced: resident before the run", f"{self.baseline / gib:.2f} GiB"),
                ("traced: peak above it (allocations made in the run)", f"{peak / gib:.2f} GiB, "
                 f"{len(peak_live)} tensors alive ({len(events)} events traced)")]
        for site, size in sorted(by_site.items(), key=lambda kv: -kv[1])[:top]:
            rows.append((f"  alive at peak: {site}", f"{size / 2**20:.0f} MiB"))
        return rows


def compile_cache_load(path: str | None) -> str:
    if not path or not os.path.exists(path):
        return "none"
    with gzip.open(path, "rb") as f:
        blob = f.read()
    torch.compiler.load_cache_artifacts(blob)
    return f"loaded {len(blob) / 2**20:.1f} MiB"


def compile_cache_save(path: str | None) -> str:
    if not path:
        return "not saved"
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return "nothing to save"
    blob = saved[0]
    with gzip.open(path, "wb", compresslevel=6) as f:
        f.write(blob)
    return f"saved {len(blob) / 2**20:.1f} MiB ({os.path.getsize(path) / 2**20:.1f} MiB gzipped)"
