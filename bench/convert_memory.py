"""Peak memory of `python -m xportrait_core.convert` on a full-size synthetic checkpoint.

    python bench/convert_memory.py [--scale S] [--dtype fp16] [--workdir DIR] [--keep]

Builds a ``.th`` file with the exact official key inventory (constant values; scale 1 is the
real 12.3 GB file), then converts it in a subprocess and prints that subprocess's peak resident
memory. The builder runs in its own subprocess and its peak is reported separately: `torch.save`
needs the whole dict at once, so its resident size nears the file size, but its parameters map
one shared sparse zero file, so little of that is private memory. Without `--scale` the largest
scale that fits the free memory and disk is chosen, and the report says so.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xportrait_core.checkpoint.architecture import FULL, XPortraitConfig  # noqa: E402
from xportrait_core.checkpoint.tiny import ddpm_schedule, official_inventory  # noqa: E402
from xportrait_core.temporal import sinusoidal_position_table  # noqa: E402

FILE_NAME = "model_state-415001.th"
CAST_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def scaled_config(scale: float) -> XPortraitConfig:
    """Every width times `scale`, kept a multiple of 8 (the official head count)."""
    def width(value: int) -> int:
        return max(8, round(value * scale / 8) * 8)
    return FULL.with_(model_channels=width(FULL.model_channels), context_dim=width(FULL.context_dim),
                      vae_ch=width(FULL.vae_ch))


def checkpoint_bytes(config: XPortraitConfig) -> int:
    return sum(4 * _numel(shape) for shape in official_inventory(config).values())


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def fits(config: XPortraitConfig, workdir: Path, dtype: str) -> tuple[bool, str]:
    size = checkpoint_bytes(config)
    disk_needed = size * (1 + CAST_BYTES[dtype] / 4) * 1.05
    memory_needed = 2e9  # torch itself plus one tensor being cast; the source is mapped, not loaded
    disk, memory = shutil.disk_usage(workdir).free, available_memory()
    reasons = []
    if disk < disk_needed:
        reasons.append(f"disk {disk / 1e9:.1f} GB free, {disk_needed / 1e9:.1f} GB needed")
    if memory < memory_needed:
        reasons.append(f"memory {memory / 1e9:.1f} GB available, {memory_needed / 1e9:.1f} GB needed")
    return not reasons, "; ".join(reasons)


def build(path: Path, scale: float) -> None:
    """The builder subprocess: every official key at `scale`, zeros for parameters.

    Each parameter maps the same sparse zero file privately, so `torch.save`, which needs the
    whole dict at once, reads shared page-cache pages instead of holding 12 GB of private memory.
    """
    import torch
    config = scaled_config(scale)
    inventory = official_inventory(config)
    schedule = ddpm_schedule()
    zeros = path.with_name("zeros.bin")
    largest = max(_numel(shape) for shape in inventory.values())
    with open(zeros, "wb") as f:
        f.truncate(4 * largest)
    state = {}
    for key, shape in inventory.items():
        if key in schedule:
            state[key] = schedule[key]
        elif key.endswith("pos_encoder.pe"):
            state[key] = sinusoidal_position_table(shape[2], shape[1])
        else:
            state[key] = torch.from_file(str(zeros), shared=False, size=_numel(shape)).view(shape)
    torch.save(state, path)
    zeros.unlink()


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def run_measured(command: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit status) of one child, measured for that child alone."""
    start = time.monotonic()
    child = subprocess.Popen(command, cwd=REPO)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # Linux reports KiB
    return time.monotonic() - start, peak, child.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float,
                        help="fraction of the official channel widths (default: the largest that fits)")
    parser.add_argument("--dtype", choices=list(CAST_BYTES), default="fp16")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint and outputs")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)  # the builder subprocess
    args = parser.parse_args()
    if args.build_only:
        build(args.build_only, args.scale)
        return 0

    scale, note = args.scale, "requested"
    if scale is None:
        scale, note = 1.0, "full size"
        ok, why = fits(scaled_config(scale), args.workdir, args.dtype)
        while not ok and scale > 0.1:
            scale = round(scale - 0.05, 2)
            ok, _ = fits(scaled_config(scale), args.workdir, args.dtype)
        if scale != 1.0:
            note = f"scaled down to fit ({why})"
    config = scaled_config(scale)
    work = Path(tempfile.mkdtemp(prefix="xportrait-bench-", dir=args.workdir))
    source, out = work / FILE_NAME, work / "converted"
    try:
        print(f"scale {scale} ({note}): model_channels {config.model_channels}, context_dim {config.context_dim}, "
              f"vae ch {config.vae_ch}; expected file {checkpoint_bytes(config) / 1e9:.2f} GB", flush=True)
        baseline = run_measured([sys.executable, "-c", "import torch, xportrait_core.convert"])
        built = run_measured([sys.executable, __file__, "--build-only", str(source), "--scale", str(scale)])
        if built[2] != 0:
            print(f"builder failed with status {built[2]}", file=sys.stderr)
            return 1
        converted = run_measured([sys.executable, "-m", "xportrait_core.convert", str(source), str(out),
                                  "--dtype", args.dtype])
        outputs = sum(p.stat().st_size for p in out.glob("*.safetensors")) if out.exists() else 0
        rows = [("python + torch import (baseline)", baseline, 0),
                ("build synthetic .th (torch.save)", built, source.stat().st_size),
                (f"convert to {args.dtype} (subprocess)", converted, outputs)]
        print(f"\n{'stage':<36} {'wall s':>8} {'peak RSS GB':>12} {'file GB':>9} {'status':>7}")
        for label, (wall, peak, status), size in rows:
            print(f"{label:<36} {wall:8.1f} {peak / 1e9:12.2f} {size / 1e9:9.2f} {status:>7}")
        print("\nThe builder's RSS counts its mapped zero-file pages once per tensor; they are shared, not private.")
        print(f"converter peak above the import baseline: {(converted[1] - baseline[1]) / 1e9:.2f} GB "
              f"for a {source.stat().st_size / 1e9:.2f} GB source")
        return converted[2]
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
