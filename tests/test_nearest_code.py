"""titok_kernels.nearest_code: parity with an fp64 reference, ties, the NaN rule, validation, the auto backend,
torch.compile, AOT.

On CPU the Triton path runs under TRITON_INTERPRET=1 (fp32/fp16 only); the `gpu` tests repeat the
parity checks on CUDA (bf16 included) and are skipped here.

Accuracy criterion (discrete outputs). For each row, with distances recomputed in
fp64 from the same fp32-cast inputs, and `scale` = |z|^2 + |e_best|^2 (the size of the terms that
cancel in |z|^2 + |e|^2 - 2 z.e, so the natural unit of fp32 rounding error):
  * the chosen code's fp64 distance exceeds the fp64 minimum by at most 1e-6 * scale;
  * where the fp64 runner-up is more than 1e-5 * scale above the best, the index is exactly the
    fp64 argmin (and the torch reference's index);
  * the returned fp32 distance is within 1e-6 * scale of the chosen code's fp64 distance.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

import titok_kernels
from titok_kernels import backend as backend_module
from titok_kernels.aot import compile_jobs
from titok_kernels.nearest_code import _CONFIGS, _nearest_code_triton, aot_jobs, nearest_code
from titok_kernels.reference import nearest_code_torch
from kernel_utils import BACKENDS, INTERPRET, assert_compiles_cleanly, assert_within_twice_torch_error, needs_triton_cpu
from tests.shapes import NEAREST_CODE_TITOK, NEAREST_CODE_UNALIGNED

CHOSEN_TOL = 1e-6     # chosen fp64 distance - fp64 minimum, in units of scale
SEPARATED = 1e-5      # runner-up gap (units of scale) above which indices must match exactly


def _make_inputs(m, n, d, dtype, device="cpu", *, transposed_z=False):
    """Codebook ~ N(0, 1); half the rows of z sit near a code (clear winners), half are random."""
    codebook = torch.randn(n, d, device=device)
    near = codebook[torch.randint(0, n, (m,), device=device)] + 0.05 * torch.randn(m, d, device=device)
    z = torch.where((torch.arange(m, device=device) % 2 == 0)[:, None], near, torch.randn(m, d, device=device))
    z, codebook = z.to(dtype), codebook.to(dtype)
    if transposed_z:  # same values, strides (1, M): exercises the strided loads
        z = z.t().contiguous().t()
    return z, codebook


def _distances64(z, codebook, l2):
    z64, e64 = z.float().double(), codebook.float().double()
    if l2:
        z64 = z64 / z64.norm(dim=1, keepdim=True).clamp_min(1e-12)
        e64 = e64 / e64.norm(dim=1, keepdim=True).clamp_min(1e-12)
    z_sq, e_sq = (z64 * z64).sum(1), (e64 * e64).sum(1)
    return z_sq[:, None] + e_sq[None, :] - 2.0 * z64 @ e64.T, z_sq, e_sq


def _chosen_excess(z, codebook, l2, indices):
    """Per row: (fp64 distance of the chosen code - fp64 minimum) / scale."""
    d64, z_sq, e_sq = _distances64(z.cpu(), codebook.cpu(), l2)
    best, best_idx = d64.min(dim=1)
    return (d64.gather(1, indices.cpu()[:, None]).squeeze(1) - best) / (z_sq + e_sq[best_idx])


def _check_against_fp64(z, codebook, l2, indices, distances):
    """Assert the module docstring's criterion; return the mask of well-separated rows."""
    d64, z_sq, e_sq = _distances64(z.cpu(), codebook.cpu(), l2)
    indices, distances = indices.cpu(), distances.cpu()
    assert indices.dtype == torch.int64 and distances.dtype == torch.float32
    assert indices.shape == distances.shape == (z.shape[0],)
    two = d64.topk(min(2, d64.shape[1]), dim=1, largest=False)
    best, best_idx = two.values[:, 0], two.indices[:, 0]
    scale = z_sq + e_sq[best_idx]
    chosen = d64.gather(1, indices[:, None]).squeeze(1)
    excess = ((chosen - best) / scale).max().item()
    assert excess <= CHOSEN_TOL, f"chosen code is {excess:.3g} * scale above the minimum"
    dist_err = ((distances.double() - chosen).abs() / scale).max().item()
    assert dist_err <= CHOSEN_TOL, f"returned distance off by {dist_err:.3g} * scale"
    separated = (two.values[:, 1] - best) / scale > SEPARATED
    assert separated.float().mean() > 0.5, "test data has too few well-separated rows to be meaningful"
    assert torch.equal(indices[separated], best_idx[separated])
    return separated


