"""Tests for titok_kernels.concat_attention: parity, views, query ranges, validation, the auto backend's
fallback, custom op, AOT.

Parity rule (twice the torch error): max|kernel - ref64| <= 2 * max|torch_lowp - ref64| + eps, where
ref64 is attention over the explicitly concatenated sequence in float64 (concat_attention_torch
on float64 copies of the inputs) and torch_lowp is the same torch path (expand + cat + SDPA) in the
kernel's dtype. eps = one unit in the last place of the largest |ref64| output in that dtype
(torch.finfo(dtype).eps * max|ref64|): the kernel sums in a different order from torch, so a
single output element may round one ulp away even where torch's own error is tiny (e.g. fp32,
where both errors are ~1e-7).

On CPU the Triton kernel runs under TRITON_INTERPRET=1 (set by conftest.py): fp32 and fp16 only
(no bf16 there). The interpreter is slow, so fp16 runs on the listed shapes with B*H <= 12
(TiTok-S-128 decoder included) plus the TiTok-L lengths at 2 heads; every listed shape runs in
fp32. Without autotuning the interpreter uses one query and one key block for L <= 512; the GPU
tile sizes are exercised by test_kept_gpu_config_tiles. The ahead-of-time compile tests are
marked slow (about 90 s with a cold Triton cache on 2 cores, ~15 s warm).
"""
import importlib
import warnings

import pytest
import torch
from kernel_utils import HAS_CUDA, INTERPRET, TRITON_DEVICE, assert_compiles_cleanly, assert_twice_torch_max_error, needs_triton
from shapes import CONCAT_ATTENTION

import titok_kernels
from titok_kernels import backend as backend_module
from titok_kernels.aot import compile_jobs
from titok_kernels.concat_attention import aot_jobs, concat_attention
from titok_kernels.reference import concat_attention_torch, split_packed_qkv

CA = importlib.import_module("titok_kernels.concat_attention")


def _shape_id(shape):
    b, h, d, ls, lp, first = shape
    return f"B{b}-H{h}-d{d}-Ls{ls}-Lp{lp}-{'shared_first' if first else 'shared_last'}"


def _inputs(b, h, d, ls, lp, dtype, device=TRITON_DEVICE):
    qkv = torch.randn(b, lp, 3 * h * d, dtype=dtype, device=device)
    shared = torch.randn(ls, 3 * h * d, dtype=dtype, device=device)
    return qkv, shared


def _reference64(qkv, shared, heads, shared_first, query_rows=None):
    return concat_attention_torch(qkv.double(), None if shared is None else shared.double(), num_heads=heads,
                                  shared_first=shared_first, query_rows=query_rows)


def _assert_parity(out, qkv, shared, heads, shared_first, query_rows=None):
    """max|out - ref64| <= 2 * max|torch_lowp - ref64| + eps (see the module docstring)."""
    ref64 = _reference64(qkv, shared, heads, shared_first, query_rows)
    torch_lowp = concat_attention_torch(qkv, shared, num_heads=heads, shared_first=shared_first,
                                        query_rows=query_rows)
    assert out.shape == ref64.shape and out.dtype == qkv.dtype
    eps = torch.finfo(qkv.dtype).eps * ref64.abs().max().item()
    assert_twice_torch_max_error(out, torch_lowp, ref64, eps)


# ------------------------------------------------------------------------------------------
# Parity on the shared shape list
# ------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("shape", CONCAT_ATTENTION, ids=_shape_id)
def test_parity_fp32_every_listed_shape(shape):
    b, h, d, ls, lp, first = shape
    qkv, shared = _inputs(b, h, d, ls, lp, torch.float32)
    out = concat_attention(qkv, shared, num_heads=h, shared_first=first, backend="triton")
    _assert_parity(out, qkv, shared, h, first)


FP16_SHAPES = [s for s in CONCAT_ATTENTION if s[0] * s[1] <= 12] + [
    (1, 2, 64, 257, 32, True),   # TiTok-L decoder lengths at 2 heads (interpreter time)
    (1, 2, 64, 32, 257, False),  # TiTok-L encoder lengths at 2 heads
]


@needs_triton
@pytest.mark.parametrize("shape", FP16_SHAPES, ids=_shape_id)
def test_parity_fp16(shape):
    b, h, d, ls, lp, first = shape
    qkv, shared = _inputs(b, h, d, ls, lp, torch.float16)
    out = concat_attention(qkv, shared, num_heads=h, shared_first=first, backend="triton")
    _assert_parity(out, qkv, shared, h, first)


