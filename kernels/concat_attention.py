"""Fused mask-token concat attention: flash-attention forward over cat(shared, per-sample) read in place.

Computes, per sample b and head h, softmax(Q K^T / sqrt(d)) V over the logical sequence

    logical = cat([shared, per_sample]) if shared_first else cat([per_sample, shared])

of length L = Ls + Lp without materialising it: the shared rows (TiTok's first-layer Q/K/V of the
image-independent tokens, precomputed once per model) are read with batch stride 0. Non-causal, online
softmax with fp32 statistics and accumulator; `query_rows=(start, stop)` computes only those logical rows
(the keys always span the whole sequence).

Shapes and dtypes: qkv (B, Lp, 3*H*d) packed as nn.MultiheadAttention's in_proj output ([q | k | v],
head h in columns h*d:(h+1)*d of each part; any strides), shared_qkv (Ls, 3*H*d) or None, same dtype;
Ls >= 0, Lp >= 1, B >= 0; fp32, fp16 or bf16. Output (B, stop - start, H*d) in the input dtype.
Backends: "triton" (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1, there without bf16), "torch"
(`titok_kernels.reference.concat_attention_torch`, any head dim), "auto" (titok_kernels.backend; falls
back to torch, with a KernelFallbackWarning once per reason, where the kernel does not apply).
Exactness: attention over the materialised sequence up to rounding (fp32 uses true fp32 products, no
TF32; fp16/bf16 round P to the input dtype before P@V, as flash attention does); not bit-exact.
Limits: forward only, no autograd, dropout, attention mask or causal mode. Triton backend: head dim 32,
64 or 128; channel stride 1 and 16-byte aligned rows (base address and batch/row strides); otherwise
ValueError / TypeError with backend="triton". On CUDA the first call per shape bucket autotunes.
Tested hardware: the CPU test suite runs the kernel under TRITON_INTERPRET=1 (fp32, fp16) and compiles
every kept autotune config for sm_90 and sm_80 (no spills; triton 3.6 and 3.9); which GPUs it has run
on, and whether configs were tuned by measurement, is recorded in docs/kernels/concat_attention.md.

Algorithm, precision argument, configurations, savings estimates and tests: docs/kernels/concat_attention.md.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from .aot import CompileJob
from .backend import (KernelLaunch, NotApplicable, check_backend, check_tensor, interpreter_dtype_issue,
                      interpreting, launch, resolve_backend)
from .reference import concat_attention_torch

OP = "concat_attention"
TRITON_HEAD_DIMS = (32, 64, 128)
_LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------
# Autotune configs: (BLOCK_M, BLOCK_N, num_warps, num_stages) per (arch, precision, head dim).
# Every entry compiles without register spills and within shared memory for its arch
# (`aot_jobs()` below declares each as launched, for sm_90 and sm_80, fp16, bf16 and fp32;
# tests/test_concat_attention.py compiles them all); configs that spilled were pruned, as noted. The reasons are design
# reasoning; whether any was measured is in docs/kernels/concat_attention.md ("Launch configurations").
# --------------------------------------------------------------------------------------------
_CONFIGS = {
    # Hopper, fp16/bf16 (wgmma). L is 289..513 in TiTok, so short key loops: 2-3 stages suffice.
    ("sm90", "lowp", 32): [
        (128, 64, 4, 3),  # one warpgroup, two m64 wgmmas per block; 3 stages overlap K/V loads with math
        (64, 64, 4, 3),   # L=289 -> 5x64 query rows (320) instead of 3x128 (384); twice the CTAs
    ],
    ("sm90", "lowp", 64): [
        (128, 64, 4, 3),  # as for d=32 (the usual Hopper flash-attention tile for d=64)
        (128, 64, 8, 3),  # two warpgroups of 64 rows: half the registers per thread, more latency hiding
        (64, 64, 4, 3),   # less padding for L~289 and short query ranges (e.g. the last 32 rows)
    ],
    ("sm90", "lowp", 128): [
        (128, 64, 8, 3),  # 8 warps: (128, 64, 4, 3) spilled (264 B) at d=128
        (64, 64, 4, 3),   # small tile for short sequences / query ranges
    ],
    # Ampere, fp16/bf16 (mma.sync): needs more registers than Hopper for the same tile.
    ("sm80", "lowp", 32): [
        (128, 64, 4, 3),  # large tile still fits at d=32 ((128, 64, 8, 3) spilled 16 B here)
        (64, 64, 4, 3),   # less padding for L~289
    ],
    ("sm80", "lowp", 64): [
        (128, 64, 8, 3),  # 8 warps: (128, 64, 4, 3) spilled (24 B)
        (64, 64, 4, 3),   # less padding for L~289
    ],
    ("sm80", "lowp", 128): [
        (128, 32, 8, 2),  # every 64/128-key tile spilled here (32..984 B), and 32-key tiles at 4 warps
        (64, 32, 8, 2),   # smaller query tile for short sequences
    ],
    # fp32 (both archs): ieee FMA dots hold whole operand rows per thread, so small tiles and
    # QK^T summed over 16-column head-dim chunks (_FP32_QK_CHUNK); unchunked, every tile tried
    # spilled at d >= 64. Each entry compiles without spills with the ptxas of triton 3.9 (12.9)
    # and of triton 3.6 (12.8), which spilled 8 B in (64, 32, 8, 2) at d=32 on sm_90 and in
    # (32, 16, 4, 2) at d=128 on sm_90 and sm_80.
    ("sm90", "fp32", 32): [(64, 32, 8, 3), (32, 32, 4, 2)],  # 8 warps spread the FMA operands
    ("sm90", "fp32", 64): [(64, 32, 8, 2), (32, 32, 4, 2)],  # (64, 32, 4, 2) spilled 48 B
    ("sm90", "fp32", 128): [(64, 32, 8, 2), (32, 16, 8, 2)],  # (64, 32, 4, 2) spilled 1320 B
}
for _d in (32, 64, 128):  # (32, 32, 4, 2) spilled 24 B at d=128 on sm_80
    _CONFIGS[("sm80", "fp32", _d)] = _CONFIGS[("sm90", "fp32", _d)]
_FP32_QK_CHUNK = 16
# Under TRITON_INTERPRET=1 there is no autotuning: tiles of the next power of two of the query /
# key length, 16..512, so TiTok lengths (L <= 512) take one query block and one key block: the
# interpreter's cost is mostly per operation, not per element. Interpreter-only (never compiled
# for a GPU); the kept GPU tiles run under the interpreter in test_kept_gpu_config_tiles.
_INTERPRETER_MAX_TILE = 512


def _precision(dtype: torch.dtype) -> str:
    return "fp32" if dtype == torch.float32 else "lowp"


def _arch(device: torch.device) -> str:
    """Config family of a CUDA device: "sm90" for compute capability >= 9, else "sm80"."""
    return "sm90" if torch.cuda.get_device_capability(device)[0] >= 9 else "sm80"


@triton.jit
def _row_pointers(rows, qkv_base, shared_ptr, stride_qkv_l, stride_shared_l, shared_len, per_sample_len,
                  SHARED_FIRST: tl.constexpr):
    """Start of each logical row (int64 `rows`) in whichever segment holds it: the shared rows (one copy)
    or this sample's rows. One pointer per row (not per element) keeps the pointer tensors 1-D, and a
    block of rows may straddle the segment boundary."""
    if SHARED_FIRST:
        is_shared = rows < shared_len
        shared_rows = rows
        sample_rows = rows - shared_len
    else:
        is_shared = rows >= per_sample_len
        shared_rows = rows - per_sample_len
        sample_rows = rows
    row_ptr = tl.where(is_shared, shared_ptr + shared_rows * stride_shared_l, qkv_base + sample_rows * stride_qkv_l)
    # A select loses the operands' alignment in Triton's axis analysis; restoring it (the launcher
    # checks 16-byte bases and row strides) gives 16-byte vector loads and cp.async pipelining.
    return tl.multiple_of(row_ptr, [16])


@triton.jit
def _attend_block(acc, m_i, l_i, q, q_ptrs, q_valid, qkv_base, shared_ptr, start_n, seq_len,
                  stride_qkv_l, stride_shared_l, shared_len, per_sample_len, qk_scale, offs_n,
                  k_cols, v_cols, SHARED_FIRST: tl.constexpr, MASKED: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, HEAD_DIM: tl.constexpr, QK_CHUNK: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One online-softmax step over key rows start_n..start_n+BLOCK_N of the logical sequence."""
    rows = start_n + offs_n  # int64 (offs_n is int64)
    row_ptr = _row_pointers(rows, qkv_base, shared_ptr, stride_qkv_l, stride_shared_l, shared_len, per_sample_len,
                            SHARED_FIRST)[:, None]
    valid = rows < seq_len
    if QK_CHUNK == HEAD_DIM:
        if MASKED:
            k = tl.load(row_ptr + k_cols, mask=valid[:, None], other=0.0)
        else:
            k = tl.load(row_ptr + k_cols)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    else:
        # fp32 FMA dots hold a whole K-extent row of each operand per thread: summing QK^T over
        # head-dim chunks (Q chunks re-read from L1) keeps them within registers.
        s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for c in tl.static_range(0, HEAD_DIM, QK_CHUNK):
            q_c = tl.load(q_ptrs + c, mask=q_valid[:, None], other=0.0)
            if MASKED:
                k_c = tl.load(row_ptr + k_cols + c, mask=valid[:, None], other=0.0)
            else:
                k_c = tl.load(row_ptr + k_cols + c)
            s += tl.dot(q_c, tl.trans(k_c), input_precision=DOT_PRECISION)
    if MASKED:
        v = tl.load(row_ptr + v_cols, mask=valid[:, None], other=0.0)
        s = tl.where(valid[None, :], s, float("-inf"))
    else:
        v = tl.load(row_ptr + v_cols)
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    # Every block holds at least one valid key, so m_new is finite and alpha = 0 on the first block.
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s * qk_scale - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    # P in the input dtype for the tensor-core P@V dot (fp32 inputs keep P in fp32).
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["per_sample_len", "shared_len", "query_start", "query_len",
                               "seq_bucket", "query_bucket", "batch_heads_bucket"])
