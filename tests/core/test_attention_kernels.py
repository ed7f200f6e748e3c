"""The attention-kernel lever: every formulation computes softmax(q k^T / sqrt(d)) v, and off the
GPU the choice is exactly torch's own."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xportrait_core import attention_kernels as ak


def _qkv(batch, heads, lq, lk, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, n, d, generator=g, dtype=dtype) for n in (lq, lk, lk))


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_short_sequence_matmul_equals_sdpa():
    for d in (40, 80, 160):
        q, k, v = _qkv(64, 8, 16, 16, d)
        assert _rel(ak.short_sequence_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)) < 1e-6


def test_short_sequence_chunks_of_the_batch_change_no_value():
    q, k, v = _qkv(37, 8, 16, 16, 40, seed=2)
    whole = ak.short_sequence_attention(q, k, v, chunk_bytes=2**40)
    one_entry = q[:1].numel() * q.element_size()
    for entries in (1, 5, 36):
        chunked = ak.short_sequence_attention(q, k, v, chunk_bytes=entries * one_entry)
        assert chunked.shape == whole.shape
        assert _rel(chunked, whole) < 1e-7


def test_short_sequence_keeps_softmax_in_fp32_for_half_inputs():
    q, k, v = _qkv(32, 8, 16, 16, 40, seed=1)
    reference = F.scaled_dot_product_attention(q, k, v)
    half = ak.short_sequence_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert half.dtype == torch.bfloat16
    assert _rel(half, reference) < 2e-2


def test_cpu_falls_back_to_torch_exactly():
    for d in (40, 64, 160):
        q, k, v = _qkv(2, 8, 77, 77, d, seed=d)
        assert ak.unpadded_priority(q) is None
        assert torch.equal(ak.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_token_layout_round_trip():
    heads, d = 8, 40
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, n, heads * d, generator=g) for n in (64, 96, 96))
    out = ak.attention_tokens(q, k, v, heads)
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)
    reference = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(3, 64, heads * d)
    assert out.shape == (3, 64, heads * d)
    assert torch.equal(out, reference)