def _kept_gpu_configs():
    """Every (precision, head dim, config) autotuned on some GPU arch, once each."""
    seen = []
    for (arch, precision, d), configs in CA._CONFIGS.items():
        for config in configs:
            if (precision, d, config) not in seen:
                seen.append((precision, d, config))
    return seen


@needs_triton
@pytest.mark.parametrize("precision,head_dim,config", _kept_gpu_configs(),
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_kept_gpu_config_tiles(precision, head_dim, config):
    """The GPU tile sizes (the interpreter default is one block for L <= 512): unmasked full key
    blocks, a block straddling the segment boundary, a partial last block, online-softmax
    rescaling across blocks, several query blocks, a query range not starting at 0."""
    dtype = torch.float32 if precision == "fp32" else torch.float16
    for shared_first, rows in ((True, (0, 97)), (False, (5, 97))):
        qkv, shared = _inputs(2, 1, head_dim, 37, 60, dtype)
        out = CA._launch(qkv, shared, 1, shared_first, *rows, config)
        _assert_parity(out, qkv, shared, 1, shared_first, rows)


# ------------------------------------------------------------------------------------------
# Views, query ranges, batch, empty shared segment
# ------------------------------------------------------------------------------------------
@needs_triton
def test_non_contiguous_views_read_in_place():
    b, h, d, ls, lp = 3, 2, 64, 17, 40
    width = 3 * h * d
    big = torch.randn(2 * b, lp + 5, width + 32, device=TRITON_DEVICE)
    qkv = big[::2, 3:3 + lp, 16:16 + width]  # batch, row and column offsets: strides of the big buffer
    shared_big = torch.randn(ls + 4, width + 24, device=TRITON_DEVICE)
    shared = shared_big[2:2 + ls, 8:8 + width]
    assert not qkv.is_contiguous() and not shared.is_contiguous()
    big_before, shared_before = big.clone(), shared_big.clone()
    for first in (True, False):
        out = concat_attention(qkv, shared, num_heads=h, shared_first=first, backend="triton")
        _assert_parity(out, qkv, shared, h, first)
        dense = concat_attention(qkv.contiguous(), shared.contiguous(), num_heads=h, shared_first=first,
                                 backend="triton")
        assert torch.equal(out, dense)  # same kernel, same values: identical whatever the strides
    assert torch.equal(big, big_before) and torch.equal(shared_big, shared_before)


@needs_triton
def test_misaligned_view_rejected_by_triton_accepted_by_torch():
    h, d = 2, 32
    width = 3 * h * d
    qkv = torch.randn(2, 9, width + 1, device=TRITON_DEVICE)[:, :, 1:]  # 4-byte offset: not 16-byte aligned
    with pytest.raises(ValueError, match="16-byte aligned"):
        concat_attention(qkv, None, num_heads=h, backend="triton")
    out = concat_attention(qkv, None, num_heads=h, backend="torch")
    _assert_parity(out, qkv, None, h, True)


QUERY_ROW_CASES = [
    ((2, 2, 64, 17, 100, True), (1, 17)),      # decoder's last layer: the shared rows after row 0
    ((2, 2, 64, 17, 100, True), (10, 40)),     # straddles the shared / per-sample boundary
    ((2, 2, 64, 17, 100, True), (116, 117)),   # the last row only
    ((2, 2, 64, 17, 100, True), (0, 1)),       # the first row only
    ((2, 2, 64, 32, 100, False), (100, 132)),  # encoder's last layer: the K shared latent rows
    ((2, 2, 32, 32, 100, False), (95, 105)),   # straddles the boundary, shared last
]


@needs_triton
@pytest.mark.parametrize("shape,rows", QUERY_ROW_CASES, ids=lambda v: "-".join(map(str, v)))
def test_query_rows_subset(shape, rows):
    b, h, d, ls, lp, first = shape
    qkv, shared = _inputs(b, h, d, ls, lp, torch.float32)
    out = concat_attention(qkv, shared, num_heads=h, shared_first=first, query_rows=rows, backend="triton")
    assert out.shape == (b, rows[1] - rows[0], h * d)
    full64 = _reference64(qkv, shared, h, first)
    assert torch.allclose(_reference64(qkv, shared, h, first, rows), full64[:, rows[0]:rows[1]])
    _assert_parity(out, qkv, shared, h, first, rows)


@needs_triton
def test_query_rows_fp16_decoder_rows():
    qkv, shared = _inputs(1, 2, 64, 257, 32, torch.float16)
    out = concat_attention(qkv, shared, num_heads=2, query_rows=(1, 257), backend="triton")
    _assert_parity(out, qkv, shared, 2, True, (1, 257))


@needs_triton
@pytest.mark.parametrize("shared_first", [True, False])
def test_batch_samples_independent_and_shared_broadcast(shared_first):
    h, d, ls, lp = 2, 64, 17, 30
    qkv, shared = _inputs(3, h, d, ls, lp, torch.float32)
    qkv[2] = qkv[0]
    out = concat_attention(qkv, shared, num_heads=h, shared_first=shared_first, backend="triton")
    assert torch.equal(out[2], out[0])  # same sample rows + the same (stride-0) shared rows
    assert not torch.equal(out[1], out[0])
    single = concat_attention(qkv[1:2], shared, num_heads=h, shared_first=shared_first, backend="triton")
    assert torch.equal(out[1:2], single)


@needs_triton
def test_empty_shared_segment_is_plain_attention():
    h, d, lp = 4, 64, 50
    qkv, _ = _inputs(3, h, d, 0, lp, torch.float32)
    out_none = concat_attention(qkv, None, num_heads=h, backend="triton")
    out_empty = concat_attention(qkv, qkv.new_empty(0, 3 * h * d), num_heads=h, backend="triton")
    assert torch.equal(out_none, out_empty)
    _assert_parity(out_none, qkv, None, h, True)
    q, k, v = (t.double() for t in split_packed_qkv(qkv, h))
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, lp, h * d)
    assert torch.allclose(_reference64(qkv, None, h, True), plain)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_empty_batch(backend):
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    qkv, shared = _inputs(0, 2, 32, 3, 5, torch.float32, device=device)
    out = concat_attention(qkv, shared, num_heads=2, query_rows=(2, 8), backend=backend)
    assert out.shape == (0, 6, 64) and out.dtype == torch.float32