def _concat_attention_kernel(
    qkv_ptr, shared_ptr, out_ptr,
    stride_qkv_b, stride_qkv_l, stride_shared_l, stride_out_b, stride_out_l,
    per_sample_len, shared_len, query_start, query_len, qk_scale,
    seq_bucket, query_bucket, batch_heads_bucket,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SHARED_FIRST: tl.constexpr,
    DOT_PRECISION: tl.constexpr, QK_CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Channel strides are 1 (checked by the launcher). seq_bucket / query_bucket /
    # batch_heads_bucket are only the autotune key (powers of two).
    pid = tl.program_id(0)
    num_m_blocks = tl.cdiv(query_len, BLOCK_M)
    pid_m = pid % num_m_blocks
    pid_bh = pid // num_m_blocks
    batch = (pid_bh // NUM_HEADS).to(tl.int64)
    head = pid_bh % NUM_HEADS
    seq_len = shared_len + per_sample_len

    # Row indices in int64: row * row-stride can pass 2^31 for big views.
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_c = tl.arange(0, QK_CHUNK)
    qkv_base = qkv_ptr + batch * stride_qkv_b
    q_cols = (head * HEAD_DIM + offs_d)[None, :]
    v_cols = ((2 * NUM_HEADS + head) * HEAD_DIM + offs_d)[None, :]
    k_cols = ((NUM_HEADS + head) * HEAD_DIM + offs_c)[None, :]  # first QK_CHUNK columns of K

    # Query rows: logical rows query_start + offs_m, each loaded from the segment that holds it.
    q_valid = offs_m < query_len
    q_row_ptr = _row_pointers(query_start + offs_m, qkv_base, shared_ptr, stride_qkv_l, stride_shared_l, shared_len,
                              per_sample_len, SHARED_FIRST)
    q_ptrs = q_row_ptr[:, None] + (head * HEAD_DIM + offs_c)[None, :]  # first QK_CHUNK columns of Q
    if QK_CHUNK == HEAD_DIM:
        q = tl.load(q_ptrs, mask=q_valid[:, None], other=0.0)  # kept in registers for all key blocks
    else:
        q = tl.zeros([BLOCK_M, QK_CHUNK], dtype=tl.float32)  # unused: chunks are loaded per key block

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full_end = (seq_len // BLOCK_N) * BLOCK_N
    for start_n in range(0, full_end, BLOCK_N):  # full key blocks: no masks
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, q_ptrs, q_valid, qkv_base, shared_ptr, start_n,
                                      seq_len, stride_qkv_l, stride_shared_l, shared_len, per_sample_len,
                                      qk_scale, offs_n, k_cols, v_cols, SHARED_FIRST, False,
                                      DOT_PRECISION, HEAD_DIM, QK_CHUNK, BLOCK_M, BLOCK_N)
    if full_end < seq_len:  # the partial last key block
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, q_ptrs, q_valid, qkv_base, shared_ptr, full_end,
                                      seq_len, stride_qkv_l, stride_shared_l, shared_len, per_sample_len,
                                      qk_scale, offs_n, k_cols, v_cols, SHARED_FIRST, True,
                                      DOT_PRECISION, HEAD_DIM, QK_CHUNK, BLOCK_M, BLOCK_N)
    out = acc / l_i[:, None]
    # The launcher allocates out contiguous: rows are (H*d*elsize)-byte multiples, 16-byte aligned.
    out_row_ptr = tl.multiple_of(out_ptr + batch * stride_out_b + offs_m * stride_out_l, [16])
    out_ptrs = out_row_ptr[:, None] + q_cols
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=q_valid[:, None])