# ---- parity --------------------------------------------------------------------------------------------

def _interpreter_rows(m):
    """Rows run under the interpreter: 128 rows of the TiTok shapes take ~1-3 s there and the
    runtime grows with the rows, so the big shapes keep their N and D (what the kernel's loops and
    masks depend on) but not their 2048 rows (the GPU test runs them in full)."""
    return min(m, 128)


PARITY_CASES = [(shape, dtype) for shape in NEAREST_CODE_TITOK + NEAREST_CODE_UNALIGNED
                for dtype in (torch.float32, torch.float16)] + [((64, 16384, 16, True), torch.float32)]  # largest N


@needs_triton_cpu
@pytest.mark.parametrize("shape, dtype", PARITY_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_triton_matches_fp64_minimum(shape, dtype):
    m, n, d, l2 = shape
    z, codebook = _make_inputs(_interpreter_rows(m), n, d, dtype)
    indices, distances = nearest_code(z, codebook, l2_normalize=l2, return_distance=True, backend="triton")
    separated = _check_against_fp64(z, codebook, l2, indices, distances)
    ref_idx = nearest_code_torch(z, codebook, l2_normalize=l2)
    assert torch.equal(indices[separated], ref_idx[separated])


@pytest.mark.parametrize("shape", NEAREST_CODE_TITOK + NEAREST_CODE_UNALIGNED, ids=str)
def test_torch_reference_matches_fp64_minimum(shape):
    m, n, d, l2 = shape
    z, codebook = _make_inputs(m, n, d, torch.float32)
    indices, distances = nearest_code_torch(z, codebook, l2_normalize=l2, return_distance=True)
    _check_against_fp64(z, codebook, l2, indices, distances)


def test_torch_reference_is_the_official_quantizer_math():
    z, codebook = torch.randn(300, 12), torch.randn(1000, 12)
    zn, en = F.normalize(z, dim=-1), F.normalize(codebook, dim=-1)
    d = torch.sum(zn ** 2, dim=1, keepdim=True) + torch.sum(en ** 2, dim=1) - 2 * torch.einsum("bd,dn->bn", zn, en.T)
    assert torch.equal(nearest_code_torch(z, codebook, l2_normalize=True), torch.argmin(d, dim=1))
    assert torch.equal(nearest_code(z, codebook, l2_normalize=True), torch.argmin(d, dim=1))  # auto -> torch on CPU


@needs_triton_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_non_contiguous_inputs(dtype):
    m, n, d, l2 = NEAREST_CODE_UNALIGNED[1]  # (17, 4097, 13): unaligned everything
    z, codebook = _make_inputs(m, n, d, dtype, transposed_z=True)
    codebook_view = torch.cat([codebook, codebook], dim=1)[:, :d]  # row stride 2 * D
    assert not z.is_contiguous() and not codebook_view.is_contiguous()
    indices, distances = nearest_code(z, codebook_view, l2_normalize=l2, return_distance=True, backend="triton")
    _check_against_fp64(z, codebook, l2, indices, distances)
    contiguous = nearest_code(z.contiguous(), codebook, l2_normalize=l2, return_distance=True, backend="triton")
    assert torch.equal(indices, contiguous[0]) and torch.equal(distances, contiguous[1])


@needs_triton_cpu
@pytest.mark.parametrize("l2, d", [(True, 12), (False, 64)])
def test_triton_near_ties(l2, d):
    """Codes in pairs ~3e-7 apart (below fp32 resolution of the distance): either twin may win, but
    the chosen code is within 1e-6 * scale of the best, and no worse than twice torch fp32's excess
    plus one fp32 ulp (the twice-the-torch-error rule)."""
    base = torch.randn(256, d)
    codebook = torch.cat([base, base * (1 + 3e-7 * torch.randn(256, 1)) + 3e-7 * torch.randn(256, d)])
    z = base[torch.randint(0, 256, (128,))] + 0.01 * torch.randn(128, d)
    excess = _chosen_excess(z, codebook, l2, nearest_code(z, codebook, l2_normalize=l2, backend="triton")).max()
    torch_excess = _chosen_excess(z, codebook, l2, nearest_code_torch(z, codebook, l2_normalize=l2)).max()
    assert excess <= CHOSEN_TOL
    assert_within_twice_torch_error(excess, torch_excess, 2.0 ** -23)


@needs_triton_cpu
@pytest.mark.parametrize("d, l2", [(1, False), (3, True)])
def test_triton_tiny_d_and_single_code(d, l2):
    z, codebook = _make_inputs(37, 90, d, torch.float32)
    indices, distances = nearest_code(z, codebook, l2_normalize=l2, return_distance=True, backend="triton")
    _check_against_fp64(z, codebook, l2, indices, distances)
    single = nearest_code(z, codebook[:1], l2_normalize=l2, return_distance=True, backend="triton")
    assert torch.equal(single[0], torch.zeros(37, dtype=torch.int64))
    torch.testing.assert_close(single[1], nearest_code_torch(z, codebook[:1], l2_normalize=l2, return_distance=True)[1])


@needs_triton_cpu
def test_triton_mixed_input_dtypes():
    z, codebook = _make_inputs(40, 300, 24, torch.float16)
    codebook = codebook.float()
    indices, distances = nearest_code(z, codebook, l2_normalize=True, return_distance=True, backend="triton")
    _check_against_fp64(z, codebook, True, indices, distances)


@needs_triton_cpu
@pytest.mark.parametrize("l2", [True, False])
def test_triton_split_count_does_not_change_results(l2):
    """The codebook-split path (small M) and the single pass give bit-identical outputs."""
    z, codebook = _make_inputs(70, 1000, 40, torch.float32)  # 2 row blocks, 16 codebook tiles
    single = _nearest_code_triton(z, codebook, l2, True, num_splits=1)
    for splits in (3, 16):
        split = _nearest_code_triton(z, codebook, l2, True, num_splits=splits)
        assert torch.equal(single[0], split[0]) and torch.equal(single[1], split[1])
    _check_against_fp64(z, codebook, l2, *single)


@needs_triton_cpu
def test_triton_index_only_matches_with_distance():
    z, codebook = _make_inputs(33, 200, 64, torch.float32)
    indices, _ = nearest_code(z, codebook, l2_normalize=False, return_distance=True, backend="triton")
    assert torch.equal(nearest_code(z, codebook, l2_normalize=False, backend="triton"), indices)


# ---- edge cases: empty, ties, NaN ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_z(backend):
    z, codebook = torch.randn(0, 12), torch.randn(10, 12)
    indices, distances = nearest_code(z, codebook, l2_normalize=True, return_distance=True, backend=backend)
    assert indices.shape == (0,) and indices.dtype == torch.int64
    assert distances.shape == (0,) and distances.dtype == torch.float32


TIE_CASES = [("torch", None)] + ([("triton", None), ("triton", 1), ("triton", 4)] if INTERPRET else [])


@pytest.mark.parametrize("backend, splits", TIE_CASES)
def test_ties_pick_the_first_index(backend, splits):
    codebook = torch.randn(300, 16)
    codebook[250] = codebook[5]     # duplicates in different tiles (and splits)
    codebook[7] = codebook[5]       # and in the same tile
    codebook[100:] = codebook[100]  # a block of 200 equal rows
    z = torch.cat([codebook[5] + 1e-3 * torch.randn(4, 16), codebook[100] + 1e-3 * torch.randn(4, 16)])
    expected = torch.tensor([5] * 4 + [100] * 4)
    if backend == "torch":
        got = nearest_code(z, codebook, l2_normalize=False, backend="torch")
    else:
        got = _nearest_code_triton(z, codebook, False, False, num_splits=splits)[0]
    assert torch.equal(got, expected)
    # A codebook of identical rows: index 0 everywhere.
    same = torch.ones(130, 16)
    got = nearest_code(torch.randn(5, 16), same, l2_normalize=True, backend=backend)
    assert torch.equal(got, torch.zeros(5, dtype=torch.int64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("l2", [True, False])
def test_nan_rule(backend, l2):
    """Documented rule (torch.argmin's): NaN is below every number and the first NaN wins."""
    codebook = torch.randn(200, 12)
    z = torch.randn(6, 12)
    z[1, 3] = float("nan")
    indices, distances = nearest_code(z, codebook, l2_normalize=l2, return_distance=True, backend=backend)
    assert indices[1] == 0 and torch.isnan(distances[1])  # a z row with NaN: index 0, distance NaN
    assert not torch.isnan(distances[[0, 2, 3, 4, 5]]).any()

    codebook[150, 0] = float("nan")
    codebook[170, 5] = float("nan")
    indices, distances = nearest_code(z, codebook, l2_normalize=l2, return_distance=True, backend=backend)
    expected = torch.full((6,), 150)
    expected[1] = 0
    assert torch.equal(indices, expected) and torch.isnan(distances).all()


@needs_triton_cpu
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("l2", [True, False])
def test_nan_and_inf_backends_agree(l2):
    """inf/NaN inputs: both backends follow the same rule, so they give the same indices."""
    codebook = torch.randn(150, 12)
    z = torch.randn(5, 12)
    z[0, 2] = float("inf")
    z[1, 4] = -float("inf")
    z[2, 0] = float("nan")
    codebook[90, 1] = float("inf")
    torch_idx, torch_d = nearest_code(z, codebook, l2_normalize=l2, return_distance=True, backend="torch")
    triton_idx, triton_d = nearest_code(z, codebook, l2_normalize=l2, return_distance=True, backend="triton")
    assert torch.equal(torch_idx, triton_idx)
    assert torch.equal(torch.isnan(torch_d), torch.isnan(triton_d))


# ---- validation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("z, codebook, error, match", [
    (torch.randn(12), torch.randn(10, 12), ValueError, r"z must be 2-D .* shape \(12,\)"),
    (torch.randn(4, 12), torch.randn(2, 10, 12), ValueError, r"codebook must be 2-D .* shape \(2, 10, 12\)"),
    (torch.randn(4, 12), torch.randn(10, 13), ValueError, r"same D, got z \(4, 12\) and codebook \(10, 13\)"),
    (torch.randint(0, 5, (4, 12)), torch.randn(10, 12), TypeError, r"z must be float32, float16 or bfloat16, "
                                                                   r"got torch.int64"),
    (torch.randn(4, 12), torch.randn(10, 12, dtype=torch.float64), TypeError, "codebook .* got torch.float64"),
    (torch.randn(4, 257), torch.randn(10, 257), ValueError, r"D must be in \[1, 256\], got z \(4, 257\)"),
    (torch.randn(4, 0), torch.randn(10, 0), ValueError, r"D must be in \[1, 256\]"),
    (torch.randn(4, 12), torch.randn(0, 12), ValueError, r"at least one row, got shape \(0, 12\)"),
    (torch.randn(4, 12), torch.randn(10, 12, device="meta"), ValueError, r"codebook must be on the device of z "
                                                                          r"\(cpu\), got meta"),
    ([[0.0] * 12], torch.randn(10, 12), TypeError, "z must be a torch.Tensor, got list"),
])
def test_validation(z, codebook, error, match):
    with pytest.raises(error, match=match):
        nearest_code(z, codebook, l2_normalize=True)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        nearest_code(torch.randn(4, 12), torch.randn(10, 12), l2_normalize=True, backend="cuda")


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        nearest_code(torch.randn(4, 12), torch.randn(10, 12), l2_normalize=True, backend="triton")


# ---- torch.compile -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    z, codebook = _make_inputs(40, 300, 12, torch.float32)

    def fn(z, codebook):  # the quantizer's lookup: indices, then the re-normalised codebook rows
        indices, distances = nearest_code(z, codebook, l2_normalize=True, return_distance=True, backend=backend)
        z_q = F.normalize(codebook.index_select(0, indices).float(), dim=-1)
        return z_q, nearest_code(z, codebook, l2_normalize=True, backend=backend), distances

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    (z_q, indices, distances), (z_q_eager, indices_eager, distances_eager) = compiled(z, codebook), fn(z, codebook)
    # The op is opaque to inductor: bit-identical outputs. The gather + F.normalize around it is
    # fused by inductor, which rounds the normalisation differently: fp32 closeness only.
    assert torch.equal(indices, indices_eager) and torch.equal(distances, distances_eager)
    torch.testing.assert_close(z_q, z_q_eager)


def test_custom_op_opcheck():
    z, codebook = _make_inputs(20, 100, 12, torch.float32)
    for backend in BACKENDS:
        for return_distance in (True, False):
            torch.library.opcheck(torch.ops.titok.nearest_code.default, (z, codebook, True, return_distance, backend))


# ---- the auto backend and launch counts -------------------------------------------------------------

@needs_triton_cpu
def test_env_triton_auto_launches_or_falls_back_once(monkeypatch):
    """TITOK_KERNEL_BACKEND=triton: auto runs the kernels on CPU tensors (2 launches, 3 when the codebook
    is split), and the torch reference, warned once, for bf16 (the interpreter has none)."""
    monkeypatch.setattr(backend_module, "_WARNED", set())
    monkeypatch.setenv("TITOK_KERNEL_BACKEND", "triton")
    titok_kernels.reset_launch_counts()
    z, codebook = _make_inputs(64, 100, 12, torch.float32)  # 2 codebook tiles: not split (2 launches)
    assert torch.equal(nearest_code(z, codebook, l2_normalize=True),
                       nearest_code(z, codebook, l2_normalize=True, backend="triton"))
    _nearest_code_triton(z, codebook, True, False, num_splits=2)
    assert titok_kernels.launch_counts() == {"nearest_code": 2 + 2 + 3}
    z16, codebook16 = z.bfloat16(), codebook.bfloat16()
    with pytest.warns(titok_kernels.KernelFallbackWarning, match="bfloat16"):
        got = nearest_code(z16, codebook16, l2_normalize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(nearest_code(z16, codebook16, l2_normalize=True), got)
    assert torch.equal(got, nearest_code_torch(z16, codebook16, l2_normalize=True))
    assert titok_kernels.launch_counts() == {"nearest_code": 7}
    titok_kernels.reset_launch_counts()


# ---- ahead-of-time compilation: the launches of aot_jobs(), sm_90 and sm_80 ------------------------------

def test_aot_jobs_cover_every_config():
    names = [job.name for job in aot_jobs()]
    assert len(set(names)) == len(names)
    assert {job.launch.kwargs["BLOCK_D"] for job in aot_jobs() if job.name.startswith("main")} == set(_CONFIGS)
    assert any(name.startswith("combine") for name in names)


@pytest.fixture(scope="module")
def aot_reports():
    """The AOT compiles of every declared job, one subprocess per capability side by side."""
    return compile_jobs("titok_kernels.nearest_code")


@pytest.mark.parametrize("name", [job.name for job in aot_jobs()])
def test_aot_compile_no_spills(aot_reports, name):
    r = aot_reports[name]
    assert_compiles_cleanly(r, name)


# ---- GPU ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", NEAREST_CODE_TITOK + NEAREST_CODE_UNALIGNED + [
    (1, 4096, 12, True), (32, 8192, 64, False), (4096, 16384, 12, True), (1_000_000, 4096, 12, True),
    (100_000, 1024, 256, False)], ids=str)