def test_split_packed_qkv_layout():
    b, length, h, d = 2, 5, 3, 4
    qkv = torch.arange(b * length * 3 * h * d, dtype=torch.float32).view(b, length, 3 * h * d)
    q, k, v = split_packed_qkv(qkv, h)
    assert q.shape == k.shape == v.shape == (b, h, length, d)
    for head in range(h):  # head h = columns h*d:(h+1)*d of each of the q | k | v parts
        assert torch.equal(q[:, head], qkv[..., head * d:(head + 1) * d])
        assert torch.equal(k[:, head], qkv[..., (h + head) * d:(h + head + 1) * d])
        assert torch.equal(v[:, head], qkv[..., (2 * h + head) * d:(2 * h + head + 1) * d])


def test_torch_backend_matches_multihead_attention():
    """The reference is the official math: nn.MultiheadAttention on the concatenated sequence."""
    width, heads, ls, lp, b = 96, 4, 5, 7, 2
    mha = torch.nn.MultiheadAttention(width, heads).double()
    shared_x = torch.randn(ls, width, dtype=torch.float64)
    x = torch.randn(b, lp, width, dtype=torch.float64)
    seq = torch.cat([shared_x.expand(b, -1, -1), x], dim=1)  # (B, L, W)
    expected, _ = mha(seq.transpose(0, 1), seq.transpose(0, 1), seq.transpose(0, 1), need_weights=False)
    w, bias = mha.in_proj_weight, mha.in_proj_bias
    attn = concat_attention_torch(x @ w.T + bias, shared_x @ w.T + bias, num_heads=heads)
    got = mha.out_proj(attn)
    assert torch.allclose(got, expected.transpose(0, 1), atol=1e-12, rtol=1e-12)