def _prune_configs(configs, named_args, **kwargs):
    """Keep the configs listed in _CONFIGS for this call's GPU arch, dtype and head dim."""
    args = {**named_args, **kwargs}
    qkv = args["qkv_ptr"]
    wanted = set(_CONFIGS[(_arch(qkv.device), _precision(qkv.dtype), args["HEAD_DIM"])])
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wanted]


_concat_attention_autotuned = triton.autotune(
    configs=[triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
             for (bm, bn, w, st) in sorted({c for cs in _CONFIGS.values() for c in cs})],
    # Powers of two of L, Lq and B*H (+ head dim; Triton appends the tensors' dtypes): a bounded
    # number of tuning runs however the lengths vary.
    key=["seq_bucket", "query_bucket", "batch_heads_bucket", "HEAD_DIM"],
    prune_configs_by={"early_config_prune": _prune_configs},
)(_concat_attention_kernel)


# --------------------------------------------------------------------------------------------
# Validation, applicability and launch
# --------------------------------------------------------------------------------------------
def _validate(qkv, shared_qkv, num_heads, shared_first, query_rows) -> tuple[int, int]:
    """Validate shapes/dtypes/devices (never device data); return the query rows (start, stop)."""
    check_tensor("qkv", qkv, ndim=3, layout="(B, Lp, 3*H*d)")
    if isinstance(num_heads, bool) or not isinstance(num_heads, int):
        raise TypeError(f"num_heads must be an int, got {type(num_heads).__name__}")
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    if not isinstance(shared_first, bool):
        raise TypeError(f"shared_first must be a bool, got {type(shared_first).__name__}")
    batch, per_sample_len, width = qkv.shape
    if width == 0 or width % (3 * num_heads) != 0:
        raise ValueError(f"qkv last dim must be a positive multiple of 3*num_heads = {3 * num_heads}, "
                         f"got shape {tuple(qkv.shape)}")
    if per_sample_len < 1:
        raise ValueError(f"qkv must have at least one per-sample row (Lp >= 1), got shape {tuple(qkv.shape)}")
    shared_len = 0
    if shared_qkv is not None:
        if not isinstance(shared_qkv, torch.Tensor):
            raise TypeError(f"shared_qkv must be a torch.Tensor or None, got {type(shared_qkv).__name__}")
        if shared_qkv.dim() != 2 or shared_qkv.shape[1] != width:
            raise ValueError(f"shared_qkv must have shape (Ls, {width}) to match qkv {tuple(qkv.shape)}, "
                             f"got shape {tuple(shared_qkv.shape)}")
        check_tensor("shared_qkv", shared_qkv, dtypes=(qkv.dtype,), device=qkv.device, device_of="qkv")
        shared_len = shared_qkv.shape[0]
    seq_len = shared_len + per_sample_len
    if query_rows is None:
        return 0, seq_len
    if (not isinstance(query_rows, (tuple, list)) or len(query_rows) != 2
            or any(isinstance(r, bool) or not isinstance(r, int) for r in query_rows)):
        raise TypeError(f"query_rows must be None or a pair of ints (start, stop), got {query_rows!r}")
    start, stop = query_rows
    if not 0 <= start < stop <= seq_len:
        raise ValueError(f"query_rows must satisfy 0 <= start < stop <= L = {seq_len}, got {tuple(query_rows)}")
    return start, stop