def test_gpu_parity(shape, dtype):
    m, n, d, l2 = shape
    z, codebook = _make_inputs(m, n, d, dtype, device="cuda")
    indices, distances = nearest_code(z, codebook, l2_normalize=l2, return_distance=True)  # auto -> triton
    # The fp64 check on the first and last 2048 rows keeps the fp64 matrix small and covers the
    # largest row offsets.
    rows = torch.cat([torch.arange(0, min(m, 2048)), torch.arange(max(0, m - 2048), m)]).unique().cuda()
    _check_against_fp64(z[rows], codebook, l2, indices[rows], distances[rows])
    # Index-only: the same prepare launch and the same main kernel without the distance store (index and
    # distance come from one in-register reduction): the same arithmetic, so the same indices.
    assert torch.equal(nearest_code(z, codebook, l2_normalize=l2), indices)
    # Column-major z: the prepare pass's row sums (|z|^2, the l2 norm) reduce a tile whose register layout
    # Triton picks from the strides, so they may round differently on a GPU: not bit-identical by
    # construction. The same fp64 criterion instead (exact indices wherever the winner is well separated).
    zt = z.t().contiguous().t()
    indices_t, distances_t = nearest_code(zt, codebook, l2_normalize=l2, return_distance=True)
    separated = _check_against_fp64(zt[rows], codebook, l2, indices_t[rows], distances_t[rows])
    assert torch.equal(indices_t[rows].cpu()[separated], indices[rows].cpu()[separated])


