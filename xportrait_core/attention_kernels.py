"""Which fused attention kernel runs each of X-Portrait's attention shapes.

X-Portrait's SD1.5 layers have head sizes 40, 80 and 160. PyTorch's FlashAttention-2 kernels
only exist for head sizes that are multiples of 32/64, so a head size of 40 runs padded to 64:
40% of that kernel's work is wasted, and it was the single largest kernel of a sampling step on
Hopper. cuDNN's attention (Hopper only, in PyTorch's SDPA) handles 40/80/160 without padding.
Temporal attention is the opposite extreme: a sequence of 16 frames at a batch of ~65,000
(clips x positions x heads), where a fused kernel's per-tile set-up dominates and, among torch's
own kernels, the plain batched-matmul formulation is fastest. The pack's own Triton kernel for
it (``frame_attention_kernel``, its own lever) is faster still; this matmul formulation is its
fallback.

Measured on an H200 (bench/attention_kernels.py, fp16, 2026-12-01), ms per call:

| shape | FLASH (ComfyUI's first choice) | cuDNN | short-sequence matmul |
|---|---|---|---|
| self-attention 64x64, d40 | 2.15 | 1.15 | - |
| reference bank 64x64 (8192 keys), d40 | 4.22 | 2.24 | - |
| text cross-attention 64x64, d40 | 0.23 | 0.14 | - |
| self-attention 32x32, d80 | 0.18 | 0.11 | - |
| self-attention 16x16, d160 | 0.060 | 0.062 | - |
| temporal 64x64 (16 frames, batch 65,536), d40 | 1.43 | 1.05 | 0.57 |
| temporal 32x32, d80 | 0.30 | 0.35 | 0.18 |

So cuDNN for head sizes 40 and 80; head size 160 only occurs on 16x16 maps, where kernels take
tens of microseconds and choosing one costs more than it saves, so torch keeps that choice.

Every kernel here computes softmax(q k^T / sqrt(d)) v; only rounding differs between them. The
choice applies on CUDA in fp16/bf16 and falls back to torch's own choice everywhere else (CPU,
fp32, older GPUs, older torch), so the result on those is exactly torch's.
"""
from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F

from .row_chunks import in_row_chunks

#: Key/value lengths at or below this use the batched-matmul formulation (temporal attention).
SHORT_SEQUENCE = 32

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
    _HAS_PRIORITY = "set_priority" in inspect.signature(sdpa_kernel).parameters
except ImportError:  # pragma: no cover - very old torch: always torch's own choice
    SDPBackend = sdpa_kernel = None
    _HAS_PRIORITY = False


def _hopper_or_newer(device: torch.device) -> bool:
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 9


def unpadded_priority(q: torch.Tensor) -> list | None:
    """SDPA backends in order of preference for ``q`` ``[batch, heads, tokens, head_dim]``, or None
    to leave the choice to torch (and to whatever priority the host has set)."""
    if sdpa_kernel is None or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return None
    if q.shape[-1] % 64 == 0 or q.shape[-1] > 128 or not _hopper_or_newer(q.device):
        return None
    return [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _backend_context(priority):
    if priority is None:
        return contextlib.nullcontext()
    if _HAS_PRIORITY:
        return sdpa_kernel(priority, set_priority=True)
    return sdpa_kernel(priority)


#: Most bytes of ``q`` one short-sequence chunk covers. The matmul formulation copies the scaled
#: queries and the heads-first keys into contiguous batches; over a whole window of the widest
#: temporal module those copies took 512 MiB at a step's peak (bench --memory-trace).
SHORT_SEQUENCE_CHUNK_BYTES = 64 * 2**20


def short_sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             chunk_bytes: int | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v as two batched matmuls, with the softmax in fp32.

    For a handful of keys the score matrix is tiny, so this costs two GEMM launches and one
    softmax and needs no padding; the fp32 softmax keeps it as accurate as a fused kernel.
    Long batches run in chunks of whole batch entries (each is computed on its own), which
    bounds the temporaries without changing a value.
    """
    return in_row_chunks(_short_sequence_attention, (q, k, v), q[:1].numel() * q.element_size(),
                         chunk_bytes or SHORT_SEQUENCE_CHUNK_BYTES)


def _short_sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(weights, v)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention on ``[batch, heads, tokens, head_dim]`` with the kernel chosen for the shape."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and k.shape[-2] <= SHORT_SEQUENCE:
        return short_sequence_attention(q, k, v)
    with _backend_context(unpadded_priority(q)):
        return F.scaled_dot_product_attention(q, k, v)


def attention_tokens(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """The same for ComfyUI's token layout ``[batch, tokens, heads * head_dim]`` (in and out)."""
    batch, _, width = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, width // heads).transpose(1, 2)

    out = attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(batch, -1, width)