def _misaligned_rows(t: torch.Tensor, dims) -> bool:
    """The kernel promises the compiler 16-byte aligned rows: base address and row strides (real tensors only)."""
    return t.data_ptr() % 16 != 0 or any(t.shape[i] > 1 and (t.stride(i) * t.element_size()) % 16 != 0
                                         for i in dims)


def _not_applicable(qkv, shared_qkv, num_heads) -> Optional[NotApplicable]:
    """Why the kernel cannot take this (validated) call, or None. Reads data pointers: real tensors only."""
    # Unit channel stride and 16-byte aligned rows, as in other flash-attention kernels: per-row
    # pointers + contiguous head columns keep the pointer tensors small and the loads vectorised.
    has_shared = shared_qkv is not None and shared_qkv.shape[0] > 0
    head_dim = qkv.shape[2] // (3 * num_heads)
    if head_dim not in TRITON_HEAD_DIMS:
        return NotApplicable(f"head dim not in {TRITON_HEAD_DIMS}", ValueError(
            f"the triton backend supports head dims {TRITON_HEAD_DIMS}; qkv shape {tuple(qkv.shape)} with "
            f"num_heads={num_heads} gives head dim {head_dim}"))
    for name, t, dims in (("qkv", qkv, (0, 1)), ("shared_qkv", shared_qkv if has_shared else None, (0,))):
        if t is None:
            continue
        if t.stride(-1) != 1:
            return NotApplicable("channel stride != 1", ValueError(
                f"backend='triton' needs {name}'s last dim to have stride 1, got strides {t.stride()}"))
        if _misaligned_rows(t, dims):
            return NotApplicable("rows not 16-byte aligned", ValueError(
                f"backend='triton' needs {name} rows 16-byte aligned (base address and row strides multiples of "
                f"16 bytes); got data_ptr % 16 = {t.data_ptr() % 16}, strides {t.stride()}, dtype {t.dtype}; "
                f"use an aligned view or backend='torch'"))
    return interpreter_dtype_issue(qkv=qkv)


