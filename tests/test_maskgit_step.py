"""titok_kernels.maskgit_step: exact parity with the torch reference, ties, row-0 clamps, NaN rule, seeded noise
statistics, validation, the backend contract (TITOK_KERNEL_BACKEND, fallback warnings, launch counts),
torch.compile, AOT compiles; `gpu` tests for CUDA (skipped here).

Exactness criterion: with the same uniform noise the Triton path returns IDENTICAL ids to
`maskgit_step_torch` wherever the two Gumbel transforms agree. Under TRITON_INTERPRET=1 the kernel's
`tl.log` is `numpy.log`, which differs from torch's CPU `log` by one ulp on a fraction of inputs; on
CUDA it is libdevice's `__nv_logf` in Triton's FTZ build, torch's is the logf of torch's own CUDA
build: the same algorithm, on which FTZ changes nothing for these clamped (normal) inputs, but not
guaranteed to be the same release. So the parity tests draw noise on which the two transforms agree
bit for bit (`_agreeing_uniforms` on CPU, `_kernel_agreeing_uniforms` with the kernel's own transform
on any device); everything else (guidance/temperature arithmetic order, argmax ties, the cut-off,
re-masking) must then match exactly. Which GPU tests compare what, and why: docs/gpu-tests.md.
"""
import warnings

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import titok_kernels
from titok_kernels import backend as backend_module
from titok_kernels.aot import compile_jobs
from titok_kernels.maskgit_step import _gumbel, _maskgit_step_triton, aot_jobs, kernel_config, maskgit_step
from titok_kernels.reference import gumbel, maskgit_step_torch, torch_noise_seed
from kernel_utils import BACKENDS, assert_compiles_cleanly, assert_twice_torch_max_error, needs_triton_cpu
from tests.shapes import MASKGIT_STEP_B, MASKGIT_STEP_K, MASKGIT_STEP_V


# ---- inputs -------------------------------------------------------------------------------------------

def _gumbel_numpy(u: torch.Tensor) -> torch.Tensor:
    """The Gumbel transform as the interpreter computes it (numpy float32 ops)."""
    tiny = np.float32(1e-20)
    x = u.numpy()
    return torch.from_numpy(-np.log(np.maximum(-np.log(np.maximum(x, tiny)), tiny)))


def _agreeing_uniforms(shape, gen: torch.Generator) -> torch.Tensor:
    """fp32 uniforms in [0, 1) on which torch's and numpy's Gumbel transforms agree bit for bit
    (elements where they differ by an ulp are redrawn)."""
    u = torch.rand(shape, generator=gen)
    for _ in range(100):
        bad = gumbel(u).view(torch.int32) != _gumbel_numpy(u).view(torch.int32)
        if not bad.any():
            return u
        u[bad] = torch.rand(int(bad.sum()), generator=gen)
    raise AssertionError("could not draw agreeing uniforms")


