"""fp32 / fp16 / bf16 on a GPU against the official goldens (tiny parity model, ../shared/parity).

Prints relative L2 errors of one window's CFG eps (G3) and of the 4-step official sampler run
(G5 run a) for each weight dtype. fp32 runs with TF32 off, as the parity README asks.

    python bench/gpu_parity.py        (XPORTRAIT_SHARED=... if shared/ is elsewhere)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.inprocess import InProcessComfy  # noqa: E402
from harness.parity_rig import TinyRig  # noqa: E402
from harness.paths import PARITY  # noqa: E402
from harness.tiny_models import parity_inputs, rel_l2  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out_dir = tempfile.mkdtemp()
    InProcessComfy({}, out_dir, cpu=not torch.cuda.is_available())
    inp = parity_inputs()
    g3 = load_file(str(PARITY / "g3_unet_eps.safetensors"))
    g5 = load_file(str(PARITY / "g5_sampler.safetensors"))
    rows = []
    for dtype in ("fp32", "fp16", "bf16"):
        rig = TinyRig(dtype)
        pos, neg = rig.conditioning(inp["context"], (inp["hint"][:16], inp["local_hint"][:16]))
        record, _ = rig.sample(rig.patched(inp["z_ref"]), inp["x_t"], [501], pos, neg, cfg=5.0)
        g3_err = rel_l2(record["eps"][0], g3["eps_cfg5"])
        pos, neg = rig.conditioning(inp["context"], (inp["hint"], inp["local_hint"]))
        model = rig.patched(inp["z_ref"], mode="official", offsets=tuple(int(o) for o in inp["sampler_offsets_a"]))
        _, final = rig.sample(model, inp["sampler_x_T"], [751, 501, 251, 1], pos, neg, cfg=5.0,
                              final_sigma=rig.sigma(0))
        rows.append((dtype, g3_err, rel_l2(final, g5["sampler_a.final"])))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\n| weights ({device}) | G3 eps_cfg5 rel L2 | G5 run a final rel L2 |\n|---|---|---|")
    for dtype, a, b in rows:
        print(f"| {dtype} | {a:.2e} | {b:.2e} |")


if __name__ == "__main__":
    main()
