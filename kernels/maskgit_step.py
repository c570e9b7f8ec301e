"""One MaskGIT sampling step: guidance combine, Gumbel-max sample, confidence, cut-off, re-mask.

Computes one step of the official TiTok sampler (`ImageBert.generate`), as a pure function:

    logits  = cond | cond + (cond - uncond) * s | uncond + (cond - uncond) * s   (guidance anchor)
    logits /= softmax_temperature                                               (optional)
    sampled = argmax(logits + t * g(u_sample)),  g(u) = -log(max(-log(max(u, 1e-20)), 1e-20))
    conf    = logits[sampled] (+inf for fixed tokens) + t * g(u_conf)
    next    = sampled, but mask_id where conf <= cut (except on the last step), where
    cut     = the n-th smallest conf of the row, n = max(1, min(#masked in row 0 - 1, schedule_mask_len))

in ONE launch (the last program of each batch row does the cut-off; no host sync).
Shapes and dtypes: cond/uncond logits (B, K, V) fp32, fp16 or bf16 (may differ; math in fp32; uncond
None: no guidance), ids (B, K) int32/int64, any strides; mask_id == V; 1 <= K <= 1024, 1 <= V < 2^31,
B * K < 2^31, B >= 0. Output: a new (B, K) int64 tensor. Noise, exactly one of: `noise=(u_sample
(B, K, V), u_conf (B, K))` fp32 uniforms (parity with the official sampler's draws), or `seed` (int or
1-element int64 device tensor) + `offset` (the step index, distinct per step), drawn in-kernel (Philox).
Backends: "triton" (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1, there without bf16), "torch"
(`titok_kernels.reference.maskgit_step_torch`), "auto" (titok_kernels.backend).
Exactness: with the same given noise the ids equal the reference's bit for bit wherever the Gumbel
values agree (under the interpreter numpy's log can differ from torch's by one ulp), and a seed gives
the same ids only within one backend and device.
Limits: forward only; one step per launch; launches overlapping in time on different streams of one
device share the per-device arrival counters and are not supported. Temporary memory: B*K*4 bytes.
Tested hardware: the CPU test suite runs the kernel under TRITON_INTERPRET=1 and compiles the launches
of `aot_jobs()` for sm_90 and sm_80 (no spills; triton 3.6 and 3.9); which GPUs it has run on, and
whether block sizes were tuned by measurement, is recorded in docs/kernels/maskgit_step.md.

Algorithm, exactness argument, noise streams, NaN rule, cost estimates and tests: docs/kernels/maskgit_step.md.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import triton
import triton.language as tl

from .aot import CompileJob
from .backend import (INDEX_DTYPES, KernelLaunch, check_backend, check_tensor, interpreter_dtype_issue, interpreting,
                      launch, resolve_backend)
from .reference import maskgit_step_torch, torch_noise

OP = "maskgit_step"
GUIDANCE_ANCHORS = ("cond", "uncond")
_MAX_K = 1024
_MAX_INT32 = 2**31 - 1
# Logits per program and iteration: 1024 at 4 warps is 8 per thread and tensor (two 16-byte loads
# each). V >= 1024 gives one token per program looping over V (V = 4096: 4 iterations); a smaller
# V packs several tokens into the tile so that programs do not shrink to a few dozen elements.
_TILE = 1024
_MIN_BLOCK_V = 16  # the seeded path splits a row tile into 4 Philox words: BLOCK_V // 4 >= 4
# Up to this BLOCK_K the cut-off counts ranks with one (BLOCK_K, BLOCK_K) compare tile (two
# reductions); above it a 32-step binary search over the keys (32 reductions of BLOCK_K keys):
# 64 x 64 is 32 compares per thread at 4 warps, 1024 x 1024 would not fit in registers.
_MAX_RANK_K = 64
# Guidance modes (constexpr GUIDANCE), temperature modes (TEMPERATURE), noise modes (NOISE).
_GUIDANCE_NONE, _GUIDANCE_COND, _GUIDANCE_UNCOND = 0, 1, 2
_TEMPERATURE_NONE, _TEMPERATURE_DIVIDE, _TEMPERATURE_RECIPROCAL = 0, 1, 2
_NOISE_GIVEN, _NOISE_SEED_ARG, _NOISE_SEED_PTR = 0, 1, 2

try:
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - only the FAST_LOG path (CUDA) needs it
    libdevice = None


@triton.jit
def _gumbel(u, FAST_LOG: tl.constexpr):
    """-log(max(-log(max(u, 1e-20)), 1e-20)), the reference's Gumbel transform (NaN stays NaN).
    FAST_LOG: the logs as the hardware log2 times ln 2 (the seeded path on CUDA, see docs/kernels/maskgit_step.md)."""
    inner = tl.maximum(u, 1e-20, propagate_nan=tl.PropagateNan.ALL)
    if FAST_LOG:
        inner = -(libdevice.fast_log2f(inner) * 0.6931471805599453)
    else:
        inner = -tl.log(inner)
    outer = tl.maximum(inner, 1e-20, propagate_nan=tl.PropagateNan.ALL)
    if FAST_LOG:
        g = -(libdevice.fast_log2f(outer) * 0.6931471805599453)
    else:
        g = -tl.log(outer)
    return g


@triton.jit(do_not_specialize=["mask_id", "schedule_mask_len", "seed_lo", "seed_hi", "offset"])
def _maskgit_step_kernel(
        cond_ptr, uncond_ptr, ids_ptr, out_ptr, u_sample_ptr, u_conf_ptr, seed_ptr, conf_ptr, counter_ptr,
        stride_cb, stride_ck, stride_cv, stride_ub, stride_uk, stride_uv, stride_ib, stride_ik,
        stride_sb, stride_sk, stride_sv, stride_qb, stride_qk,
        K, V, mask_id, guidance_scale, softmax_temperature, gumbel_temperature, schedule_mask_len,
        seed_lo, seed_hi, offset,
        GUIDANCE: tl.constexpr, TEMPERATURE: tl.constexpr, USE_GUMBEL: tl.constexpr, NOISE: tl.constexpr,
        FAST_LOG: tl.constexpr, LAST_STEP: tl.constexpr, RANK_CUTOFF: tl.constexpr,
        ROWS: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program (b, kb): tokens k in [kb * ROWS, kb * ROWS + ROWS) of batch row b; the program that
    arrives last for row b also computes the cut-off and re-masks.

    (Written inline, but for the Gumbel transform, rather than with @triton.jit helpers, and with few
    reductions: under the interpreter every helper call, tl.sum/max/min included, costs milliseconds.)
    """
    pid = tl.program_id(0)
    blocks_per_row = tl.cdiv(K, ROWS)
    b = (pid // blocks_per_row).to(tl.int64)
    ks = (pid % blocks_per_row) * ROWS + tl.arange(0, ROWS)
    in_k = ks < K
    ks64 = ks.to(tl.int64)
    current = tl.load(ids_ptr + b * stride_ib + ks64 * stride_ik, mask=in_k, other=0).to(tl.int64)
    is_mask = in_k & (current == mask_id)
    if NOISE == 2:  # _NOISE_SEED_PTR: a device tensor holds the seed (CUDA-graph replay with fresh noise)
        seed = tl.load(seed_ptr).to(tl.uint64, bitcast=True)
    elif NOISE == 1:  # _NOISE_SEED_ARG: the two 32-bit halves of the seed
        seed = (seed_hi.to(tl.uint64) << 32) | seed_lo.to(tl.uint64)
    # Philox counter word 1: the token's flat index b * K + k.
    token_word = (b * K + ks64).to(tl.uint32)

    token = current
    sampled_logit = tl.full((ROWS,), float("inf"), tl.float32)
    if tl.max(is_mask.to(tl.int32), axis=0) > 0:  # fixed tokens need no scan (exact: their samples are discarded)
        lanes = tl.arange(0, BLOCK_V)
        cond_rows = cond_ptr + b * stride_cb + ks64[:, None] * stride_ck
        uncond_rows = uncond_ptr + b * stride_ub + ks64[:, None] * stride_uk
        noise_rows = u_sample_ptr + b * stride_sb + ks64[:, None] * stride_sk
        best = tl.full((ROWS, BLOCK_V), float("-inf"), tl.float32)  # logit + t * g: what the argmax ranks
        best_logit = tl.zeros((ROWS, BLOCK_V), tl.float32)          # the logit itself, for the confidence
        best_idx = tl.zeros((ROWS, BLOCK_V), tl.int32)
        for v0 in range(0, V, BLOCK_V):
            v = v0 + lanes
            live = is_mask[:, None] & (v < V)[None, :]  # fixed tokens load nothing
            v64 = v.to(tl.int64)[None, :]
            logit = tl.load(cond_rows + v64 * stride_cv, mask=live, other=0.0).to(tl.float32)
            if GUIDANCE != 0:
                uncond = tl.load(uncond_rows + v64 * stride_uv, mask=live, other=0.0).to(tl.float32)
                scaled = (logit - uncond) * guidance_scale
                if GUIDANCE == 1:
                    logit = logit + scaled
                else:
                    logit = uncond + scaled
            if TEMPERATURE == 1:
                logit = tl.math.div_rn(logit, softmax_temperature)  # correctly rounded, as torch on CPU
            elif TEMPERATURE == 2:
                logit = logit * softmax_temperature  # the fp32 reciprocal: torch's CUDA division by a scalar
            score = logit
            if USE_GUMBEL:
                if NOISE == 0:
                    u = tl.load(noise_rows + v64 * stride_sv, mask=live, other=0.5)
                else:
                    # One Philox call per 4 elements: element v takes word v % 4 of counter v // 4.
                    word = (v0 // 4 + tl.arange(0, BLOCK_V // 4)).to(tl.uint32)[None, :]
                    zero = word * 0 + token_word[:, None] * 0
                    r0, r1, r2, r3 = tl.philox(seed, zero + word, zero + token_word[:, None],
                                               zero + offset.to(tl.uint32), zero)  # 4th word 0: sample noise
                    bits = tl.reshape(tl.join(tl.join(r0, r1), tl.join(r2, r3)), (ROWS, BLOCK_V))
                    u = (bits >> 8).to(tl.float32) * 5.9604644775390625e-08  # 24-bit uniform in [0, 1)
                score = logit + gumbel_temperature * _gumbel(u, FAST_LOG)
            score = tl.where(live, score, float("-inf"))
            # Each lane sees increasing indices: replace on strictly greater (first index on ties),
            # on the first NaN (torch.argmax: NaN is the maximum), and everything on the first tile.
            take = (score > best) | ((score != score) & (best == best)) | (v0 == 0)
            best = tl.where(take, score, best)
            best_logit = tl.where(take, logit, best_logit)
            best_idx = tl.where(take, v[None, :], best_idx)
        # One reduction for (max score, first index): order-preserving int32 key of the score
        # (negatives' magnitude bits flipped, -0.0 -> +0.0, NaN -> INT32_MAX above +inf) in the
        # high word, INT32_MAX - index in the low word.
        score_bits = best.to(tl.int32, bitcast=True)
        key = tl.where(score_bits >= 0, score_bits, score_bits ^ 0x7FFFFFFF)
        key = tl.where(best == 0.0, 0, key)
        key = tl.where(best != best, 2147483647, key)
        packed = (key.to(tl.int64) << 32) | (2147483647 - best_idx).to(tl.int64)
        idx = 2147483647 - (tl.max(packed, axis=1) & 0xFFFFFFFF).to(tl.int32)
        # Indices are distinct across lanes: one term survives (a -0.0 logit may come out as
        # +0.0, which changes no comparison below).
        picked = tl.sum(tl.where(best_idx == idx[:, None], best_logit, 0.0), axis=1)
        token = tl.where(is_mask, idx.to(tl.int64), current)
        sampled_logit = tl.where(is_mask, picked, float("inf"))

    out_row = out_ptr + b * K
    tl.store(out_row + ks, token, mask=in_k)
    if not LAST_STEP:
        confidence = sampled_logit
        if USE_GUMBEL:
            if NOISE == 0:
                u_c = tl.load(u_conf_ptr + b * stride_qb + ks64 * stride_qk, mask=in_k, other=0.5)
            else:
                zero_k = token_word * 0
                c0, _c1, _c2, _c3 = tl.philox(seed, zero_k, token_word, zero_k + offset.to(tl.uint32),
                                              zero_k + 1)  # 4th word 1: confidence noise
                u_c = (c0 >> 8).to(tl.float32) * 5.9604644775390625e-08
            confidence = confidence + gumbel_temperature * _gumbel(u_c, FAST_LOG)
        conf_row = conf_ptr + b * K
        tl.store(conf_row + ks, confidence, mask=in_k)
        # Barrier, then a gpu-scope acq_rel RMW: this program's stores (ids, confidences) are
        # released before its arrival is counted; the last arrival acquires everyone's.
        tl.debug_barrier()
        arrived = tl.atomic_add(counter_ptr + b, 1, sem="acq_rel", scope="gpu")
        if arrived == blocks_per_row - 1:
            tl.atomic_xchg(counter_ptr + b, 0, sem="relaxed", scope="gpu")  # ready for the next launch / replay
            all_k = tl.arange(0, BLOCK_K)
            valid = all_k < K
            conf = tl.load(conf_row + all_k, mask=valid, other=0.0, volatile=True)
            ids0 = tl.load(ids_ptr + all_k.to(tl.int64) * stride_ik, mask=valid, other=0)  # row 0 of ids
            n = tl.sum((valid & (ids0 == mask_id)).to(tl.int32), axis=0) - 1
            n = tl.maximum(tl.minimum(n, schedule_mask_len), 1)
            bits = conf.to(tl.int32, bitcast=True)
            ckey = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
            ckey = tl.where(conf == 0.0, 0, ckey)
            ckey = tl.where(conf != conf, 2147483647, ckey)  # NaN above +inf: torch.sort's order
            ckey = tl.where(valid, ckey, 2147483647)
            if RANK_CUTOFF:
                # cut = the smallest key with #(keys <= key) >= n, i.e. the n-th smallest.
                at_most = tl.sum((valid[None, :] & (ckey[None, :] <= ckey[:, None])).to(tl.int32), axis=1)
                cut = tl.min(tl.where(valid & (at_most >= n), ckey, 2147483647), axis=0).to(tl.int64)
            else:
                # The same key by binary search over the 2^32 key values (32 halvings).
                ckey64 = ckey.to(tl.int64)
                lo = tl.full((), -2147483648, tl.int64)
                hi = tl.full((), 2147483647, tl.int64)
                for _ in range(32):
                    mid = (lo + hi) >> 1
                    enough = tl.sum((valid & (ckey64 <= mid)).to(tl.int32), axis=0) >= n
                    hi = tl.where(enough, mid, hi)
                    lo = tl.where(enough, lo, mid + 1)
                cut = lo
            # A NaN cut-off compares false everywhere: move it below every key.
            cut = tl.where(cut == 2147483647, -4294967296, cut)
            remask = valid & (ckey.to(tl.int64) <= cut)
            tl.store(out_row + all_k, tl.zeros((BLOCK_K,), tl.int64) + mask_id, mask=remask)


def kernel_config(k: int, v: int, *, rows: int | None = None, rank_cutoff: bool | None = None) -> dict:
    """Launch configuration of `_maskgit_step_kernel` for K tokens and vocabulary V.

    `rows` (tokens per program, a power of two) and `rank_cutoff` override the defaults (tests).
    """
    block_v = max(_MIN_BLOCK_V, min(_TILE, triton.next_power_of_2(v)))
    block_k = triton.next_power_of_2(k)
    if rows is None:
        rows = min(block_k, max(1, _TILE // block_v))
    if rank_cutoff is None:
        rank_cutoff = block_k <= _MAX_RANK_K
    # 8 logits per thread and tensor in a full tile; fewer warps for a smaller one (a small V times
    # a small K), whose threads would otherwise hold nothing. Not measured on a GPU.
    num_warps = max(1, min(4, rows * block_v // 256))
    return dict(ROWS=rows, BLOCK_V=block_v, BLOCK_K=block_k, RANK_CUTOFF=rank_cutoff, num_warps=num_warps)


# Arrival counters, one zero-initialised int32 buffer per device (docs/kernels/maskgit_step.md).
# Every buffer ever handed to a launch stays referenced here: a captured CUDA graph keeps its address.
_COUNTERS: dict[torch.device, list[torch.Tensor]] = {}


def _arrival_counters(device: torch.device, rows: int) -> torch.Tensor:
    buffers = _COUNTERS.setdefault(device, [])
    if buffers and buffers[-1].numel() >= rows:
        return buffers[-1]
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        # Allocating now would put the buffer in the graph's private pool: use a zeroed one that
        # belongs to this graph only (its memset is captured and replayed with the kernel).
        return torch.zeros(rows, dtype=torch.int32, device=device)
    size = max(rows, 2 * buffers[-1].numel() if buffers else 256)
    buffers.append(torch.zeros(size, dtype=torch.int32, device=device))
    return buffers[-1]




def _seed_halves(seed: int) -> tuple[int, int]:
    """(low, high) 32-bit words of the seed as a 64-bit two's-complement integer."""
    s = seed & 0xFFFFFFFFFFFFFFFF
    return s & 0xFFFFFFFF, s >> 32


def _launch_plan(cond, uncond, ids, u_sample, u_conf, seed_tensor, *, mask_id, guidance_scale, guidance_anchor,
                 softmax_temperature, gumbel_temperature, schedule_mask_len, last_step, seed, offset, rows=None,
                 rank_cutoff=None, device_type=None):
    """(output, its KernelLaunch) for validated inputs with B >= 1. `rows` / `rank_cutoff` override the
    launch configuration (tests; see `kernel_config`); `device_type` overrides the tensors' device type
    (ahead-of-time jobs: "cuda" for meta tensors)."""
    b, k, v = cond.shape
    device = cond.device
    on_cuda = (device_type or device.type) == "cuda"
    out = torch.empty((b, k), dtype=torch.int64, device=device)
    if uncond is None:
        guidance, uncond = _GUIDANCE_NONE, cond  # the pointer is not read
    else:
        guidance = _GUIDANCE_COND if guidance_anchor == "cond" else _GUIDANCE_UNCOND
    if softmax_temperature is None:
        temperature_mode, temperature_arg = _TEMPERATURE_NONE, 1.0
    elif on_cuda:
        temperature_mode = _TEMPERATURE_RECIPROCAL
        temperature_arg = float(np.float32(1.0) / np.float32(softmax_temperature))  # torch: 1.0f / float(T)
    else:
        temperature_mode, temperature_arg = _TEMPERATURE_DIVIDE, float(softmax_temperature)
    use_gumbel = gumbel_temperature != 0.0  # t = 0: logits + 0 * g(u) ranks and compares like logits
    if u_sample is not None:
        noise_mode, seed_lo, seed_hi = _NOISE_GIVEN, 0, 0
    elif seed_tensor is not None:
        noise_mode, seed_lo, seed_hi = _NOISE_SEED_PTR, 0, 0
    else:
        noise_mode = _NOISE_SEED_ARG
        seed_lo, seed_hi = _seed_halves(seed)
    if u_sample is None:  # placeholders for pointers that are not read
        u_sample, u_conf = cond, cond[:, :, 0]
    if seed_tensor is None:
        seed_tensor = ids
    if last_step:
        conf, counters = out, out  # not read
    else:
        conf = torch.empty((b, k), dtype=torch.float32, device=device)
        counters = _arrival_counters(device, b)
    cfg = kernel_config(k, v, rows=rows, rank_cutoff=rank_cutoff)
    # Schedule counts beyond [0, K] give the same mask_len (it is clamped to [1, K - 1] anyway)
    # and keep the kernel argument in int32.
    schedule_mask_len = max(0, min(int(schedule_mask_len), k))
    return out, KernelLaunch(_maskgit_step_kernel, (b * triton.cdiv(k, cfg["ROWS"]),), (
        cond, uncond, ids, out, u_sample, u_conf, seed_tensor, conf, counters,
        cond.stride(0), cond.stride(1), cond.stride(2), uncond.stride(0), uncond.stride(1), uncond.stride(2),
        ids.stride(0), ids.stride(1), u_sample.stride(0), u_sample.stride(1), u_sample.stride(2),
        u_conf.stride(0), u_conf.stride(1),
        k, v, mask_id, float(guidance_scale), temperature_arg, float(gumbel_temperature), schedule_mask_len,
        seed_lo, seed_hi, int(offset)), dict(
        GUIDANCE=guidance, TEMPERATURE=temperature_mode, USE_GUMBEL=use_gumbel, NOISE=noise_mode,
        FAST_LOG=noise_mode != _NOISE_GIVEN and on_cuda and not interpreting(), LAST_STEP=bool(last_step),
        RANK_CUTOFF=cfg["RANK_CUTOFF"], ROWS=cfg["ROWS"], BLOCK_V=cfg["BLOCK_V"], BLOCK_K=cfg["BLOCK_K"],
        num_warps=cfg["num_warps"],
        # No FMA contraction: (c - u) * s + anchor and t * g + logit round twice, as in torch.
        enable_fp_fusion=False))


def _maskgit_step_triton(cond, uncond, ids, u_sample, u_conf, seed_tensor, **kwargs):
    """Triton path (inputs validated): one launch of `_maskgit_step_kernel` (see `_launch_plan`)."""
    if cond.shape[0] == 0:
        return torch.empty(ids.shape, dtype=torch.int64, device=cond.device)
    out, kernel_launch = _launch_plan(cond, uncond, ids, u_sample, u_conf, seed_tensor, **kwargs)
    launch(OP, kernel_launch)
    return out


# ---- validation, custom op, public launcher --------------------------------------------------------

# Under torch.compile, scalars that change between calls are traced symbolically: their types are
# checked, their values are not (that needs a concrete value); the op receives them as they are.
_SYMBOLIC = (torch.SymInt, torch.SymFloat)


def _concrete(x) -> bool:
    return not isinstance(x, _SYMBOLIC) and not torch.compiler.is_compiling()


def _is_int(x) -> bool:
    return isinstance(x, (numbers.Integral, torch.SymInt)) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, (numbers.Real, *_SYMBOLIC)) and not isinstance(x, bool)


def _is_finite(x) -> bool:
    return not _concrete(x) or math.isfinite(x)


def _as_float(x):
    return float(x) if _concrete(x) else x


def _as_int(x):
    return int(x) if _concrete(x) else x


def _validate(cond_logits, uncond_logits, ids, *, mask_id, guidance_scale, guidance_anchor, softmax_temperature,
              gumbel_temperature, schedule_mask_len, last_step, noise, seed, offset) -> None:
    """Types, shapes, dtypes, devices and scalar values only (no device data is read). While torch.compile
    traces, scalar values are not checked (they may be symbolic); types are."""
    check_tensor("cond_logits", cond_logits, ndim=3, layout="(B, K, V)")
    b, k, v = cond_logits.shape
    device = cond_logits.device
    if uncond_logits is not None:
        if not isinstance(uncond_logits, torch.Tensor):
            raise TypeError(f"uncond_logits must be a torch.Tensor or None, got {type(uncond_logits).__name__}")
        if tuple(uncond_logits.shape) != (b, k, v):
            raise ValueError(f"uncond_logits must have the shape of cond_logits {(b, k, v)}, "
                             f"got {tuple(uncond_logits.shape)}")
        check_tensor("uncond_logits", uncond_logits, device=device, device_of="cond_logits")
    check_tensor("ids", ids, dtypes=INDEX_DTYPES, device=device, device_of="cond_logits")
    if tuple(ids.shape) != (b, k):
        raise ValueError(f"ids must have shape (B, K) = {(b, k)} from cond_logits, got {tuple(ids.shape)}")
    if not 1 <= k <= _MAX_K:
        raise ValueError(f"K (tokens) must be in [1, {_MAX_K}], got cond_logits of shape {(b, k, v)}")
    if not 1 <= v <= _MAX_INT32:
        raise ValueError(f"V (vocabulary) must be in [1, 2^31), got cond_logits of shape {(b, k, v)}")
    if b * k > _MAX_INT32:
        raise ValueError(f"B * K must be below 2^31, got cond_logits of shape {(b, k, v)}")
    if not _is_int(mask_id) or (_concrete(mask_id) and mask_id != v):
        raise ValueError(f"mask_id must be the codebook size V = {v} (the vocabulary of cond_logits), "
                         f"got {mask_id!r}")
    if not _is_real(guidance_scale) or not _is_finite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite real number, got {guidance_scale!r}")
    if guidance_anchor not in GUIDANCE_ANCHORS:
        raise ValueError(f"guidance_anchor must be one of {GUIDANCE_ANCHORS}, got {guidance_anchor!r}")
    if softmax_temperature is not None and (not _is_real(softmax_temperature) or not _is_finite(softmax_temperature)
                                            or (_concrete(softmax_temperature) and softmax_temperature <= 0)):
        raise ValueError(f"softmax_temperature must be None or a finite number > 0, got {softmax_temperature!r}")
    if not _is_real(gumbel_temperature) or not _is_finite(gumbel_temperature):
        raise ValueError(f"gumbel_temperature must be a finite real number, got {gumbel_temperature!r}")
    if not _is_int(schedule_mask_len):
        raise TypeError(f"schedule_mask_len must be an int, got {type(schedule_mask_len).__name__}")
    if not isinstance(last_step, bool):
        raise TypeError(f"last_step must be a bool, got {type(last_step).__name__}")
    if (noise is None) == (seed is None):
        raise ValueError("give exactly one of noise=(sample_noise, confidence_noise) or seed=, got "
                         + ("both" if noise is not None else "neither"))
    if noise is not None:
        if not isinstance(noise, (tuple, list)) or len(noise) != 2:
            raise TypeError(f"noise must be a tuple (sample_noise, confidence_noise), got {type(noise).__name__}"
                            + (f" of length {len(noise)}" if isinstance(noise, (tuple, list)) else ""))
        for name, t, shape in (("sample_noise", noise[0], (b, k, v)), ("confidence_noise", noise[1], (b, k))):
            check_tensor(name, t, dtypes=(torch.float32,), device=device, device_of="cond_logits")
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    else:
        if isinstance(seed, torch.Tensor):
            if seed.dtype != torch.int64 or seed.numel() != 1:
                raise TypeError(f"a tensor seed must hold one int64, got dtype {seed.dtype} and shape "
                                f"{tuple(seed.shape)}")
            check_tensor("seed", seed, dtypes=(torch.int64,), device=device, device_of="cond_logits")
        elif not _is_int(seed) or (_concrete(seed) and not -2**63 <= seed < 2**63):
            raise ValueError(f"seed must be an int in [-2^63, 2^63) or a 1-element int64 tensor, got {seed!r}")
        if not _is_int(offset) or (_concrete(offset) and not 0 <= offset < 2**32):
            raise ValueError(f"offset must be an int in [0, 2^32), got {offset!r}")


@torch.library.custom_op("titok::maskgit_step", mutates_args=())
def _maskgit_step_op(cond_logits: torch.Tensor, uncond_logits: torch.Tensor | None, ids: torch.Tensor,
                     sample_noise: torch.Tensor | None, confidence_noise: torch.Tensor | None,
                     seed_tensor: torch.Tensor | None, mask_id: int, guidance_scale: float, guidance_anchor: str,
                     softmax_temperature: float | None, gumbel_temperature: float, schedule_mask_len: int,
                     last_step: bool, seed: int | None, offset: int, backend: str) -> torch.Tensor:
    """Next ids (B, K) int64. Noise: (sample_noise, confidence_noise), seed_tensor or seed."""
    params = dict(mask_id=mask_id, guidance_scale=guidance_scale, guidance_anchor=guidance_anchor,
                  softmax_temperature=softmax_temperature, gumbel_temperature=gumbel_temperature,
                  schedule_mask_len=schedule_mask_len, last_step=last_step)
    not_applicable = interpreter_dtype_issue(cond_logits=cond_logits, uncond_logits=uncond_logits)
    if resolve_backend(OP, backend, cond_logits.device, not_applicable) == "torch":
        if ids.shape[0] == 0:
            return ids.new_empty(ids.shape, dtype=torch.int64)
        if sample_noise is None:
            seed_value = int(seed_tensor.item()) if seed_tensor is not None else seed  # .item(): a host sync on CUDA
            sample_noise, confidence_noise = torch_noise(cond_logits, seed_value, offset)
        return maskgit_step_torch(cond_logits, uncond_logits, ids, sample_noise, confidence_noise, **params)
    kwargs = dict(params, seed=seed, offset=offset)
    if cond_logits.device.type == "cuda":
        with torch.cuda.device(cond_logits.device):  # Triton launches on the current device
            return _maskgit_step_triton(cond_logits, uncond_logits, ids, sample_noise, confidence_noise,
                                        seed_tensor, **kwargs)
    return _maskgit_step_triton(cond_logits, uncond_logits, ids, sample_noise, confidence_noise, seed_tensor,
                                **kwargs)


@_maskgit_step_op.register_fake
def _(cond_logits, uncond_logits, ids, sample_noise, confidence_noise, seed_tensor, mask_id, guidance_scale,
      guidance_anchor, softmax_temperature, gumbel_temperature, schedule_mask_len, last_step, seed, offset, backend):
    return ids.new_empty(ids.shape, dtype=torch.int64)


def maskgit_step(cond_logits: torch.Tensor, uncond_logits: torch.Tensor | None, ids: torch.Tensor, *,
                 mask_id: int, guidance_scale: float = 0.0, guidance_anchor: str = "cond",
                 softmax_temperature: float | None = None, gumbel_temperature: float = 0.0,
                 schedule_mask_len: int = 1, last_step: bool = False,
                 noise: tuple[torch.Tensor, torch.Tensor] | None = None, seed: int | torch.Tensor | None = None,
                 offset: int = 0, backend: str = "auto") -> torch.Tensor:
    """One MaskGIT sampling step: the next ids (B, K) int64 (the module docstring has the math).

    cond_logits / uncond_logits: (B, K, V) fp32/fp16/bf16 (uncond None: no guidance); ids (B, K)
    int32/int64 with mask_id == V marking masked tokens. Noise: exactly one of
    `noise=(sample_noise (B, K, V), confidence_noise (B, K))` fp32 uniforms (parity with the
    official sampler) or `seed` (Python int or 1-element int64 tensor on the device) with
    `offset` (the step index: distinct per step). backend: "auto", "triton" or "torch"
    (titok_kernels.backend describes the choice).
    """
    _validate(cond_logits, uncond_logits, ids, mask_id=mask_id, guidance_scale=guidance_scale,
              guidance_anchor=guidance_anchor, softmax_temperature=softmax_temperature,
              gumbel_temperature=gumbel_temperature, schedule_mask_len=schedule_mask_len, last_step=last_step,
              noise=noise, seed=seed, offset=offset)
    check_backend(backend)
    sample_noise, confidence_noise = noise if noise is not None else (None, None)
    seed_tensor = seed.reshape(1) if isinstance(seed, torch.Tensor) else None
    seed_int = None if seed is None or isinstance(seed, torch.Tensor) else _as_int(seed)
    return torch.ops.titok.maskgit_step(
        cond_logits, uncond_logits, ids, sample_noise, confidence_noise, seed_tensor, _as_int(mask_id),
        _as_float(guidance_scale), guidance_anchor,
        None if softmax_temperature is None else _as_float(softmax_temperature), _as_float(gumbel_temperature),
        _as_int(schedule_mask_len), last_step, seed_int, _as_int(offset), backend)


# ---- ahead-of-time compile jobs ------------------------------------------------------------------------

# Representative calls (B = 8, softmax temperature 0.9, Gumbel temperature 1.0, contiguous tensors):
# (name, logits dtype, K, V, guidance anchor or None, noise, last step). The TiTok generators
# (K = 32 / 64 / 128, V = 4096) with and without guidance, fp32 and bf16 logits, noise from a seed
# tensor or int (the fast path) or given (parity); the MaskGIT 512px baseline (K = 1024, V = 1024);
# a small-V multi-token tile.
_AOT_CALLS = [
    ("L32 fp32 guided seed-tensor", torch.float32, 32, 4096, "cond", "seed-tensor", False),
    ("L32 bf16 guided seed-tensor", torch.bfloat16, 32, 4096, "cond", "seed-tensor", False),
    ("B64 fp32 unguided seed-int", torch.float32, 64, 4096, None, "seed-int", False),
    ("B64 bf16 unguided seed-int", torch.bfloat16, 64, 4096, None, "seed-int", False),
    ("S128 bf16 uncond-anchor given-noise", torch.bfloat16, 128, 4096, "uncond", "given", False),
    ("L32 fp32 guided given-noise", torch.float32, 32, 4096, "cond", "given", False),
    ("L32 fp32 guided last-step", torch.float32, 32, 4096, "cond", "seed-tensor", True),
    ("MaskGIT512 bf16 guided seed-tensor", torch.bfloat16, 1024, 1024, "cond", "seed-tensor", False),
    ("small-V fp32 guided given-noise", torch.float32, 33, 64, "cond", "given", False),
]


def aot_jobs() -> list[CompileJob]:
    """The launch of every representative call as on a CUDA device, for sm_90 and sm_80."""
    jobs = []
    b = 8
    for name, dtype, k, v, anchor, noise, last in _AOT_CALLS:
        cond = torch.empty((b, k, v), dtype=dtype, device="meta")
        uncond = None if anchor is None else torch.empty((b, k, v), dtype=dtype, device="meta")
        ids = torch.empty((b, k), dtype=torch.int64, device="meta")
        u_sample, u_conf = ((torch.empty((b, k, v), device="meta"), torch.empty((b, k), device="meta"))
                            if noise == "given" else (None, None))
        seed_tensor = torch.empty(1, dtype=torch.int64, device="meta") if noise == "seed-tensor" else None
        _, kernel_launch = _launch_plan(
            cond, uncond, ids, u_sample, u_conf, seed_tensor, mask_id=v, guidance_scale=2.0,
            guidance_anchor=anchor or "cond", softmax_temperature=0.9, gumbel_temperature=1.0,
            schedule_mask_len=k // 2, last_step=last, seed=12345 if noise == "seed-int" else None, offset=3,
            device_type="cuda")
        jobs += [CompileJob(f"{name} sm{capability}", capability, kernel_launch) for capability in (90, 80)]
    return jobs