@triton.jit
def _gumbel_probe_kernel(u_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """The kernel's given-noise Gumbel transform (`_gumbel`, FAST_LOG off) of n contiguous uniforms."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n
    u = tl.load(u_ptr + offs, mask=live, other=0.5)
    tl.store(out_ptr + offs, _gumbel(u, False), mask=live)


def _kernel_gumbel(u: torch.Tensor) -> torch.Tensor:
    """`_gumbel` as the step kernel computes it on u's device (compiled like the step: no FMA contraction)."""
    flat = u.contiguous().reshape(-1)
    out = torch.empty_like(flat)
    block = 1024
    _gumbel_probe_kernel[(triton.cdiv(flat.numel(), block),)](flat, out, flat.numel(), BLOCK=block,
                                                              enable_fp_fusion=False)
    return out.reshape(u.shape)


def _kernel_agreeing_uniforms(shape, gen: torch.Generator) -> torch.Tensor:
    """fp32 uniforms on gen's device on which torch's Gumbel transform and the kernel's (`_kernel_gumbel`)
    agree bit for bit (elements where they differ are redrawn)."""
    u = torch.rand(shape, generator=gen, device=gen.device)
    for _ in range(100):
        bad = gumbel(u).view(torch.int32) != _kernel_gumbel(u).view(torch.int32)
        if not bad.any():
            return u
        u[bad] = torch.rand(int(bad.sum()), generator=gen, device=gen.device)
    raise AssertionError("could not draw agreeing uniforms")


def _noise(b, k, v, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return _agreeing_uniforms((b, k, v), gen), _agreeing_uniforms((b, k), gen)


def _ids(b, k, v, phase, gen):
    """ids for a step: 'first' all masked; 'middle' about half masked; 'late' a few masked (at least
    the last two tokens of each row)."""
    fixed = torch.randint(0, v, (b, k), generator=gen)
    keep = {"first": 0.0, "middle": 0.5, "late": 0.85}[phase]
    ids = torch.where(torch.rand(b, k, generator=gen) < keep, fixed, torch.full_like(fixed, v))
    ids[:, -2:] = v
    return ids


def _logits(b, k, v, dtype, gen, scale=3.0):
    return (scale * torch.randn(b, k, v, generator=gen)).to(dtype)


def _run_both(cond, uncond, ids, noise, **kw):
    """(triton ids, reference ids) for the same inputs and noise."""
    got = maskgit_step(cond, uncond, ids, noise=noise, backend="triton", mask_id=cond.shape[-1], **kw)
    ref = maskgit_step_torch(cond, uncond, ids, *noise, mask_id=cond.shape[-1], **kw)
    return got, ref


# ---- exact parity (interpreter) --------------------------------------------------------------------------
# (B, K, V, dtype, guidance anchor or None, softmax T, gumbel t, phase, schedule_mask_len, last_step).
# Every value of MASKGIT_STEP_B / _K / _V appears, the large V only at small B * K (the interpreter
# runs one program per token there).
PARITY_CASES = [
    (8, 32, 64, torch.float32, "cond", None, 4.3, "first", 29, False),      # TiTok-L first step
    (8, 33, 64, torch.float16, "uncond", 0.9, 2.7, "middle", 9, False),
    (3, 128, 64, torch.float32, None, 0.8, 3.1, "middle", 40, False),        # binary-search cut-off
    (8, 128, 64, torch.float32, "cond", None, 0.0, "late", 5, False),
    (1, 8, 64, torch.float16, "uncond", 1.2, 1.0, "late", 2, False),
    (3, 32, 64, torch.float32, "cond", 0.7, 2.5, "middle", 0, True),        # last step
    (1, 8, 1000, torch.float32, "cond", 0.8, 2.0, "first", 7, False),
    (3, 8, 1000, torch.float16, "uncond", None, 3.3, "middle", 3, False),
    (1, 33, 1000, torch.float32, None, 1.3, 0.0, "first", 30, False),
    (1, 8, 4096, torch.float32, "cond", 0.8, 4.4, "middle", 2, False),
    (3, 8, 4096, torch.float16, "uncond", None, 0.0, "late", 1, True),
    (1, 32, 4096, torch.float32, "cond", None, 9.5, "first", 31, False),
]


def test_parity_cases_cover_the_shared_shape_lists():
    assert {c[0] for c in PARITY_CASES} == set(MASKGIT_STEP_B)
    assert {c[1] for c in PARITY_CASES} == set(MASKGIT_STEP_K)
    assert {c[2] for c in PARITY_CASES} == set(MASKGIT_STEP_V)


@needs_triton_cpu
@pytest.mark.parametrize("case", PARITY_CASES, ids=lambda c: f"B{c[0]}-K{c[1]}-V{c[2]}-{str(c[3])[6:]}-g{c[4]}-"
                                                              f"T{c[5]}-t{c[6]}-{c[7]}-n{c[8]}-last{c[9]}")
def test_triton_matches_reference_exactly(case):
    b, k, v, dtype, anchor, temperature, t, phase, n, last = case
    gen = torch.Generator().manual_seed(b * 1000 + k * 10 + v)
    cond, uncond = _logits(b, k, v, dtype, gen), _logits(b, k, v, dtype, gen)
    ids = _ids(b, k, v, phase, gen)
    # Scales that fp32 does not represent exactly: torch rounds them to fp32 and multiplies in fp32.
    kw = dict(guidance_scale=2.3 if anchor else 0.0, guidance_anchor=anchor or "cond",
              softmax_temperature=temperature, gumbel_temperature=t, schedule_mask_len=n, last_step=last)
    got, ref = _run_both(cond, uncond if anchor else None, ids, _noise(b, k, v), **kw)
    assert got.dtype == torch.int64 and got.shape == (b, k)
    assert torch.equal(got, ref)
    if not last:  # the step did something: masked tokens got ids, and some were re-masked
        was_masked = ids == v
        assert (got[was_masked] != v).any() and (got == v).any()


@needs_triton_cpu
def test_launch_configurations_agree():
    """Tokens per program (1 .. all) and both cut-off methods (rank count, binary search) give the
    same ids; with noise drawn in-kernel too (the stream does not depend on the tiling)."""
    b, k, v = 2, 17, 64
    gen = torch.Generator().manual_seed(1)
    cond, uncond = _logits(b, k, v, torch.float32, gen), _logits(b, k, v, torch.float32, gen)
    cond[:, :, :20] = cond[:, :, :20].round()  # some exact ties as well
    ids = _ids(b, k, v, "middle", gen)
    u_sample, u_conf = _noise(b, k, v)
    kw = dict(mask_id=v, guidance_scale=1.5, guidance_anchor="cond", softmax_temperature=0.9, gumbel_temperature=2.0,
              schedule_mask_len=6, last_step=False, offset=3)
    ref = maskgit_step_torch(cond, uncond, ids, u_sample, u_conf, **{x: kw[x] for x in kw if x != "offset"})
    seeded = None
    for rows, rank in [(None, None), (1, True), (4, False), (32, True), (32, False)]:
        got = _maskgit_step_triton(cond, uncond, ids, u_sample, u_conf, None, seed=None, rows=rows, rank_cutoff=rank,
                                   **kw)
        assert torch.equal(got, ref), (rows, rank)
        drawn = _maskgit_step_triton(cond, uncond, ids, None, None, None, seed=11, rows=rows, rank_cutoff=rank, **kw)
        seeded = drawn if seeded is None else seeded
        assert torch.equal(drawn, seeded), (rows, rank)


def _tie_inputs(b, k, v, gen):
    """Logits on a coarse integer grid: with gumbel t = 0 many argmax ties (first index wins) and
    many equal sampled logits, hence tied confidences at the cut-off."""
    cond = torch.randint(0, 3, (b, k, v), generator=gen).float()
    cond[:, ::3] = 2.0  # every third token: all logits equal -> index 0, confidence 2
    return cond


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k, rank", [(32, None), (32, False), (128, None)])
def test_ties_first_index_and_cutoff_ties_remask_more(backend, k, rank):
    b, v = 3, 64
    gen = torch.Generator().manual_seed(k)
    cond = _tie_inputs(b, k, v, gen)
    ids = torch.full((b, k), v)
    u_sample, u_conf = _noise(b, k, v)
    kw = dict(mask_id=v, gumbel_temperature=0.0, schedule_mask_len=4)
    ref = maskgit_step_torch(cond, None, ids, u_sample, u_conf, **kw)
    if backend == "torch":
        got = maskgit_step(cond, None, ids, noise=(u_sample, u_conf), backend="torch", **kw)
    else:
        got = _maskgit_step_triton(cond, None, ids, u_sample, u_conf, None, guidance_scale=0.0, guidance_anchor="cond",
                                   softmax_temperature=None, last_step=False, seed=None, offset=0,
                                   rank_cutoff=rank, **kw)
    assert torch.equal(got, ref)
    # Documented semantics, checked directly: every row's maximum logit is 2, so the sampled id is
    # the first index holding 2; all confidences are 2, so the cut-off (the 4th smallest) is 2 and
    # every token is re-masked ("<=": ties re-mask more).
    first_two = (cond == 2.0).float().argmax(-1)
    assert torch.equal(maskgit_step_torch(cond, None, ids, u_sample, u_conf, **{**kw, "schedule_mask_len": 1},
                                          last_step=True), first_two)
    assert (got == v).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_argmax_first_index_across_tiles_and_signed_zero(backend):
    """V > 1024 (several vocabulary tiles per token): equal maxima in the same lane of different
    tiles, or in different lanes, resolve to the first index; -0.0 and +0.0 are equal maxima; the
    first NaN wins wherever it is."""
    b, k, v = 1, 8, 2100
    cond = torch.full((b, k, v), -3.0)
    cond[0, 0, [5, 1029, 2053]] = 1.0   # lane 5 of tiles 0, 1, 2
    cond[0, 1, [1029, 7]] = 1.0         # tile 1 lane 5, tile 0 lane 7
    cond[0, 2, [2090, 1500]] = 1.0      # both in later tiles
    cond[0, 3, 3], cond[0, 3, 10] = -0.0, 0.0
    cond[0, 4, 3], cond[0, 4, 1030] = 0.0, -0.0
    cond[0, 5] = torch.randint(0, 2, (v,), generator=torch.Generator().manual_seed(0)).float()
    cond[0, 6, 5], cond[0, 6, 1029] = 1.0, float("nan")  # NaN rule within a lane, across tiles
    cond[0, 7, [1030, 2053, 40]] = float("nan")           # first NaN: tile 1 before tile 2, lane order irrelevant
    ids = torch.full((b, k), v)
    noise = _noise(b, k, v)
    got = maskgit_step(cond, None, ids, mask_id=v, last_step=True, noise=noise, backend=backend)
    expected = torch.tensor([[5, 7, 1500, 3, 3, int((cond[0, 5] == 1).nonzero()[0]), 1029, 40]])
    assert torch.equal(got, expected)
    assert torch.equal(got, maskgit_step_torch(cond, None, ids, *noise, mask_id=v, last_step=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cutoff_with_partial_ties(backend):
    """Confidences 0, 1, 1, 1, 2, ... with n = 2: the cut-off is 1, so 4 tokens are re-masked."""
    b, k, v = 2, 8, 64
    cond = torch.full((b, k, v), -5.0)
    best = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    cond[:, torch.arange(k), torch.arange(k) % v] = best  # token j samples id j with logit best[j]
    ids = torch.full((b, k), v)
    noise = _noise(b, k, v)
    got = maskgit_step(cond, None, ids, mask_id=v, schedule_mask_len=2, noise=noise, backend=backend)
    expected = torch.arange(k).repeat(b, 1)
    expected[:, :4] = v
    assert torch.equal(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("row0_masked", [0, 1, 2])
def test_mask_len_clamps_from_row_zero(backend, row0_masked):
    """n = max(1, min(#masked in row 0 - 1, schedule_mask_len)), from row 0 for every row."""
    b, k, v = 3, 16, 64
    gen = torch.Generator().manual_seed(row0_masked)
    cond = _logits(b, k, v, torch.float32, gen)
    ids = torch.full((b, k), v)
    ids[0, row0_masked:] = torch.randint(0, v, (k - row0_masked,), generator=gen)
    ids[2, 5:] = 7  # row 2 has 5 masked tokens
    noise = _noise(b, k, v)
    kw = dict(mask_id=v, gumbel_temperature=1.0, schedule_mask_len=10)
    got = maskgit_step(cond, None, ids, noise=noise, backend=backend, **kw)
    assert torch.equal(got, maskgit_step_torch(cond, None, ids, *noise, **kw))
    # n = 1 here: row 1 (all masked, distinct confidences) re-masks exactly its least confident token.
    assert int((got[1] == v).sum()) == 1
    # Row 0 with 0 masked tokens: all confidences are +inf, the cut-off is +inf, the whole row is
    # re-masked (the official code's behaviour). Row 2's fixed tokens have confidence +inf.
    if row0_masked == 0:
        assert (got[0] == v).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_token(backend):
    b, k, v = 3, 1, 64
    gen = torch.Generator().manual_seed(0)
    cond = _logits(b, k, v, torch.float32, gen)
    ids = torch.tensor([[v], [5], [v]])
    noise = _noise(b, k, v)
    for last in (False, True):
        got = maskgit_step(cond, None, ids, mask_id=v, gumbel_temperature=1.0, last_step=last, noise=noise,
                           backend=backend)
        assert torch.equal(got, maskgit_step_torch(cond, None, ids, *noise, mask_id=v, gumbel_temperature=1.0,
                                                   last_step=last))


@needs_triton_cpu
def test_maskgit_512_token_count():
    """K = 1024 (the MaskGIT 512px baseline): binary-search cut-off over 1024 confidences."""
    b, k, v = 2, 1024, 16
    gen = torch.Generator().manual_seed(5)
    cond, uncond = _logits(b, k, v, torch.float16, gen), _logits(b, k, v, torch.float16, gen)
    ids = _ids(b, k, v, "middle", gen)
    kw = dict(guidance_scale=3.0, guidance_anchor="uncond", gumbel_temperature=2.0, schedule_mask_len=300)
    got, ref = _run_both(cond, uncond, ids, _noise(b, k, v), **kw)
    assert torch.equal(got, ref)
    assert kernel_config(k, v)["RANK_CUTOFF"] is False


@needs_triton_cpu
def test_non_contiguous_and_mixed_dtypes():
    b, k, v = 3, 17, 64
    gen = torch.Generator().manual_seed(2)
    cond = _logits(b, v, k, torch.float16, gen).transpose(1, 2)           # strides (V*K, 1, K)
    uncond = _logits(b, k, 2 * v, torch.float32, gen)[:, :, ::2]          # V stride 2
    ids = _ids(b, k, v, "middle", gen).to(torch.int32).t().contiguous().t()  # int32, transposed
    u_sample, u_conf = _noise(b, k, v)
    noise = (u_sample.transpose(0, 1).contiguous().transpose(0, 1), torch.stack([u_conf, u_conf], -1)[..., 0])
    assert not any(x.is_contiguous() for x in (cond, uncond, ids, *noise))
    kw = dict(guidance_scale=2.0, guidance_anchor="cond", softmax_temperature=0.75, gumbel_temperature=3.0,
              schedule_mask_len=6)
    got, ref = _run_both(cond, uncond, ids, noise, **kw)
    assert torch.equal(got, ref)
    contiguous, _ = _run_both(cond.contiguous(), uncond.contiguous(), ids.contiguous().long(), (u_sample, u_conf), **kw)
    assert torch.equal(got, contiguous)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    k, v = 8, 64
    cond = torch.randn(0, k, v)
    ids = torch.full((0, k), v)
    for kw in (dict(noise=(torch.rand(0, k, v), torch.rand(0, k))), dict(seed=1)):
        out = maskgit_step(cond, cond, ids, mask_id=v, guidance_scale=2.0, backend=backend, **kw)
        assert out.shape == (0, k) and out.dtype == torch.int64


# ---- NaN and inf ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
def test_nan_rule(backend):
    """Documented rule (torch's): the first NaN is the argmax; its confidence is NaN, never re-masked;
    a NaN cut-off re-masks nothing in that row."""
    b, k, v = 3, 8, 64
    gen = torch.Generator().manual_seed(3)
    cond = _logits(b, k, v, torch.float32, gen)
    cond[0, 2, 9] = cond[0, 2, 40] = float("nan")  # row 0, token 2: first NaN at 9
    cond[1, :6, 30] = float("nan")                  # row 1: 6 of 8 tokens NaN -> 4th smallest is NaN
    ids = torch.full((b, k), v)
    noise = _noise(b, k, v)
    kw = dict(mask_id=v, gumbel_temperature=1.0, schedule_mask_len=4)
    got = maskgit_step(cond, None, ids, noise=noise, backend=backend, **kw)
    assert torch.equal(got, maskgit_step_torch(cond, None, ids, *noise, **kw))
    assert got[0, 2] == 9 and (got[0] == v).sum() == 4  # 4 of the 7 finite confidences re-masked
    assert torch.equal(got[1, :6], torch.full((6,), 30)) and (got[1] != v).all()
    sampled = maskgit_step(cond, None, ids, noise=noise, backend=backend, last_step=True, **kw)
    assert sampled[0, 2] == 9 and (sampled[1, :6] == 30).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_inf_logits(backend):
    """+inf ties take the first index; inf - inf under guidance is NaN (then the NaN rule)."""
    b, k, v = 2, 8, 64
    gen = torch.Generator().manual_seed(4)
    cond, uncond = _logits(b, k, v, torch.float32, gen), _logits(b, k, v, torch.float32, gen)
    cond[0, 1, [7, 20]] = float("inf")
    cond[0, 3, :] = -float("inf")
    cond[1, 4, 11] = uncond[1, 4, 11] = float("inf")
    ids = torch.full((b, k), v)
    noise = _noise(b, k, v)
    for last in (True, False):
        kw = dict(mask_id=v, guidance_scale=1.0, gumbel_temperature=2.0, schedule_mask_len=3, last_step=last)
        got = maskgit_step(cond, uncond, ids, noise=noise, backend=backend, **kw)
        assert torch.equal(got, maskgit_step_torch(cond, uncond, ids, *noise, **kw))
        if last:
            assert got[0, 1] == 7 and got[0, 3] == 0 and got[1, 4] == 11


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_minus_inf_token_has_minus_inf_confidence(backend):
    """A token whose logits are all -inf samples index 0 with sampled logit -inf: the least
    confident token, re-masked first."""
    b, k, v = 2, 8, 1100  # two vocabulary tiles
    gen = torch.Generator().manual_seed(9)
    cond = -100.0 + torch.randn(b, k, v, generator=gen)
    cond[:, 2] = -float("inf")
    ids = torch.full((b, k), v)
    noise = _noise(b, k, v)
    kw = dict(mask_id=v, gumbel_temperature=1.0, schedule_mask_len=1)
    got = maskgit_step(cond, None, ids, noise=noise, backend=backend, **kw)
    assert torch.equal(got, maskgit_step_torch(cond, None, ids, *noise, **kw))
    assert torch.equal(got == v, torch.arange(k).expand(b, k) == 2)


# ---- noise drawn from a seed ------------------------------------------------------------------------

def _chi2_pvalue(samples: torch.Tensor, probs: torch.Tensor) -> float:
    from scipy.stats import chisquare

    counts = torch.bincount(samples.flatten(), minlength=probs.numel()).double()
    expected = probs.double() / probs.double().sum() * counts.sum()
    return float(chisquare(counts.numpy(), expected.numpy()).pvalue)


def _seeded(backend, cond, ids, *, rows=None, **kw):
    v = cond.shape[-1]
    if backend == "torch":
        return maskgit_step(cond, None, ids, mask_id=v, backend="torch", **kw)
    seed = kw.pop("seed")
    return _maskgit_step_triton(cond, None, ids, None, None, seed if isinstance(seed, torch.Tensor) else None,
                                mask_id=v, guidance_scale=0.0, guidance_anchor="cond", softmax_temperature=None,
                                seed=None if isinstance(seed, torch.Tensor) else seed, rows=rows,
                                **{"last_step": False, "schedule_mask_len": 1, "offset": 0, **kw})


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_samples_follow_softmax(backend):
    """argmax(l + g) ~ softmax(l) at Gumbel temperature 1: chi-square over V = 8 with 2048 draws
    (one row of 1024 masked tokens per batch row; last step, so ids are the raw samples)."""
    b, k, v = 2, 1024, 8
    logits = torch.tensor([1.5, 0.0, -1.0, 0.5, 2.0, -0.5, 1.0, 0.2])
    cond = logits.expand(b, k, v).contiguous()
    ids = torch.full((b, k), v)
    ids_out = _seeded(backend, cond, ids, rows=1024, seed=1234, gumbel_temperature=1.0, last_step=True)
    assert _chi2_pvalue(ids_out, torch.softmax(logits, 0)) > 1e-3
    assert _chi2_pvalue(ids_out, torch.full((v,), 1.0 / v)) < 1e-6  # the test can tell distributions apart


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_confidence_noise(backend):
    """Equal logits: every sampled logit is equal, so the re-masked half of the tokens is decided by
    the confidence noise alone. Exactly n tokens re-masked; the kept tokens' sampled ids are uniform
    (the confidence noise is independent of the sample noise: the same stream would favour id 0 among
    kept tokens); the re-masked positions are spread evenly; other seeds / offsets give other sets."""
    k, v, n = 1024, 8, 512
    cond = torch.zeros(1, k, v)
    ids = torch.full((1, k), v)
    kw = dict(gumbel_temperature=1.0, schedule_mask_len=n)
    out = _seeded(backend, cond, ids, rows=1024, seed=77, **kw)
    remasked = out[0] == v
    assert int(remasked.sum()) == n
    assert _chi2_pvalue(out[0][~remasked], torch.full((v,), 1.0 / v)) > 1e-3
    groups = remasked.view(16, 64).sum(1)  # re-masked count per block of 64 positions, mean 32
    assert _chi2_pvalue(torch.repeat_interleave(torch.arange(16), groups), torch.full((16,), 1.0 / 16)) > 1e-3
    other_seed = _seeded(backend, cond, ids, rows=1024, seed=78, **kw)[0] == v
    other_offset = _seeded(backend, cond, ids, rows=1024, seed=77, offset=1, **kw)[0] == v
    for other in (other_seed, other_offset):
        overlap = int((other & remasked).sum())
        assert 200 < overlap < 312  # independent halves overlap by 256 +- 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_determinism(backend):
    b, k, v = 3, 32, 64
    gen = torch.Generator().manual_seed(6)
    cond = _logits(b, k, v, torch.float32, gen, scale=1.0)
    ids = _ids(b, k, v, "middle", gen)
    kw = dict(gumbel_temperature=1.0, schedule_mask_len=5)
    a = _seeded(backend, cond, ids, seed=5, **kw)
    assert torch.equal(a, _seeded(backend, cond, ids, seed=5, **kw))
    assert torch.equal(a, _seeded(backend, cond, ids, seed=torch.tensor([5]), **kw))  # tensor seed
    assert not torch.equal(a, _seeded(backend, cond, ids, seed=6, **kw))
    assert not torch.equal(a, _seeded(backend, cond, ids, seed=5, offset=1, **kw))
    big = _seeded(backend, cond, ids, seed=2**62 + 5, **kw)  # the high seed word matters too
    assert not torch.equal(a, big) and torch.equal(big, _seeded(backend, cond, ids, seed=torch.tensor([2**62 + 5]),
                                                                **kw))
    # Public launcher: same result as the internal call.
    assert torch.equal(a, maskgit_step(cond, None, ids, mask_id=v, seed=5, backend=backend, **kw))


def test_torch_backend_seed_mix():
    """The torch backend's generator seed is a documented pure function of (seed, offset)."""
    cond = torch.randn(2, 4, 16)
    ids = torch.full((2, 4), 16)
    gen = torch.Generator().manual_seed(torch_noise_seed(9, 2))
    u_sample, u_conf = torch.rand(2, 4, 16, generator=gen), torch.rand(2, 4, generator=gen)
    kw = dict(mask_id=16, gumbel_temperature=1.0, schedule_mask_len=2)
    assert torch.equal(maskgit_step(cond, None, ids, seed=9, offset=2, backend="torch", **kw),
                       maskgit_step_torch(cond, None, ids, u_sample, u_conf, **kw))
    seeds = {torch_noise_seed(s, o) for s in range(4) for o in range(4)} | {torch_noise_seed(-1, 0)}
    assert len(seeds) == 17 and all(0 <= s < 2**63 for s in seeds)


# ---- validation ------------------------------------------------------------------------------------

def _good():
    return dict(cond_logits=torch.randn(2, 4, 16), uncond_logits=torch.randn(2, 4, 16), ids=torch.full((2, 4), 16),
                mask_id=16, noise=(torch.rand(2, 4, 16), torch.rand(2, 4)))


@pytest.mark.parametrize("change, error, match", [
    (dict(cond_logits=torch.randn(2, 4)), ValueError, r"cond_logits must be 3-D \(B, K, V\), got shape \(2, 4\)"),
    (dict(cond_logits=[1.0]), TypeError, "cond_logits must be a torch.Tensor, got list"),
    (dict(cond_logits=torch.randn(2, 4, 16, dtype=torch.float64)), TypeError, "cond_logits must be float32, "
                                                                              "float16 or bfloat16, got torch.float64"),
    (dict(uncond_logits=torch.randn(2, 4, 15)), ValueError, r"uncond_logits must have the shape of cond_logits "
                                                            r"\(2, 4, 16\), got \(2, 4, 15\)"),
    (dict(uncond_logits=torch.randn(2, 4, 16).int()), TypeError, "uncond_logits must be float32.*torch.int32"),
    (dict(uncond_logits=torch.randn(2, 4, 16, device="meta")), ValueError, "uncond_logits must be on the device"),
    (dict(ids=torch.full((2, 5), 16)), ValueError, r"ids must have shape \(B, K\) = \(2, 4\).* got \(2, 5\)"),
    (dict(ids=torch.full((2, 4, 1), 16)), ValueError, r"ids must have shape"),
    (dict(ids=torch.full((2, 4), 16.0)), TypeError, "ids must be int32 or int64, got torch.float32"),
    (dict(ids=torch.full((2, 4), 16, dtype=torch.int16)), TypeError, "ids must be int32 or int64, got torch.int16"),
    (dict(ids=torch.full((2, 4), 16, device="meta")), ValueError, "ids must be on the device of cond_logits"),
    (dict(mask_id=15), ValueError, r"mask_id must be the codebook size V = 16 .* got 15"),
    (dict(cond_logits=torch.randn(2, 0, 16), uncond_logits=None, ids=torch.full((2, 0), 16)), ValueError,
     r"K \(tokens\) must be in \[1, 1024\]"),
    (dict(cond_logits=torch.randn(1, 1025, 16), uncond_logits=None, ids=torch.full((1, 1025), 16)), ValueError,
     r"K \(tokens\) must be in \[1, 1024\]"),
    (dict(guidance_anchor="both"), ValueError, "guidance_anchor must be one of"),
    (dict(guidance_scale=float("nan")), ValueError, "guidance_scale must be a finite real number"),
    (dict(softmax_temperature=0.0), ValueError, "softmax_temperature must be None or a finite number > 0, got 0.0"),
    (dict(gumbel_temperature=float("inf")), ValueError, "gumbel_temperature must be a finite real number"),
    (dict(schedule_mask_len=2.5), TypeError, "schedule_mask_len must be an int, got float"),
    (dict(last_step=1), TypeError, "last_step must be a bool, got int"),
    (dict(noise=None), ValueError, "give exactly one of noise=.* or seed=, got neither"),
    (dict(seed=3), ValueError, "give exactly one of noise=.* or seed=, got both"),
    (dict(noise=(torch.rand(2, 4, 16),)), TypeError, "noise must be a tuple .* of length 1"),
    (dict(noise=(torch.rand(2, 4, 8), torch.rand(2, 4))), ValueError, r"sample_noise must have shape \(2, 4, 16\), "
                                                                      r"got \(2, 4, 8\)"),
    (dict(noise=(torch.rand(2, 4, 16), torch.rand(2, 5))), ValueError, r"confidence_noise must have shape \(2, 4\)"),
    (dict(noise=(torch.rand(2, 4, 16).double(), torch.rand(2, 4))), TypeError, "sample_noise must be float32"),
    (dict(noise=(torch.rand(2, 4, 16), torch.rand(2, 4, device="meta"))), ValueError,
     "confidence_noise must be on the device"),
    (dict(noise=None, seed=2**63), ValueError, r"seed must be an int in \[-2\^63, 2\^63\)"),
    (dict(noise=None, seed=1.0), ValueError, "seed must be an int"),
    (dict(noise=None, seed=torch.tensor([1, 2])), TypeError, r"a tensor seed must hold one int64, got dtype "
                                                             r"torch.int64 and shape \(2,\)"),
    (dict(noise=None, seed=torch.tensor([1], dtype=torch.int32)), TypeError, "a tensor seed must hold one int64"),
    (dict(noise=None, seed=torch.tensor([1], device="meta")), ValueError, "seed must be on the device"),
    (dict(noise=None, seed=1, offset=-1), ValueError, r"offset must be an int in \[0, 2\^32\), got -1"),
    (dict(noise=None, seed=1, offset=2**32), ValueError, r"offset must be an int in \[0, 2\^32\)"),
])
def test_validation(change, error, match):
    args = {**_good(), **change}
    with pytest.raises(error, match=match):
        maskgit_step(args.pop("cond_logits"), args.pop("uncond_logits"), args.pop("ids"), **args)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        maskgit_step(**{**_good(), "uncond_logits": None}, backend="cuda")


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        maskgit_step(**_good(), backend="triton")


# ---- torch.compile and the custom op ----------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    """No graph break; scalars that change from call to call (as the sampler's do every step) are
    traced symbolically and passed through."""
    b, k, v = 2, 8, 64
    gen = torch.Generator().manual_seed(8)
    cond, uncond = _logits(b, k, v, torch.float32, gen), _logits(b, k, v, torch.float32, gen)
    ids = _ids(b, k, v, "middle", gen)
    noise = _noise(b, k, v)

    def fn(cond, uncond, ids, u_sample, u_conf, scale, temperature, t, n, seed, offset):
        given = maskgit_step(cond * 1.0, uncond, ids, mask_id=v, guidance_scale=scale, softmax_temperature=temperature,
                             gumbel_temperature=t, schedule_mask_len=n, noise=(u_sample, u_conf), backend=backend)
        seeded = maskgit_step(cond, None, given, mask_id=v, gumbel_temperature=t, seed=seed, offset=offset,
                              schedule_mask_len=n, backend=backend)
        return given, seeded

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    for scalars in [(2.0, 0.8, 1.5, 3, 3, 1), (2.7, 0.9, 2.5, 4, 5, 2), (1.1, 1.2, 0.5, 2, 6, 3)]:
        got, eager = compiled(cond, uncond, ids, *noise, *scalars), fn(cond, uncond, ids, *noise, *scalars)
        assert torch.equal(got[0], eager[0]) and torch.equal(got[1], eager[1])
        scale, temperature, t, n = scalars[:4]
        assert torch.equal(got[0], maskgit_step_torch(cond, uncond, ids, *noise, mask_id=v, guidance_scale=scale,
                                                      softmax_temperature=temperature, gumbel_temperature=t,
                                                      schedule_mask_len=n))


def test_custom_op_opcheck():
    b, k, v = 2, 8, 32
    cond, uncond, ids = torch.randn(b, k, v), torch.randn(b, k, v), torch.full((b, k), v)
    u_sample, u_conf = torch.rand(b, k, v), torch.rand(b, k)
    for backend in BACKENDS:
        torch.library.opcheck(torch.ops.titok.maskgit_step.default,
                              (cond, uncond, ids, u_sample, u_conf, None, v, 2.0, "cond", 0.9, 1.0, 2, False, None, 0,
                               backend))
        torch.library.opcheck(torch.ops.titok.maskgit_step.default,
                              (cond, None, ids, None, None, torch.tensor([4]), v, 0.0, "cond", None, 1.0, 2, True,
                               None, 3, backend))


# ---- the backend contract: TITOK_KERNEL_BACKEND, fallback warnings, launch counts ------------------------

def _small_step(dtype=torch.float32):
    b, k, v = 2, 8, 64
    gen = torch.Generator().manual_seed(12)
    cond = _logits(b, k, v, dtype, gen)
    ids = _ids(b, k, v, "middle", gen)
    noise = _noise(b, k, v)
    kw = dict(mask_id=v, gumbel_temperature=1.5, schedule_mask_len=3, noise=noise)
    return cond, ids, kw, maskgit_step_torch(cond, None, ids, *noise, **{x: kw[x] for x in kw if x != "noise"})


@pytest.fixture
def fresh_backend_state(monkeypatch):
    """Launch counts from zero and the once-per-reason fallback warnings not yet given."""
    monkeypatch.setattr(backend_module, "_WARNED", set())
    titok_kernels.reset_launch_counts()
    yield
    titok_kernels.reset_launch_counts()


@pytest.mark.parametrize("env", [None, "auto", "torch"])
def test_auto_on_cpu_is_torch_unless_the_env_says_triton(monkeypatch, fresh_backend_state, env):
    if env is None:
        monkeypatch.delenv("TITOK_KERNEL_BACKEND", raising=False)
    else:
        monkeypatch.setenv("TITOK_KERNEL_BACKEND", env)
    cond, ids, kw, ref = _small_step()
    assert torch.equal(maskgit_step(cond, None, ids, **kw), ref)
    assert titok_kernels.launch_counts().get("maskgit_step", 0) == 0
    assert titok_kernels.resolve_backend("maskgit_step", "auto", "cpu") == "torch"


@needs_triton_cpu
def test_env_triton_makes_auto_launch_the_kernel_on_cpu(monkeypatch, fresh_backend_state):
    monkeypatch.setenv("TITOK_KERNEL_BACKEND", "triton")
    cond, ids, kw, ref = _small_step()
    assert torch.equal(maskgit_step(cond, None, ids, **kw), ref)
    assert torch.equal(maskgit_step(cond, None, ids, **kw, last_step=True),
                       maskgit_step(cond, None, ids, **kw, last_step=True, backend="torch"))
    assert titok_kernels.launch_counts() == {"maskgit_step": 2}  # one launch per step; backend="torch": none
    titok_kernels.reset_launch_counts()
    assert titok_kernels.launch_counts() == {}
    monkeypatch.setenv("TITOK_KERNEL_BACKEND", "torch")  # read at every call
    maskgit_step(cond, None, ids, **kw)
    assert titok_kernels.launch_counts() == {}


@needs_triton_cpu
def test_env_triton_falls_back_once_where_the_kernel_does_not_apply(monkeypatch, fresh_backend_state):
    """bf16 cannot run under the interpreter: auto runs torch and warns once; backend="triton" refuses."""
    monkeypatch.setenv("TITOK_KERNEL_BACKEND", "triton")
    cond, ids, kw, _ = _small_step(torch.bfloat16)
    ref = maskgit_step(cond, None, ids, **kw, backend="torch")
    with pytest.warns(titok_kernels.KernelFallbackWarning, match="bfloat16 under the Triton interpreter"):
        assert torch.equal(maskgit_step(cond, None, ids, **kw), ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same reason again: no second warning
        assert torch.equal(maskgit_step(cond, None, ids, **kw), ref)
    assert titok_kernels.launch_counts().get("maskgit_step", 0) == 0
    with pytest.raises(TypeError, match="bfloat16 is not supported by the Triton interpreter"):
        maskgit_step(cond, None, ids, **kw, backend="triton")


def test_env_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TITOK_KERNEL_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cond, ids, kw, ref = _small_step()
    with pytest.raises(ValueError, match="TITOK_KERNEL_BACKEND=triton .* needs TRITON_INTERPRET=1"):
        maskgit_step(cond, None, ids, **kw)
    assert torch.equal(maskgit_step(cond, None, ids, **kw, backend="torch"), ref)


def test_env_bad_value(monkeypatch):
    monkeypatch.setenv("TITOK_KERNEL_BACKEND", "cuda")
    cond, ids, kw, _ = _small_step()
    with pytest.raises(ValueError, match="TITOK_KERNEL_BACKEND must be one of .* got 'cuda'"):
        maskgit_step(cond, None, ids, **kw)


@needs_triton_cpu
def test_gumbel_probe_is_the_kernels_transform():
    """The probe the GPU parity tests filter noise with computes the step kernel's transform: under the
    interpreter it is numpy's (`_gumbel_numpy`) bit for bit, edge values included, and the uniforms it
    keeps are exactly those on which torch agrees."""
    u = torch.rand(3000, generator=torch.Generator().manual_seed(5))
    u[:4] = torch.tensor([0.0, 1e-30, 0.5, 1.0 - 2.0 ** -24])
    assert torch.equal(_kernel_gumbel(u).view(torch.int32), _gumbel_numpy(u).view(torch.int32))
    assert torch.equal(_kernel_gumbel(u.reshape(3, 1000)), _kernel_gumbel(u).reshape(3, 1000))
    kept = _kernel_agreeing_uniforms((2, 700), torch.Generator().manual_seed(6))
    assert kept.shape == (2, 700) and ((kept >= 0) & (kept < 1)).all()
    assert torch.equal(gumbel(kept).view(torch.int32), _gumbel_numpy(kept).view(torch.int32))


# ---- ahead-of-time compilation: the launches of aot_jobs(), sm_90 and sm_80 -----------------------------

@pytest.fixture(scope="module")
def aot_reports():
    """The AOT compiles of every declared job, one subprocess per capability side by side."""
    return compile_jobs("titok_kernels.maskgit_step")


@pytest.mark.parametrize("name", [job.name for job in aot_jobs()])
def test_aot_compile_no_spills(aot_reports, name):
    r = aot_reports[name]
    assert r.specialized
    assert_compiles_cleanly(r, name)


def test_aot_compiles_what_a_launch_compiles(aot_reports):
    """The jobs are specialised as Triton specialises a launch (16-byte aligned pointers, unit strides as
    the constant 1, ints divisible by 16): contiguous fp32 logits are read with 128-bit loads, with fewer
    registers than the unspecialised kernel, which has no vector load at all."""
    name = "L32 fp32 guided given-noise sm90"
    plain = compile_jobs("titok_kernels.maskgit_step", [name], specialize=False)[name]
    launched = aot_reports[name]
    assert not plain.specialized and plain.vector_loads == 0
    assert launched.vector_loads >= 3  # cond, uncond and noise rows
    assert launched.registers < plain.registers


# ---- GPU (run where CUDA exists; skipped here) -----------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k, v", [(32, 4096), (128, 4096), (1024, 1024), (33, 1000)])
def test_gpu_parity(dtype, k, v):
    """Identical ids on CUDA, on noise where the kernel's Gumbel transform and torch's agree bit for bit (the
    module docstring): after the transform every operation is exact by construction: fp32 operations
    rounded one by one in torch's order (no FMA: enable_fp_fusion=False), the softmax temperature as
    torch's CUDA x * (1/T) (test_gpu_torch_divides_by_scalar_via_reciprocal), first-index argmax (bf16
    logits at t = 0 tie often), the n-th smallest confidence as torch.sort's, "<=" re-masking."""
    b = 8
    gen = torch.Generator(device="cuda").manual_seed(k + v)
    cond = (3 * torch.randn(b, k, v, device="cuda", generator=gen)).to(dtype)
    uncond = (3 * torch.randn(b, k, v, device="cuda", generator=gen)).to(dtype)
    ids = torch.where(torch.rand(b, k, device="cuda", generator=gen) < 0.5,
                      torch.randint(0, v, (b, k), device="cuda", generator=gen), v)
    noise = (_kernel_agreeing_uniforms((b, k, v), gen), _kernel_agreeing_uniforms((b, k), gen))
    for anchor, temperature, t, last in [("cond", None, 4.5, False), ("uncond", 0.8, 2.0, False),
                                         (None, 1.3, 0.0, False), ("cond", 0.9, 1.0, True)]:
        kw = dict(mask_id=v, guidance_scale=2.5 if anchor else 0.0, guidance_anchor=anchor or "cond",
                  softmax_temperature=temperature, gumbel_temperature=t, schedule_mask_len=k // 3, last_step=last)
        un = uncond if anchor else None
        got = maskgit_step(cond, un, ids, noise=noise, backend="triton", **kw)
        assert torch.equal(got, maskgit_step_torch(cond, un, ids, *noise, **kw)), (anchor, temperature, t, last)


@pytest.mark.gpu
def test_gpu_gumbel_transform_within_twice_torch_error():
    """The kernel's given-noise Gumbel transform on CUDA (libdevice logf, FTZ build) against fp64: within the
    project's rule, max|kernel - ref64| <= 2 * max|torch_fp32 - ref64| + eps, eps = fp32 epsilon (one ulp at
    |g| = 1), over 2^24 uniforms and the edge values. How many values differ from torch's bit for bit is
    printed (0 when both logs are the same libdevice code; the parity tests redraw those elements)."""
    gen = torch.Generator(device="cuda").manual_seed(3)
    u = torch.rand(1 << 24, device="cuda", generator=gen)
    u[:4] = torch.tensor([0.0, 2.0 ** -24, 0.5, 1.0 - 2.0 ** -24], device="cuda")
    kernel, torch32, ref64 = _kernel_gumbel(u), gumbel(u), gumbel(u.double())
    assert_twice_torch_max_error(kernel, torch32, ref64, eps=torch.finfo(torch.float32).eps, what="kernel gumbel")
    differ = int((kernel.view(torch.int32) != torch32.view(torch.int32)).sum())
    print(f"kernel vs torch Gumbel transform on CUDA: {differ} of {u.numel()} values differ bit for bit")


def _check_last_arrival_cutoff(b, k, v, rows, rank, device, launches):
    """Every row of `launches` back-to-back steps (given, agreeing noise) equals the torch step, and a seed's
    ids do not depend on the tiling or on the launch (the body of the many-programs GPU test)."""
    gen = torch.Generator(device=device).manual_seed(b + k + v)
    cond = 3 * torch.randn(b, k, v, device=device, generator=gen)
    uncond = 3 * torch.randn(b, k, v, device=device, generator=gen)
    fixed = torch.randint(0, v, (b, k), device=device, generator=gen)
    ids = torch.where(torch.rand(b, k, device=device, generator=gen) < 0.4, fixed, v)  # ~60% masked per row
    u_sample, u_conf = _kernel_agreeing_uniforms((b, k, v), gen), _kernel_agreeing_uniforms((b, k), gen)
    kw = dict(mask_id=v, guidance_scale=2.0, guidance_anchor="cond", softmax_temperature=0.9, gumbel_temperature=1.5,
              schedule_mask_len=k // 3, last_step=False)
    ref = maskgit_step_torch(cond, uncond, ids, u_sample, u_conf, **kw)
    step = dict(kw, offset=0, rows=rows, rank_cutoff=rank)
    outs = [_maskgit_step_triton(cond, uncond, ids, u_sample, u_conf, None, seed=None, **step)
            for _ in range(launches)]
    seeded = [_maskgit_step_triton(cond, uncond, ids, None, None, None, seed=17, **dict(step, rows=r, rank_cutoff=c))
              for r, c in ((rows, rank), (rows, rank), (None, None), (1, None))]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n = min(int((ids[0] == v).sum()) - 1, k // 3)
    assert n >= 1 and ((ref == v).sum(1) >= n).all()          # every row re-masked at least n tokens
    for i, out in enumerate(outs):
        bad = (out != ref).any(1).nonzero().flatten().tolist()
        assert not bad, f"launch {i}: rows {bad[:10]} differ from the torch step"
    for out in seeded[1:]:
        assert torch.equal(out, seeded[0])
    assert ((seeded[0] == v).sum(1) >= n).all()


@needs_triton_cpu
@pytest.mark.parametrize("b, k, v, rows, rank", [(3, 33, 64, 1, False), (2, 64, 16, 1, True)])
def test_last_arrival_check_under_the_interpreter(b, k, v, rows, rank):
    """The many-programs GPU test's body, at interpreter sizes (programs run one after another here)."""
    _check_last_arrival_cutoff(b, k, v, rows, rank, torch.device("cpu"), launches=2)


@pytest.mark.gpu
@pytest.mark.parametrize("b, k, v, rows, rank", [
    (256, 1024, 64, 1, False),       # 1024 programs per row, 262144 in all; binary-search cut-off
    (512, 64, 256, 1, True),         # 64 programs per row; rank-count cut-off
    (128, 1024, 1024, None, None),   # MaskGIT-512 as launched (one token per program)
    (1024, 32, 4096, None, None),    # TiTok-L-32 as launched, at a large batch
])
def test_gpu_last_arrival_cutoff_with_many_programs_at_once(b, k, v, rows, rank):
    """The cut-off of each batch row is done by whichever of its programs arrives last (a gpu-scope acq_rel
    counter, reset in-kernel). The interpreter runs programs one after another, so only a GPU runs them
    concurrently and in any order: there, every row must still equal the torch step (given, agreeing noise:
    exact, as test_gpu_parity argues), over 6 launches issued back to back with no sync between them, and a
    seed's ids must not depend on the tiling (how many programs share a row) or on the launch."""
    _check_last_arrival_cutoff(b, k, v, rows, rank, torch.device("cuda"), launches=6)


@pytest.mark.gpu
def test_gpu_torch_divides_by_scalar_via_reciprocal():
    """The kernel's CUDA temperature path assumes torch computes x / T as x * (1.0f / float(T)) on CUDA."""
    x = 10 * torch.randn(1 << 20, device="cuda")
    for t in (0.7, 0.9, 1.3, 0.5 + 0.8 * 0.375):
        inv = float(np.float32(1.0) / np.float32(t))
        assert torch.equal(x / t, x * inv)


@pytest.mark.gpu
def test_gpu_no_host_sync():
    b, k, v = 4, 32, 4096
    cond, uncond = torch.randn(b, k, v, device="cuda"), torch.randn(b, k, v, device="cuda")
    ids = torch.full((b, k), v, device="cuda")
    seed = torch.tensor([3], device="cuda")
    noise = (torch.rand(b, k, v, device="cuda"), torch.rand(b, k, device="cuda"))
    calls = [dict(seed=seed, offset=2), dict(seed=5), dict(noise=noise)]
    for kw in calls:  # warm-up: compilation may synchronise
        maskgit_step(cond, uncond, ids, mask_id=v, guidance_scale=2.0, gumbel_temperature=1.0, **kw)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for kw in calls:
            maskgit_step(cond, uncond, ids, mask_id=v, guidance_scale=2.0, gumbel_temperature=1.0,
                         schedule_mask_len=8, **kw)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.gpu
def test_gpu_one_launch_per_step():
    from torch.profiler import ProfilerActivity, profile

    b, k, v = 4, 32, 4096
    cond, uncond = torch.randn(b, k, v, device="cuda"), torch.randn(b, k, v, device="cuda")
    ids = torch.full((b, k), v, device="cuda")
    maskgit_step(cond, uncond, ids, mask_id=v, guidance_scale=2.0, gumbel_temperature=1.0, seed=1)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        maskgit_step(cond, uncond, ids, mask_id=v, guidance_scale=2.0, gumbel_temperature=1.0, seed=1)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 1 and "_maskgit_step_kernel" in kernels[0].name, [e.name for e in kernels]


@pytest.mark.gpu
def test_gpu_cuda_graph_replay_with_seed_tensor():
    """Capture one step with a seed tensor; replays with new seeds equal eager calls with those seeds
    (the arrival counters are reset in-kernel, so replays can repeat)."""
    b, k, v = 8, 32, 4096
    cond, uncond = torch.randn(b, k, v, device="cuda"), torch.randn(b, k, v, device="cuda")
    ids = torch.where(torch.rand(b, k, device="cuda") < 0.3, 5, v)
    seed = torch.zeros(1, dtype=torch.int64, device="cuda")
    kw = dict(mask_id=v, guidance_scale=2.0, gumbel_temperature=3.0, schedule_mask_len=10, offset=4)
    eager = {s: maskgit_step(cond, uncond, ids, seed=s, **kw) for s in (1, 2)}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        maskgit_step(cond, uncond, ids, seed=seed, **kw)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = maskgit_step(cond, uncond, ids, seed=seed, **kw)
    for s in (1, 2, 1, 2):
        seed.fill_(s)
        graph.replay()
        torch.cuda.synchronize()
        # Exact: the seed-tensor and seed-int variants feed Philox the same words and then run the same
        # fp32 operations in the same order (no FMA), so the uniforms, logs and ids are the same.
        assert torch.equal(out, eager[s])
    assert not torch.equal(eager[1], eager[2])


@pytest.mark.gpu
def test_gpu_seeded_samples_follow_softmax():
    """The CUDA seeded path (hardware log2 in the Gumbel transform) samples softmax(l)."""
    b, k, v = 64, 1024, 8
    logits = torch.tensor([1.5, 0.0, -1.0, 0.5, 2.0, -0.5, 1.0, 0.2], device="cuda")
    cond = logits.expand(b, k, v).contiguous()
    ids = torch.full((b, k), v, device="cuda")
    out = maskgit_step(cond, None, ids, mask_id=v, gumbel_temperature=1.0, last_step=True, seed=99)
    assert _chi2_pvalue(out.cpu(), torch.softmax(logits.cpu(), 0)) > 1e-3
