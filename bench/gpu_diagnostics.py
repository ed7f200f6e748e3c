"""Where a sampling run's GPU time and GPU memory go: helpers for bench/sampling_speed.py.

- `kernel_categories`: torch.profiler's CUDA kernels summed by kind (GEMM, convolution,
  attention, inductor-fused, norms, copies, ...) and the GPU's busy share of the wall time.
- `MemoryPeakTrace`: records every CUDA allocation of a run (torch's memory history) and
  prints what was alive at the run's peak, grouped by the first Python line outside torch.
- `StackSampler`: where the main thread spends its wall time (a sampling profiler in a thread),
  by Python function, inclusive: what keeps the GPU waiting when it is not busy.
- `compile_cache_load` / `compile_cache_save`: torch.compile's portable cache, so a later bench
  process on the same GPU type skips most of the compiling (minutes of device time).
"""
from __future__ import annotations

import gzip
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

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


#: Idle gaps between GPU activities, by length (µs): launch gaps inside a graph are a few µs,
#: a host that falls behind leaves gaps of tens of µs to ms.
GAP_BINS_US = (5, 20, 100, 1000, 10_000)


def idle_gaps(profiler, top: int = 8) -> list[tuple[str, str]]:
    """Where the GPU sat idle: the time between consecutive kernels/copies, binned by gap
    length, and the longest gaps with the activity on either side."""
    spans = sorted((e.time_range.start, e.time_range.end, e.name) for e in profiler.events()
                   if str(getattr(e, "device_type", "")).endswith("CUDA"))
    if len(spans) < 2:
        return [("idle gaps", "no GPU activity recorded")]
    gaps, reach, last_name = [], spans[0][1], spans[0][2]
    for start, end, name in spans[1:]:
        if start > reach:
            gaps.append((start - reach, last_name, name))
        if end >= reach:
            reach, last_name = end, name
    total = sum(g for g, _, _ in gaps)
    rows = [("idle between GPU activities", f"{total / 1000:.0f} ms in {len(gaps)} gaps over "
             f"{(spans[-1][1] - spans[0][0]) / 1000:.0f} ms")]
    low = 0
    for high in GAP_BINS_US + (float("inf"),):
        inside = [g for g, _, _ in gaps if low <= g < high]
        label = f"{low}-{high} us" if high != float("inf") else f">= {low} us"
        rows.append((f"  idle in gaps of {label}", f"{sum(inside) / 1000:.0f} ms ({len(inside)} gaps)"))
        low = high
    for gap, before, after in sorted(gaps, reverse=True)[:top]:
        rows.append((f"  gap of {gap / 1000:.2f} ms", f"after {before[:60]} / before {after[:60]}"))
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


class StackSampler:
    """Samples the main thread's Python stack every ``interval`` seconds while active. Torch
    releases the GIL inside its ops, so a thread waiting on the GPU is seen at the waiting line."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.samples = 0
        self.inclusive: dict[str, int] = defaultdict(int)
        self.leaf: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._main = threading.main_thread().ident

    @staticmethod
    def _name(frame) -> str:
        code = frame.f_code
        return f"{'/'.join(code.co_filename.split('/')[-2:])}:{code.co_firstlineno} {code.co_name}"

    def _loop(self):
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main)
            if frame is None:
                continue
            self.samples += 1
            self.leaf[f"{self._name(frame)} (line {frame.f_lineno})"] += 1
            seen = set()
            while frame is not None:
                name = self._name(frame)
                if name not in seen:
                    seen.add(name)
                    self.inclusive[name] += 1
                frame = frame.f_back

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def rows(self, top: int = 30) -> list[tuple[str, str]]:
        n = max(1, self.samples)
        rows = [("stack samples", f"{self.samples} (every {self.interval * 1000:.0f} ms)")]
        # Frames on (nearly) every sample (the sampler loop and its callers) say nothing.
        inclusive = {k: v for k, v in self.inclusive.items() if v < 0.99 * n}
        for label, table in (("inclusive", inclusive), ("innermost line", self.leaf)):
            for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
                rows.append((f"  {label}: {name}", f"{count / n:.1%}"))
        return rows


#: The device tool returns files of at most 16 MiB, so the cache travels in parts of this size.
CACHE_PART_BYTES = 15 * 2**20


def _cache_parts(path: str) -> list[str]:
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        return []
    return sorted((os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(name + ".part")),
                  key=lambda f: int(f.rsplit("part", 1)[1]))


def compile_cache_load(path: str | None) -> str:
    """Loads `path` (gzip), or its parts `path.part0`, `path.part1`, ... joined in order."""
    if not path:
        return "none"
    parts = [path] if os.path.exists(path) else _cache_parts(path)
    if not parts:
        return "none"
    packed = b"".join(Path(part).read_bytes() for part in parts)
    blob = gzip.decompress(packed)
    torch.compiler.load_cache_artifacts(blob)
    return f"loaded {len(blob) / 2**20:.1f} MiB from {len(parts)} file(s)"


def compile_cache_save(path: str | None) -> str:
    """Saves the cache gzipped in parts `path.part0`, ... of at most CACHE_PART_BYTES each."""
    if not path:
        return "not saved"
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return "nothing to save"
    blob = saved[0]
    packed = gzip.compress(blob, compresslevel=9)
    for i in range(0, len(packed), CACHE_PART_BYTES):
        Path(f"{path}.part{i // CACHE_PART_BYTES}").write_bytes(packed[i:i + CACHE_PART_BYTES])
    return f"saved {len(blob) / 2**20:.1f} MiB ({len(packed) / 2**20:.1f} MiB gzipped, " \
           f"{-(-len(packed) // CACHE_PART_BYTES)} parts)"
