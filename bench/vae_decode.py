"""VAE decode of a 512x512 clip on the GPU: peak memory and time per batch size, and which
settings avoid the out-of-memory that sends ComfyUI to its slow tiled fallback.

Each variant runs in its own process (cuDNN keeps per-process plan caches):
    python bench/vae_decode.py --comfyui PATH [--variant default|deterministic|wscap]
Without --variant it runs all of them and prints one table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling_speed import load_comfy, random_weights  # noqa: E402

VARIANTS = {"default": {}, "deterministic": {}, "wscap": {"CUDNN_CONV_WSCAP_DBG": "4096"}}
BATCHES = (16, 30, 60)


def one_variant(args) -> None:
    pack = load_comfy(args.comfyui, cpu=False, flags=[], reserve_vram=None)
    arch = pack("xportrait_core.checkpoint.architecture")
    networks = pack("nodes.networks")
    vae = networks.build_vae(random_weights(arch.expected_inventory("vae", arch.FULL), torch.float16, "cuda"))
    import comfy.model_management as mm
    mm.load_models_gpu([vae.patcher])
    latents = torch.randn(max(BATCHES), 4, 64, 64, device="cuda", dtype=vae.vae_dtype)
    for batch in BATCHES:
        flags = torch.backends.cudnn.flags(enabled=True, deterministic=args.variant == "deterministic")
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            with flags, torch.no_grad():
                vae.first_stage_model.decode(latents[:batch])
            torch.cuda.synchronize()
            result = f"{(torch.cuda.max_memory_allocated() - base) / 2**30:.2f} GiB, {time.perf_counter() - start:.2f} s"
        except torch.OutOfMemoryError:
            frame = traceback.extract_tb(sys.exc_info()[2])[-2]
            result = f"OOM in {Path(frame.filename).name}:{frame.lineno} `{frame.line}`"
        print(f"| {args.variant} | {batch} | {result} |", flush=True)
    # ComfyUI's own decode path (the pack's VAE chunks it).
    start = time.perf_counter()
    vae.decode(latents[:60])
    torch.cuda.synchronize()
    print(f"| {args.variant} | 60 via VAE.decode | {time.perf_counter() - start:.2f} s |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--variant", choices=list(VARIANTS))
    args = ap.parse_args()
    if args.variant:
        one_variant(args)
        return
    print("| variant | batch | peak above weights, time |\n|---|---|---|", flush=True)
    for name, env in VARIANTS.items():
        subprocess.run([sys.executable, __file__, "--comfyui", args.comfyui, "--variant", name],
                       env={**os.environ, **env}, check=False)


if __name__ == "__main__":
    main()
