"""Fused nearest-codebook lookup: (optional) l2 normalisation, squared distance and argmin.

Computes, in fp32 whatever the input dtype (the official TiTok quantizer's math):

    z, e = z.float(), codebook.float()
    if l2_normalize: z, e = F.normalize(z, dim=-1), F.normalize(e, dim=-1)
    d[m, n] = (|z_m|^2 + |e_n|^2) - 2 z_m . e_n
    index[m] = argmin_n d[m, n]          (first index on ties)

without materialising the M x N matrix: a prepare pass (fp32, normalised, padded copies and squared
norms), a tiled distance + running argmin, and a combine when the codebook is split (small M).

Shapes and dtypes: z (M, D), codebook (N, D), fp32, fp16 or bf16 each (they may differ), any strides;
1 <= D <= 256, N >= 1, M >= 0 (M == 0: empty outputs, no launch). Outputs: int64 indices (M,) and, with
`return_distance`, fp32 squared distances (M,). NaN rule (torch.argmin's): NaN is smaller than every
number and the first NaN wins.
Backends: "triton" (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1, there without bf16), "torch"
(`titok_kernels.reference.nearest_code_torch`), "auto" (titok_kernels.backend).
Exactness: true fp32 products (no TF32) in the reference's formula, so the chosen distance is the
minimum up to fp32 rounding and the index is the reference's wherever the codebook is well separated.
Limits: forward only, no autograd; indices int32 inside the kernels (N < 2^31); temporary memory
(M_pad + N) * (BLOCK_D + 1) * 4 bytes (+ splits * M * 12 when split).
Tested hardware: the CPU test suite runs the kernels under TRITON_INTERPRET=1 and compiles every launch
of `aot_jobs()` for sm_90 and sm_80 (no spills; triton 3.6 and 3.9); which GPUs it has run on, and
the state of block-size tuning, are recorded in docs/kernels/nearest_code.md.

Algorithm, exactness argument, launch configuration, cost estimates and tests: docs/kernels/nearest_code.md.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .aot import CompileJob
from .backend import (KernelLaunch, NotApplicable, check_backend, check_tensor, interpreter_dtype_issue, launch,
                      resolve_backend)
from .reference import nearest_code_torch

OP = "nearest_code"
_MAX_D = 256

# BLOCK_D -> (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), chosen by AOT compiles (no spills on
# sm_90/sm_80), not by timing: 64 x 64 tiles need 8 warps (4 warps spilled at D >= 32); BLOCK_K bounds
# the fp32 FMA dot's operand registers. The reasons entry by entry: docs/kernels/nearest_code.md.
_CONFIGS = {
    16: (64, 64, 16, 8, 2),
    32: (64, 64, 16, 8, 2),
    64: (64, 64, 16, 8, 2),
    128: (64, 64, 32, 8, 2),
    256: (64, 64, 32, 8, 2),
}
# Up to this BLOCK_D the K chunks are unrolled (the codebook-tile loop is then the innermost
# loop and gets software-pipelined); above it a runtime K loop keeps shared memory and compile time small.
_MAX_UNROLLED_D = 64
# Elements per program of the prepare pass (rows = this / BLOCK_D: 32 fp32 values per thread
# at 8 warps) and rows per program of the split combine; both are light, memory-bound kernels.
_PREPARE_BLOCK_ELEMENTS = 8192
_PREPARE_WARPS = 8
_COMBINE_BLOCK_M = 128
# A split must own at least this many codebook tiles, so that a program's fixed work (set-up,
# final row reduction, partial stores: about one tile's worth) stays a small part of it (not measured).
_MIN_TILES_PER_SPLIT = 2
# Stand-in for the SM count when running under the interpreter (exercises the split path).
_INTERPRETER_SMS = 4


@triton.jit
def _prepare_rows(x_ptr, out_ptr, sq_ptr, block, n_rows, n_out_rows, D, stride_r, stride_c, scale,
                  L2_NORMALIZE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows [block*BLOCK_R, +BLOCK_R) of x: fp32, F.normalize'd if asked; write scale * x zero-padded
    to BLOCK_D columns (rows n_rows..n_out_rows-1 are written as zeros) and |x|^2 (before scaling)."""
    rows = block.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < D)
    x = tl.load(x_ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32)
    if L2_NORMALIZE:
        # F.normalize: x / max(||x||, 1e-12), correctly rounded sqrt and division;
        # PropagateNan.ALL so that a NaN norm stays NaN, as torch's clamp_min does.
        norm = tl.sqrt_rn(tl.sum(x * x, axis=1))
        denom = tl.maximum(norm, 1e-12, propagate_nan=tl.PropagateNan.ALL)
        x = tl.math.div_rn(x, denom[:, None])
    out_ok = rows < n_out_rows
    tl.store(out_ptr + rows[:, None] * BLOCK_D + cols[None, :], x * scale, mask=out_ok[:, None])
    tl.store(sq_ptr + rows, tl.sum(x * x, axis=1), mask=out_ok)