def test_auto_backend_on_cpu_is_torch(monkeypatch):
    monkeypatch.delenv("TITOK_KERNEL_BACKEND", raising=False)
    qkv, shared = _inputs(2, 2, 64, 5, 9, torch.float32, device="cpu")
    out = concat_attention(qkv, shared, num_heads=2, shared_first=False, query_rows=(3, 10))
    expected = concat_attention_torch(qkv, shared, num_heads=2, shared_first=False, query_rows=(3, 10))
    assert torch.equal(out, expected)


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------
def _bad_calls():
    q = torch.randn(2, 5, 3 * 2 * 32)
    s = torch.randn(4, 3 * 2 * 32)
    return [
        ("not a tensor", lambda: concat_attention(q.tolist(), s, num_heads=2), TypeError, "qkv must be a torch.Tensor"),
        ("rank", lambda: concat_attention(q[0], s, num_heads=2), ValueError, r"qkv must be 3-D .*\(5, 192\)"),
        ("int dtype", lambda: concat_attention(q.long(), s.long(), num_heads=2), TypeError, "torch.int64"),
        ("width", lambda: concat_attention(q, s, num_heads=5), ValueError, r"multiple of 3\*num_heads = 15"),
        ("heads type", lambda: concat_attention(q, s, num_heads=2.0), TypeError, "num_heads must be an int"),
        ("heads value", lambda: concat_attention(q, s, num_heads=0), ValueError, "num_heads must be >= 1, got 0"),
        ("Lp = 0", lambda: concat_attention(q[:, :0], s, num_heads=2), ValueError, r"Lp >= 1.*\(2, 0, 192\)"),
        ("shared rank", lambda: concat_attention(q, s[None], num_heads=2), ValueError, r"shared_qkv .*\(1, 4, 192\)"),
        ("shared width", lambda: concat_attention(q, s[:, :96], num_heads=2), ValueError, r"\(4, 96\)"),
        ("shared dtype", lambda: concat_attention(q, s.half(), num_heads=2), TypeError, "torch.float16"),
        ("shared type", lambda: concat_attention(q, s.numpy(), num_heads=2), TypeError, "ndarray"),
        ("shared_first", lambda: concat_attention(q, s, num_heads=2, shared_first=1), TypeError, "shared_first"),
        ("rows order", lambda: concat_attention(q, s, num_heads=2, query_rows=(3, 3)), ValueError,
         r"0 <= start < stop <= L = 9, got \(3, 3\)"),
        ("rows range", lambda: concat_attention(q, s, num_heads=2, query_rows=(0, 10)), ValueError, r"\(0, 10\)"),
        ("rows negative", lambda: concat_attention(q, s, num_heads=2, query_rows=(-1, 2)), ValueError, r"\(-1, 2\)"),
        ("rows type", lambda: concat_attention(q, s, num_heads=2, query_rows=(0.0, 2)), TypeError, "query_rows"),
        ("rows length", lambda: concat_attention(q, s, num_heads=2, query_rows=(0, 1, 2)), TypeError, "query_rows"),
        ("backend", lambda: concat_attention(q, s, num_heads=2, backend="cuda"), ValueError, "'cuda'"),
        ("head dim", lambda: concat_attention(torch.randn(1, 3, 3 * 2 * 48), None, num_heads=2, backend="triton"),
         ValueError, "head dim 48"),
        ("channel stride", lambda: concat_attention(torch.randn(1, 192, 3).transpose(1, 2), None, num_heads=1,
                                                    backend="triton"), ValueError, "stride 1"),
    ]


@pytest.mark.parametrize("case", _bad_calls(), ids=lambda c: c[0])
def test_validation_errors(case):
    _, call, exc, message = case
    with pytest.raises(exc, match=message):
        call()


