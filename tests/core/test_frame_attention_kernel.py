"""The fused frame-attention kernel computes softmax(q k^T / sqrt(d)) v like the matmul kernel.

The kernel itself is GPU code; Triton's interpreter (TRITON_INTERPRET=1, read when Triton is
imported) runs the same kernel source on CPU tensors, in a subprocess so this process's Triton
stays the compiling one. The H200 timings and errors are printed by bench/temporal_attention.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xportrait_core import attention_kernels, frame_attention_kernel as fak

ROOT = Path(__file__).resolve().parents[2]

# Runs under the interpreter: every case in the temporal module's own layout (q, k, v as
# transposed views of [batch, frames, heads * head_dim] projections), fp16 like the GPU path.
_INTERPRETED = r"""
import json, torch
from xportrait_core import attention_kernels, frame_attention_kernel as fak
from xportrait_core.temporal import TemporalModule

def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())

results = []
g = torch.Generator().manual_seed(0)
for batch, heads, frames, dim in ((5, 8, 16, 40), (3, 8, 16, 80), (2, 8, 16, 160), (3, 8, 8, 40),
                                  (2, 8, 24, 40), (7, 3, 1, 16), (9, 8, 13, 40)):
    def heads_first():
        t = torch.randn(batch, frames, heads * dim, generator=g).half()
        return t.view(batch, frames, heads, dim).transpose(1, 2)
    q, k, v = heads_first(), heads_first(), heads_first()
    exact = torch.softmax(q.double() @ k.double().transpose(-1, -2) * dim ** -0.5, -1) @ v.double()
    out = fak.launch(q, k, v)
    matmul = attention_kernels.short_sequence_attention(q, k, v)
    token_layout = out.transpose(1, 2).is_contiguous()
    results.append(dict(case=[batch, heads, frames, dim], shape=list(out.shape), dtype=str(out.dtype),
                        token_layout=token_layout, vs_exact=rel(out, exact), matmul_vs_exact=rel(matmul, exact)))

torch.library.opcheck(torch.ops.xportrait.frame_attention.default, (q, k, v),
                      test_utils=("test_schema", "test_faketensor"))

module = TemporalModule(320).requires_grad_(False)
for p in module.parameters():
    p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
module = module.half()
x = torch.randn(32, 320, 4, 4, generator=g).half()
fused = module(x, 16, fak.frame_attention)
matmul = module(x, 16, attention_kernels.short_sequence_attention)
exact = module.double()(x.double(), 16, None)
results.append(dict(case="temporal module", vs_exact=rel(fused, exact), matmul_vs_exact=rel(matmul, exact)))
print("RESULTS" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def interpreted():
    pytest.importorskip("triton", reason="the fused kernel is Triton code; without Triton the lever never runs it")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])


def test_kernel_matches_exact_attention_as_closely_as_the_matmul_kernel(interpreted):
    for case in interpreted:
        # fp16 inputs and output: both kernels round to ~3e-4; the fused one may not be worse.
        assert case["vs_exact"] < 1e-3, case
        assert case["vs_exact"] < 1.5 * case["matmul_vs_exact"] + 1e-4, case


def test_kernel_writes_the_token_layout_in_the_input_dtype(interpreted):
    for case in interpreted[:-1]:
        batch, heads, frames, dim = case["case"]
        assert case["shape"] == [batch, heads, frames, dim]
        assert case["dtype"] == "torch.float16"
        # [batch, frames, heads, dim] in memory: the module's reshape to tokens copies nothing.
        assert case["token_layout"], case


def test_kernel_runs_only_where_it_can():
    q = torch.randn(4, 8, 16, 40, dtype=torch.float16)
    assert not fak.fits(q, q, q)  # CPU tensors: the caller's kernel runs
    if torch.cuda.is_available():
        g = q.cuda()
        assert not fak.fits(g.float(), g.float(), g.float())  # fp32 would run tf32 dots: not exact enough
        assert not fak.fits(*(torch.randn(4, 8, 33, 40, device="cuda", dtype=torch.float16),) * 3)