@triton.jit
def _nearest_code_prepare_kernel(z_ptr, e_ptr, z_out_ptr, e_out_ptr, z_sq_ptr, e_sq_ptr,
                                 M, M_pad, N, D, z_blocks,
                                 stride_zm, stride_zd, stride_en, stride_ed,
                                 L2_NORMALIZE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """Programs [0, z_blocks) prepare z (as -2 z, padded to M_pad rows), the others the codebook."""
    pid = tl.program_id(0)
    if pid < z_blocks:
        # -2 is exact: the main loop's dot then yields -2 z.e, added onto |z|^2 + |e|^2.
        _prepare_rows(z_ptr, z_out_ptr, z_sq_ptr, pid, M, M_pad, D, stride_zm, stride_zd, -2.0,
                      L2_NORMALIZE, BLOCK_R, BLOCK_D)
    else:
        _prepare_rows(e_ptr, e_out_ptr, e_sq_ptr, pid - z_blocks, N, N, D, stride_en, stride_ed, 1.0,
                      L2_NORMALIZE, BLOCK_R, BLOCK_D)


@triton.jit
def _row_first_min(best_d, best_i):
    """Per row: the smallest (distance, index) pair, NaN below every number, equal values by index."""
    # Built from plain min/max reductions rather than one tl.reduce with a custom combine:
    # same result, and the interpreter runs custom combines element by element in Python.
    is_nan = best_d != best_d
    row_has_nan = tl.max(is_nan.to(tl.int32), axis=1) > 0
    row_min = tl.min(tl.where(is_nan, float("inf"), best_d), axis=1)
    is_best = tl.where(row_has_nan[:, None], is_nan, best_d == row_min[:, None])
    index = tl.min(tl.where(is_best, best_i, 2147483647), axis=1)
    return tl.where(row_has_nan, float("nan"), row_min), index


@triton.jit
def _nearest_code_kernel(z_ptr, z_sq_ptr, e_ptr, e_sq_ptr, idx_ptr, dist_ptr,
                         M, N, tiles_per_split,
                         STORE_DIST: tl.constexpr, UNROLL_K: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows [pid_m*BLOCK_M, +BLOCK_M) of the prepared z against the codebook tiles of split pid_s;
    writes row pid_s of the (splits, M) outputs."""
    # (The tile body is written inline, not as @triton.jit helpers: the interpreter pays ~2 ms
    # per helper call, which dominated the CPU test time.)
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # z is padded to whole blocks: no mask
    ks = tl.arange(0, BLOCK_K)
    z_sq = tl.load(z_sq_ptr + rows)
    z_ptrs = z_ptr + rows[:, None] * BLOCK_D + ks[None, :]

    tile_begin = pid_s * tiles_per_split
    tile_end = tl.minimum(tile_begin + tiles_per_split, tl.cdiv(N, BLOCK_N))
    best_d = tl.full((BLOCK_M, BLOCK_N), float("inf"), tl.float32)
    # Start at the split's first indices so that an all-inf row reports the first index of the range.
    best_i = tl.zeros((BLOCK_M, BLOCK_N), tl.int32) + (tile_begin * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]
    for tile in range(tile_begin, tile_end):
        codes = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        code_ok = codes < N
        e_sq = tl.load(e_sq_ptr + codes, mask=code_ok, other=0.0)
        e_ptrs = e_ptr + codes[None, :].to(tl.int64) * BLOCK_D + ks[:, None]
        d = z_sq[:, None] + e_sq[None, :]
        # K in chunks: tl.dot's fp32 FMA path holds a thread's whole K slice of both operands in
        # registers; one whole-K dot per tile spilled in the AOT compiles (sm_90, D = 16 to 256).
        if UNROLL_K:
            for k in tl.static_range(0, BLOCK_D, BLOCK_K):
                e_t = tl.load(e_ptrs + k, mask=code_ok[None, :], other=0.0)
                d = tl.dot(tl.load(z_ptrs + k), e_t, d, input_precision="ieee")
        else:
            for k in range(0, BLOCK_D, BLOCK_K):
                e_t = tl.load(e_ptrs + k, mask=code_ok[None, :], other=0.0)
                d = tl.dot(tl.load(z_ptrs + k), e_t, d, input_precision="ieee")
        if (tile + 1) * BLOCK_N > N:  # partial last tile: codes >= N never win (even against NaN)
            d = tl.where(code_ok[None, :], d, float("inf"))
        # Later tiles only hold larger indices: replace on strictly smaller, or on the first NaN.
        take = (d < best_d) | ((d != d) & (best_d == best_d))
        best_d = tl.where(take, d, best_d)
        best_i = tl.where(take, codes[None, :], best_i)
    dist, index = _row_first_min(best_d, best_i)

    out = pid_s.to(tl.int64) * M + rows
    row_ok = rows < M
    tl.store(idx_ptr + out, index.to(tl.int64), mask=row_ok)
    if STORE_DIST:
        tl.store(dist_ptr + out, dist, mask=row_ok)


@triton.jit
def _nearest_code_combine_kernel(part_idx_ptr, part_dist_ptr, idx_ptr, dist_ptr,
                                 M, num_splits,
                                 STORE_DIST: tl.constexpr, BLOCK_M: tl.constexpr):
    """Merge the per-split (distance, index) partials (num_splits, M) in split order."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    best_d = tl.load(part_dist_ptr + rows, mask=row_ok)
    best_i = tl.load(part_idx_ptr + rows, mask=row_ok)
    for s in range(1, num_splits):
        d = tl.load(part_dist_ptr + s * M + rows, mask=row_ok)
        i = tl.load(part_idx_ptr + s * M + rows, mask=row_ok)
        take = (d < best_d) | ((d != d) & (best_d == best_d))
        best_d = tl.where(take, d, best_d)
        best_i = tl.where(take, i, best_i)
    tl.store(idx_ptr + rows, best_i, mask=row_ok)
    if STORE_DIST:
        tl.store(dist_ptr + rows, best_d, mask=row_ok)


def _block_d(d: int) -> int:
    """Padded feature width used by the kernels: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(d))


def kernel_config(d: int) -> dict:
    """Launch configuration of the main kernel for feature width `d`."""
    bd = _block_d(d)
    block_m, block_n, block_k, num_warps, num_stages = _CONFIGS[bd]
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=bd, UNROLL_K=bd <= _MAX_UNROLLED_D,
                num_warps=num_warps, num_stages=num_stages)


def _validate(z, codebook) -> None:
    check_tensor("z", z, ndim=2, layout="(M, D)")
    check_tensor("codebook", codebook, ndim=2, layout="(N, D)", device=z.device, device_of="z")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z and codebook must have the same D, got z {tuple(z.shape)} and "
                         f"codebook {tuple(codebook.shape)}")
    if not 1 <= z.shape[1] <= _MAX_D:
        raise ValueError(f"D must be in [1, {_MAX_D}], got z {tuple(z.shape)}")
    if codebook.shape[0] < 1:
        raise ValueError(f"codebook must have at least one row, got shape {tuple(codebook.shape)}")


def _num_splits(m_blocks: int, n_tiles: int, device: torch.device) -> int:
    """How many codebook ranges to split over: enough programs for about two waves of the SMs."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count  # cached; no sync
    else:
        sms = _INTERPRETER_SMS
    wanted = triton.cdiv(2 * sms, m_blocks)
    return max(1, min(wanted, n_tiles // _MIN_TILES_PER_SPLIT))


def _launches(z, codebook, l2_normalize: bool, return_distance: bool, num_splits: int | None = None):
    """(indices, distances, the kernel launches that fill them) for validated inputs with M >= 1.
    `num_splits` overrides the split heuristic (tests, ahead-of-time jobs)."""
    m, d = z.shape
    n = codebook.shape[0]
    device = z.device
    indices = torch.empty(m, dtype=torch.int64, device=device)
    distances = torch.empty(m if return_distance else 0, dtype=torch.float32, device=device)
    cfg = kernel_config(d)
    bm, bn, bd = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_D"]

    m_blocks = triton.cdiv(m, bm)
    m_pad = m_blocks * bm
    z_prep = torch.empty((m_pad, bd), dtype=torch.float32, device=device)
    z_sq = torch.empty(m_pad, dtype=torch.float32, device=device)
    e_prep = torch.empty((n, bd), dtype=torch.float32, device=device)
    e_sq = torch.empty(n, dtype=torch.float32, device=device)
    rows_per_program = _PREPARE_BLOCK_ELEMENTS // bd
    z_blocks = triton.cdiv(m_pad, rows_per_program)
    launches = [KernelLaunch(
        _nearest_code_prepare_kernel, (z_blocks + triton.cdiv(n, rows_per_program),),
        (z, codebook, z_prep, e_prep, z_sq, e_sq, m, m_pad, n, d, z_blocks,
         z.stride(0), z.stride(1), codebook.stride(0), codebook.stride(1)),
        dict(L2_NORMALIZE=l2_normalize, BLOCK_R=rows_per_program, BLOCK_D=bd, num_warps=_PREPARE_WARPS))]

    n_tiles = triton.cdiv(n, bn)
    if num_splits is None:
        num_splits = _num_splits(m_blocks, n_tiles, device)
    tiles_per_split = triton.cdiv(n_tiles, max(1, min(num_splits, n_tiles)))
    num_splits = triton.cdiv(n_tiles, tiles_per_split)  # no empty split
    if num_splits == 1:
        part_idx, part_dist = indices, distances
    else:
        part_idx = torch.empty((num_splits, m), dtype=torch.int64, device=device)
        part_dist = torch.empty((num_splits, m), dtype=torch.float32, device=device)
    launches.append(KernelLaunch(
        _nearest_code_kernel, (m_blocks, num_splits),
        (z_prep, z_sq, e_prep, e_sq, part_idx, part_dist, m, n, tiles_per_split),
        dict(STORE_DIST=(return_distance or num_splits > 1), UNROLL_K=cfg["UNROLL_K"], BLOCK_M=bm, BLOCK_N=bn,
             BLOCK_K=cfg["BLOCK_K"], BLOCK_D=bd, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])))
    if num_splits > 1:
        launches.append(KernelLaunch(
            _nearest_code_combine_kernel, (triton.cdiv(m, _COMBINE_BLOCK_M),),
            (part_idx, part_dist, indices, distances, m, num_splits),
            dict(STORE_DIST=return_distance, BLOCK_M=_COMBINE_BLOCK_M, num_warps=4)))
    return indices, distances, launches


def _nearest_code_triton(z, codebook, l2_normalize: bool, return_distance: bool, num_splits: int | None = None):
    """Triton path (inputs validated): (indices, distances or an empty tensor)."""
    if z.shape[0] == 0:
        return (torch.empty(0, dtype=torch.int64, device=z.device),
                torch.empty(0, dtype=torch.float32, device=z.device))
    indices, distances, launches = _launches(z, codebook, l2_normalize, return_distance, num_splits)
    for kernel_launch in launches:
        launch(OP, kernel_launch)
    return indices, distances


def _not_applicable(z, codebook) -> NotApplicable | None:
    return interpreter_dtype_issue(z=z, codebook=codebook)


@torch.library.custom_op("titok::nearest_code", mutates_args=())
def _nearest_code_op(z: torch.Tensor, codebook: torch.Tensor, l2_normalize: bool, return_distance: bool,
                     backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (M,) int64, distances (M,) fp32 or (0,) when not requested)."""
    if resolve_backend(OP, backend, z.device, _not_applicable(z, codebook)) == "torch":
        indices, distances = nearest_code_torch(z, codebook, l2_normalize=l2_normalize, return_distance=True)
        return indices, distances if return_distance else distances.new_empty(0)
    if z.device.type == "cuda":
        with torch.cuda.device(z.device):  # Triton launches on the current device
            return _nearest_code_triton(z, codebook, l2_normalize, return_distance)
    return _nearest_code_triton(z, codebook, l2_normalize, return_distance)


@_nearest_code_op.register_fake
def _(z, codebook, l2_normalize, return_distance, backend):
    m = z.shape[0]
    return (z.new_empty(m, dtype=torch.int64),
            z.new_empty(m if return_distance else 0, dtype=torch.float32))


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, *, l2_normalize: bool, return_distance: bool = False,
                 backend: str = "auto"):
    """Index of the nearest codebook row for each row of z: int64 (M,), first index on ties.

    With `return_distance`, also the fp32 squared distance (M,) to that row. Math in fp32
    for any input dtype; see the module docstring for the contract and the NaN rule.
    backend: "auto", "triton" or "torch" (titok_kernels.backend describes the choice).
    """
    _validate(z, codebook)
    check_backend(backend)
    indices, distances = torch.ops.titok.nearest_code(z, codebook, l2_normalize, return_distance, backend)
    return (indices, distances) if return_distance else indices


# ---- ahead-of-time compile jobs ------------------------------------------------------------------------

# Representative calls, one per kept BLOCK_D: (M, N, D, z dtype, codebook dtype, l2_normalize,
# splits). D = 12 is TiTok's VQ token size; the others fill their BLOCK_D. The prepare pass sees
# the widest input mix (bf16 z, fp16 codebook); the main kernel only sees the fp32 copies. One
# call splits the codebook, for the combine kernel.
_AOT_CALLS = [
    (2048, 4096, 12, torch.bfloat16, torch.float16, True, 1),
    (2048, 4096, 32, torch.bfloat16, torch.float16, True, 1),
    (2048, 8192, 64, torch.bfloat16, torch.float16, False, 1),
    (2048, 4096, 128, torch.bfloat16, torch.float16, True, 1),
    (32, 4096, 256, torch.bfloat16, torch.float16, True, 8),
]


def aot_jobs() -> list[CompileJob]:
    """Every kernel launch of the representative calls, for sm_90 and sm_80 (see titok_kernels.aot)."""
    jobs = []
    for m, n, d, z_dtype, e_dtype, l2, splits in _AOT_CALLS:
        z = torch.empty((m, d), dtype=z_dtype, device="meta")
        codebook = torch.empty((n, d), dtype=e_dtype, device="meta")
        for part, kernel_launch in zip(("prepare", "main", "combine"), _launches(z, codebook, l2, True, splits)[2]):
            for capability in (90, 80):
                jobs.append(CompileJob(f"{part} D{d} sm{capability}", capability, kernel_launch))
    return jobs