@pytest.mark.gpu
def test_gpu_matches_torch_reference_indices():
    """Where the fp64 winner is well separated, the kernel equals the official-math torch reference (its fp32
    matmul with TF32 off: TF32's ~1e-3 relative error is far above the 1e-5 separation)."""
    m, n, d, l2 = NEAREST_CODE_TITOK[0]
    z, codebook = _make_inputs(m, n, d, torch.float32, device="cuda")
    got, distances = nearest_code(z, codebook, l2_normalize=l2, return_distance=True, backend="triton")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = nearest_code(z, codebook, l2_normalize=l2, backend="torch")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    separated = _check_against_fp64(z, codebook, l2, got, distances)
    assert torch.equal(got.cpu()[separated], ref.cpu()[separated])


@pytest.mark.gpu
def test_gpu_cuda_graph_and_compile():
    z, codebook = _make_inputs(2048, 8192, 64, torch.float32, device="cuda")
    expected = nearest_code(z, codebook, l2_normalize=False, return_distance=True)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = nearest_code(z, codebook, l2_normalize=False, return_distance=True)
    graph.replay()
    torch.cuda.synchronize()
    # Exact: the replay runs the same launches (no autotuning, no float atomics) on the same inputs.
    assert torch.equal(captured[0], expected[0]) and torch.equal(captured[1], expected[1])

    def lookup(z, codebook):
        indices = nearest_code(z, codebook, l2_normalize=True)
        return F.normalize(codebook.index_select(0, indices).float(), dim=-1), indices

    compiled = torch.compile(lookup, fullgraph=True, mode="reduce-overhead")
    (z_q, indices), (z_q_eager, indices_eager) = compiled(z, codebook), lookup(z, codebook)
    assert torch.equal(indices, indices_eager)  # the op is opaque to inductor: the same launches on the same inputs
    torch.testing.assert_close(z_q, z_q_eager)  # inductor's fused F.normalize rounds differently