def _launch_plan(qkv, shared_qkv, num_heads, shared_first, start, stop, config=None):
    """(output, its KernelLaunch) for an applicable call with B >= 1. `config` = (BLOCK_M, BLOCK_N, warps,
    stages) skips autotuning; without it the interpreter uses one tile of the whole length."""
    batch, per_sample_len, width = qkv.shape
    head_dim = width // (3 * num_heads)
    query_len = stop - start
    out = torch.empty((batch, query_len, num_heads * head_dim), dtype=qkv.dtype, device=qkv.device)
    if shared_qkv is None or shared_qkv.shape[0] == 0:
        # Dummy pointer for an empty shared segment: no row ever selects it (shared_len = 0).
        shared_qkv, shared_len, stride_shared_l = qkv, 0, 0
    else:
        shared_len, stride_shared_l = shared_qkv.shape[0], shared_qkv.stride(0)
    seq_len = shared_len + per_sample_len
    args = (qkv, shared_qkv, out, qkv.stride(0), qkv.stride(1), stride_shared_l, out.stride(0), out.stride(1),
            per_sample_len, shared_len, start, query_len, _LOG2E / math.sqrt(head_dim),
            triton.next_power_of_2(seq_len), triton.next_power_of_2(query_len),
            triton.next_power_of_2(batch * num_heads))
    fp32 = qkv.dtype == torch.float32
    constexprs = dict(NUM_HEADS=num_heads, HEAD_DIM=head_dim, SHARED_FIRST=shared_first,
                      DOT_PRECISION="ieee" if fp32 else "tf32", QK_CHUNK=_FP32_QK_CHUNK if fp32 else head_dim)
    if config is None and interpreting():
        config = (min(_INTERPRETER_MAX_TILE, max(16, triton.next_power_of_2(query_len))),
                  min(_INTERPRETER_MAX_TILE, max(16, triton.next_power_of_2(seq_len))), 4, 1)
    if config is None:
        grid = lambda meta: (triton.cdiv(query_len, meta["BLOCK_M"]) * batch * num_heads,)  # noqa: E731
        return out, KernelLaunch(_concat_attention_autotuned, grid, args, constexprs)
    block_m, block_n, warps, stages = config
    return out, KernelLaunch(_concat_attention_kernel, (triton.cdiv(query_len, block_m) * batch * num_heads,), args,
                             dict(constexprs, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages))