def test_bf16_rejected_under_interpreter_only():
    if HAS_CUDA or not INTERPRET:
        pytest.skip("the message is specific to the CPU interpreter")
    qkv = torch.randn(1, 3, 3 * 2 * 32, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 is not supported by the Triton interpreter"):
        concat_attention(qkv, None, num_heads=2, backend="triton")
    assert concat_attention(qkv, None, num_heads=2, backend="torch").dtype == torch.bfloat16


@needs_triton
def test_auto_falls_back_once_per_reason_where_the_kernel_does_not_apply(monkeypatch):
    """With auto resolving to Triton (TITOK_KERNEL_BACKEND=triton on CPU): an unsupported head dim and a
    misaligned view run the torch reference, each reason warned once; an applicable call launches."""
    if not HAS_CUDA:
        monkeypatch.setenv("TITOK_KERNEL_BACKEND", "triton")
    monkeypatch.setattr(backend_module, "_WARNED", set())
    titok_kernels.reset_launch_counts()
    head48 = torch.randn(2, 5, 3 * 2 * 48, device=TRITON_DEVICE)
    misaligned = torch.randn(2, 9, 3 * 2 * 32 + 1, device=TRITON_DEVICE)[:, :, 1:]
    for qkv, reason in ((head48, "head dim not in"), (misaligned, "not 16-byte aligned")):
        with pytest.warns(titok_kernels.KernelFallbackWarning, match=reason):
            out = concat_attention(qkv, None, num_heads=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same reason, another shape: no second warning
            again = concat_attention(qkv[:1, :4], None, num_heads=2)
        assert torch.equal(out, concat_attention(qkv, None, num_heads=2, backend="torch"))
        assert torch.equal(again, concat_attention(qkv[:1, :4], None, num_heads=2, backend="torch"))
    assert titok_kernels.launch_counts() == {}
    qkv, shared = _inputs(2, 2, 32, 5, 9, torch.float32)
    out = concat_attention(qkv, shared, num_heads=2)
    assert titok_kernels.launch_counts() == {"concat_attention": 1}
    assert torch.equal(out, concat_attention(qkv, shared, num_heads=2, backend="triton"))
    titok_kernels.reset_launch_counts()


@needs_triton
def test_launches_from_several_threads_at_once():
    """Pipelines run from several Python threads at once (titok sample's CPU work items): Triton launches from
    two threads give the serial results and every launch is counted. Under TRITON_INTERPRET=1 the interpreter
    patches triton.language module-wide for each launch, so concurrent interpreted launches broke (ValueError
    "Did you forget to add @triton.jit ?") until titok_kernels serialised them."""
    import threading

    inputs = [_inputs(2, 2, 32, 5, 9, torch.float32) for _ in range(2)]
    expected = [concat_attention(q, s, num_heads=2, backend="triton") for q, s in inputs]
    titok_kernels.reset_launch_counts()
    rounds, errors, results = 6, [], {}
    start = threading.Barrier(2)

    def work(t):
        try:
            start.wait()
            q, s = inputs[t]
            results[t] = [concat_attention(q, s, num_heads=2, backend="triton") for _ in range(rounds)]
        except Exception as exc:  # noqa: BLE001 - reported below with the thread's number
            errors.append((t, repr(exc)))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert all(torch.equal(out, expected[t]) for t in range(2) for out in results[t])
    assert titok_kernels.launch_counts() == {"concat_attention": 2 * rounds}
    titok_kernels.reset_launch_counts()


# ------------------------------------------------------------------------------------------
# Custom op, torch.compile
# ------------------------------------------------------------------------------------------
def test_custom_op_opcheck():
    qkv, shared = _inputs(2, 2, 32, 3, 5, torch.float32, device="cpu")
    op = torch.ops.titok.concat_attention.default
    torch.library.opcheck(op, (qkv, shared, 2, True, 1, 8, "torch"))
    torch.library.opcheck(op, (qkv, None, 2, False, 0, 5, "torch"))


class _Block(torch.nn.Module):
    """LayerNorm -> in_proj -> concat_attention (per-sample query rows) -> out_proj, residual."""

    def __init__(self, width, heads, backend):
        super().__init__()
        self.heads, self.backend = heads, backend
        self.ln = torch.nn.LayerNorm(width)
        self.in_proj = torch.nn.Linear(width, 3 * width)
        self.out_proj = torch.nn.Linear(width, width)

    def forward(self, x, shared_qkv):
        ls, lp = shared_qkv.shape[0], x.shape[1]
        attn = concat_attention(self.in_proj(self.ln(x)), shared_qkv, num_heads=self.heads,
                                query_rows=(ls, ls + lp), backend=self.backend)
        return x + self.out_proj(attn)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_torch_compile_fullgraph_block(backend):
    torch._dynamo.reset()
    width, heads, ls, lp = 128, 4, 9, 7
    block = _Block(width, heads, backend).to(TRITON_DEVICE if backend == "triton" else "cpu")
    device = next(block.parameters()).device
    x = torch.randn(2, lp, width, device=device)
    shared_qkv = torch.randn(ls, 3 * width, device=device)
    with torch.no_grad():
        eager = block(x, shared_qkv)
        compiled = torch.compile(block, fullgraph=True)(x, shared_qkv)
    # Inductor may reorder the LayerNorm / Linear arithmetic: fp32 rounding-level differences only.
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_benchmark_quick_rows():
    from titok_bench.ops.concat_attention import run

    rows = run("cpu", quick=True)
    measured = [r for r in rows if r["status"] == "ok"]
    providers = {r["provider"] for r in measured}
    assert {"cat_sdpa_math", "sdpa_math_precat"} <= providers and "triton" not in {r["provider"] for r in rows}
    assert {r["status"] for r in rows} <= {"ok", "unsupported"}   # unsupported: an SDPA backend refusing CPU
    for r in measured:
        assert r["op"] == "concat_attention" and r["dtype"] == "float32" and r["case"] == "b64"
        assert r["flops"] == 4 * 2 * 16 * 289 * 289 * 64  # 4 * B * H * Lq * L * d
        assert r["eager_p20_ms"] <= r["eager_p50_ms"] <= r["eager_p80_ms"] and r["frac_peak_flops"] is None
        assert r["graph_p50_ms"] is None and r["graph_note"]       # no CUDA graph on CPU, and the row says so


# ------------------------------------------------------------------------------------------
# Ahead-of-time compilation of every kept config: sm_90 and sm_80, fp16/bf16/fp32, d 32/64/128,
# as launched (titok_kernels.concat_attention.aot_jobs)
# ------------------------------------------------------------------------------------------
def test_aot_jobs_cover_every_kept_config():
    jobs = aot_jobs()
    expected = sum(len(c) * (2 if p == "lowp" else 1) for (_, p, _), c in CA._CONFIGS.items())
    assert len({job.name for job in jobs}) == len(jobs) == expected
    assert {job.capability for job in jobs} == {90, 80}
    assert {job.launch.kwargs["HEAD_DIM"] for job in jobs} == {32, 64, 128}
    assert {job.launch.args[0].dtype for job in jobs} == {torch.float16, torch.bfloat16, torch.float32}


@pytest.fixture(scope="module")
def aot_reports():
    """Compile sm_90 and sm_80 in two parallel subprocesses (interpreter off there)."""
    return compile_jobs("titok_kernels.concat_attention")


@pytest.mark.slow
@pytest.mark.parametrize("name", [job.name for job in aot_jobs()])
def test_aot_every_kept_config_compiles_without_spills(aot_reports, name):
    r = aot_reports[name]
    print(f"{name}: REG {r.registers} STACK {r.stack_bytes} SHARED {r.shared_bytes}/{r.shared_limit}")
    assert r.specialized
    assert_compiles_cleanly(r, name)


# ------------------------------------------------------------------------------------------
# GPU parity (run where a GPU exists)
# ------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", CONCAT_ATTENTION, ids=_shape_id)
def test_gpu_parity(shape, dtype):
    b, h, d, ls, lp, first = shape
    qkv, shared = _inputs(b, h, d, ls, lp, dtype, device="cuda")
    out = concat_attention(qkv, shared, num_heads=h, shared_first=first)  # auto -> triton (autotuned)
    _assert_parity(out, qkv, shared, h, first)
    rows = (1, ls + lp) if first else (lp, ls + lp)
    part = concat_attention(qkv, shared, num_heads=h, shared_first=first, query_rows=rows)
    _assert_parity(part, qkv, shared, h, first, rows)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_gpu_titok_batch_views_and_cuda_graph(dtype):
    b, h, d, ls, lp = 64, 16, 64, 257, 32
    width = 3 * h * d
    big = torch.randn(b, ls + lp, width, dtype=dtype, device="cuda")
    qkv, shared = big[:, ls:], big[0, :ls]  # per-sample rows of a bigger buffer, shared rows in place
    out = concat_attention(qkv, shared, num_heads=h)
    _assert_parity(out, qkv, shared, h, True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = concat_attention(qkv, shared, num_heads=h)
    graph.replay()
    torch.cuda.synchronize()
    # Exact: the replay is the same launch (the config autotuned by the eager call above, no atomics) on the
    # same values.
    assert torch.equal(captured, out)


@pytest.mark.gpu
def test_gpu_torch_compile_fullgraph_block():
    torch._dynamo.reset()
    block = _Block(128, 2, "triton").cuda()
    x = torch.randn(3, 7, 128, device="cuda")
    shared_qkv = torch.randn(9, 384, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(block, fullgraph=True)(x, shared_qkv), block(x, shared_qkv),
                                   atol=1e-5, rtol=1e-5)
