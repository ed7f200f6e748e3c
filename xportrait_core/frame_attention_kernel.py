"""The temporal modules' frame attention as one fused GPU kernel (Triton).

A temporal module attends over the 16 frames of a window at every spatial position and head:
up to 65,536 tiny attentions of 16 queries and 16 keys per call. As two batched matmuls
(``attention_kernels.short_sequence_attention``) each GEMM is 16 x 16 x head_dim, which cuBLAS
runs in mostly empty 64x16 tiles, and the scores make a round trip through memory between the
GEMMs and the softmax. Here one program loads the queries, keys and values of a few (position,
head) pairs once, keeps the 16 x 16 scores in registers with the softmax in fp32, and writes the
result straight into the token layout the module's output projection reads.

Used only where it can run: NVIDIA CUDA (Ampere or newer), fp16/bf16, Triton importable, at most ``MAX_FRAMES`` keys and
head size at most ``MAX_HEAD_DIM``; otherwise the caller's kernel runs. It is registered as a
torch custom op, so torch.compile'd blocks and CUDA-graph recordings treat it as one opaque call.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - missing (CPU-only, most Windows installs) or broken: the caller's kernel runs
    triton = tl = None

#: Longest frame axis the kernel takes (padded to 16 or 32 rows inside a program).
MAX_FRAMES = 32
#: Widest head the kernel takes (X-Portrait's are 40, 80 and 160).
MAX_HEAD_DIM = 256
_DTYPES = (torch.float16, torch.bfloat16)


if triton is not None:
    @triton.jit
    def _frame_attention(q_ptr, k_ptr, v_ptr, o_ptr, pairs, heads, frames, head_dim, scale,
                         q_sb, q_sh, q_sf, k_sb, k_sh, k_sf, v_sb, v_sh, v_sf, o_sb, o_sh, o_sf,
                         FRAMES_PAD: tl.constexpr, DIM_PAD: tl.constexpr, PAIRS_PER_PROGRAM: tl.constexpr):
        # (batch, head) pairs with the head fastest: a program's loads share cache lines, because
        # the heads of one position sit next to each other in the projection's output.
        pair = tl.program_id(0).to(tl.int64) * PAIRS_PER_PROGRAM + tl.arange(0, PAIRS_PER_PROGRAM)
        b = (pair // heads)[:, None, None]
        h = (pair % heads)[:, None, None]
        f = tl.arange(0, FRAMES_PAD)[None, :, None]
        d = tl.arange(0, DIM_PAD)[None, None, :]
        mask = (pair < pairs)[:, None, None] & (f < frames) & (d < head_dim)
        q = tl.load(q_ptr + b * q_sb + h * q_sh + f * q_sf + d, mask=mask, other=0.0)
        k = tl.load(k_ptr + b * k_sb + h * k_sh + f * k_sf + d, mask=mask, other=0.0)
        v = tl.load(v_ptr + b * v_sb + h * v_sh + f * v_sf + d, mask=mask, other=0.0)
        scores = tl.dot(q, tl.trans(k, 0, 2, 1)) * scale  # [pairs, query frame, key frame], fp32
        key = tl.arange(0, FRAMES_PAD)[None, None, :]
        scores = tl.where(key < frames, scores, float("-inf"))
        weights = tl.exp(scores - tl.max(scores, axis=2)[:, :, None])
        weights = weights / tl.sum(weights, axis=2)[:, :, None]
        out = tl.dot(weights.to(v.dtype), v)
        tl.store(o_ptr + b * o_sb + h * o_sh + f * o_sf + d, out.to(o_ptr.dtype.element_ty), mask=mask)


def _padded(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _output_like(q: torch.Tensor) -> torch.Tensor:
    """The kernel's result buffer, for the kernel and for torch.compile's fake tensors alike."""
    batch, heads, frames, head_dim = q.shape
    return q.new_empty(batch, frames, heads, head_dim).transpose(1, 2)


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Run the kernel on ``[batch, heads, frames, head_dim]`` tensors (head_dim contiguous).

    The result is ``[batch, heads, frames, head_dim]`` viewed from a ``[batch, frames, heads,
    head_dim]`` buffer: the layout the temporal module reshapes into tokens without a copy."""
    batch, heads, frames, head_dim = q.shape
    out = _output_like(q)
    frames_pad, dim_pad = _padded(frames), _padded(head_dim)
    # Tiles of about 8,192 elements (8 pairs at 16 frames x 64 columns) keep q, k, v, the scores
    # and the fp32 result in a 4-warp program's registers.
    per_program = max(1, min(16, 8192 // (dim_pad * frames_pad)))
    pairs = batch * heads
    _frame_attention[(triton.cdiv(pairs, per_program),)](
        q, k, v, out, pairs, heads, frames, head_dim, head_dim ** -0.5,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        FRAMES_PAD=frames_pad, DIM_PAD=dim_pad, PAIRS_PER_PROGRAM=per_program)
    return out


if triton is not None and hasattr(torch.library, "custom_op"):  # torch >= 2.4
    @torch.library.custom_op("xportrait::frame_attention", mutates_args=())
    def _frame_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return launch(q, k, v)

    @_frame_attention_op.register_fake
    def _(q, k, v):
        return _output_like(q)
else:
    _frame_attention_op = None


def _constant_under_compile(fn):
    # torch.compile then evaluates the check once at trace time instead of breaking the graph.
    mark = getattr(getattr(torch, "compiler", None), "assume_constant_result", None)
    return mark(fn) if mark is not None else fn


@_constant_under_compile
def _has_tensor_cores(device_index: int) -> bool:
    # NVIDIA Ampere or newer (tl.dot in bf16); older GPUs keep the caller's kernel, and so does
    # ROCm, where the kernel has never run.
    return torch.version.hip is None and torch.cuda.get_device_capability(device_index)[0] >= 8


def fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the fused kernel takes these tensors (else the caller's kernel must run)."""
    return (_frame_attention_op is not None and q.is_cuda and q.dtype in _DTYPES
            and q.dtype == k.dtype == v.dtype and q.ndim == 4 and q.shape == k.shape == v.shape
            and q.shape[-2] <= MAX_FRAMES and q.shape[-1] <= MAX_HEAD_DIM
            and all(t.stride(-1) == 1 for t in (q, k, v))
            and _has_tensor_cores(q.device.index if q.device.index is not None else torch.cuda.current_device()))


def frame_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v over the frame axis in one kernel; call only when ``fits``."""
    return _frame_attention_op(q, k, v)