def _launch(qkv, shared_qkv, num_heads, shared_first, start, stop, config=None):
    """Triton path for an applicable call: allocate the output, launch (see `_launch_plan`)."""
    if qkv.shape[0] == 0:
        return qkv.new_empty((0, stop - start, qkv.shape[2] // 3))
    out, kernel_launch = _launch_plan(qkv, shared_qkv, num_heads, shared_first, start, stop, config)
    launch(OP, kernel_launch)
    return out


@torch.library.custom_op("titok::concat_attention", mutates_args=())
def _concat_attention_op(qkv: torch.Tensor, shared_qkv: Optional[torch.Tensor], num_heads: int,
                         shared_first: bool, query_start: int, query_stop: int, backend: str) -> torch.Tensor:
    start, stop = _validate(qkv, shared_qkv, num_heads, shared_first, (query_start, query_stop))
    if resolve_backend(OP, backend, qkv.device, _not_applicable(qkv, shared_qkv, num_heads)) == "torch":
        return concat_attention_torch(qkv, shared_qkv, num_heads=num_heads, shared_first=shared_first,
                                      query_rows=(start, stop)).contiguous()
    if qkv.device.type == "cuda":
        with torch.cuda.device(qkv.device):  # Triton launches on the current device
            return _launch(qkv, shared_qkv, num_heads, shared_first, start, stop)
    return _launch(qkv, shared_qkv, num_heads, shared_first, start, stop)


@_concat_attention_op.register_fake
def _(qkv, shared_qkv, num_heads, shared_first, query_start, query_stop, backend):
    return qkv.new_empty((qkv.shape[0], query_stop - query_start, qkv.shape[2] // 3))


def concat_attention(qkv: torch.Tensor, shared_qkv: Optional[torch.Tensor] = None, *, num_heads: int,
                     shared_first: bool = True, query_rows: Optional[tuple[int, int]] = None,
                     backend: str = "auto") -> torch.Tensor:
    """Attention over cat([shared_qkv, qkv]) (or cat([qkv, shared_qkv])) without materialising the cat.

    qkv: (B, Lp, 3*H*d) packed per-sample projection output (any strides); shared_qkv: (Ls, 3*H*d) or
    None, read with batch stride 0; query_rows: (start, stop) logical rows to compute (default all).
    Returns (B, stop - start, H*d) in qkv's dtype. backend: "auto", "triton" or "torch"
    (titok_kernels.backend describes the choice; auto falls back to torch, with a warning, where the
    kernel does not apply). Registered as torch.ops.titok.concat_attention. On CUDA the first call per
    (power-of-two L, Lq and B*H bucket, head dim, dtype) autotunes: make it before a CUDA-graph capture.
    """
    start, stop = _validate(qkv, shared_qkv, num_heads, shared_first, query_rows)
    check_backend(backend)
    return _concat_attention_op(qkv, shared_qkv, num_heads, shared_first, start, stop, backend)


# --------------------------------------------------------------------------------------------
# Ahead-of-time compile jobs: every kept config, launched on the TiTok-L decoder's first layer
# (B = 8, H = 16, 257 shared rows before 32 per-sample rows, all 289 query rows; contiguous
# packed QKV, so every row stride is a multiple of 16 bytes).
# --------------------------------------------------------------------------------------------
_AOT_DTYPES = {"lowp": (torch.float16, torch.bfloat16), "fp32": (torch.float32,)}


def aot_jobs() -> list[CompileJob]:
    jobs = []
    heads, shared_len, per_sample_len = 16, 257, 32
    for (arch, precision, head_dim), configs in _CONFIGS.items():
        for dtype in _AOT_DTYPES[precision]:
            qkv = torch.empty((8, per_sample_len, 3 * heads * head_dim), dtype=dtype, device="meta")
            shared = torch.empty((shared_len, 3 * heads * head_dim), dtype=dtype, device="meta")
            for config in configs:
                _, kernel_launch = _launch_plan(qkv, shared, heads, True, 0, shared_len + per_sample_len, config)
                name = f"{str(dtype)[6:]} d{head_dim} {config[0]}x{config[1]} w{config[2]} s{config[3]} {arch}"
                jobs.append(CompileJob(name, int(arch[2:]), kernel_launch))
    return jobs
