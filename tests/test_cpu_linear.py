"""titok.cpu_linear: bf16 linear layers on packed oneDNN weights, and plain F.linear everywhere else.

Where the packed route applies (CPU, bf16, no autograd, oneDNN bf16 present) its error against an fp64
product is at most twice F.linear's bf16 error (the project's low-precision bound, eps 0); everywhere else
`linear` is F.linear itself, checked bit for bit. The bf16 tests need oneDNN's bf16 support on this CPU
(AVX512-BF16/AMX, or AVX512 on which oneDNN emulates it); they say so when they skip.
"""
import gc
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernel_utils import assert_twice_torch_max_error
from titok import cpu_linear
from titok.cpu_linear import PACKED_LINEAR_ENV, PackedLinear, linear, packed_linears, packing_applies

needs_onednn_bf16 = pytest.mark.skipif(not cpu_linear.onednn_bf16_available(),
                                       reason="this CPU/PyTorch build has no oneDNN bf16 matmul")


def _case(rows, k, n, *, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*rows, k, generator=g)
    w = torch.randn(n, k, generator=g) / k ** 0.5
    b = torch.randn(n, generator=g) if bias else None
    return x, w, b


def _bf16(*tensors):
    return [None if t is None else t.to(torch.bfloat16) for t in tensors]


@needs_onednn_bf16
@pytest.mark.parametrize("rows, k, n, bias", [((264,), 768, 768, True), ((8, 33), 96, 384, True),
                                              ((1, 1), 64, 32, True), ((2, 17), 128, 64, False)])
def test_bf16_within_twice_plain_error(rows, k, n, bias):
    x, w, b = _bf16(*_case(rows, k, n, bias=bias))
    with torch.no_grad():
        assert packing_applies(x, w)
        out = linear(x, w, b)
        ref = F.linear(x.double(), w.double(), None if b is None else b.double())
        assert out.shape == ref.shape and out.dtype == torch.bfloat16
        assert_twice_torch_max_error(out, F.linear(x, w, b), ref, 0.0, "packed linear")


@needs_onednn_bf16
def test_bf16_strided_input_within_bound():
    """Row slices (the fast decoder's last layer reads x[:, rows]) and column slices."""
    x, w, b = _bf16(*_case((3, 40), 64, 48))
    with torch.no_grad():
        for view in (x[:, 5:30], x[..., ::2][:, 1:]):
            ww = w if view.shape[-1] == 64 else w[:, :32].contiguous()
            ref = F.linear(view.double(), ww.double(), b.double())
            assert_twice_torch_max_error(linear(view, ww, b), F.linear(view.contiguous(), ww, b), ref, 0.0,
                                         "packed linear, strided input")


def test_fp32_and_grad_are_plain_f_linear():
    x, w, b = _case((5, 7), 32, 16)
    assert not packing_applies(x, w)
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))
    xb, wb, bb = _bf16(x, w, b)
    wb.requires_grad_(True)
    assert not packing_applies(xb, wb)  # autograd on: the packed op has no backward
    out = linear(xb, wb, bb)
    out.float().sum().backward()
    assert wb.grad is not None and torch.equal(out, F.linear(xb, wb, bb))


def test_env_switch_off_is_plain_f_linear(monkeypatch):
    monkeypatch.setenv(PACKED_LINEAR_ENV, "0")
    x, w, b = _bf16(*_case((4, 9), 64, 32))
    with torch.no_grad():
        assert not packing_applies(x, w)
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))


@needs_onednn_bf16
def test_in_place_weight_change_repacks_and_weights_are_not_kept_alive():
    x, w, b = _bf16(*_case((6,), 64, 32))
    with torch.no_grad():
        before = linear(x, w, b)
        packed = cpu_linear.packed_weight(w)
        assert cpu_linear.packed_weight(w) is packed  # packed once per weight value
        w.mul_(-1)
        after = linear(x, w, b)
        assert cpu_linear.packed_weight(w) is not packed
        ref = F.linear(x.double(), w.double(), b.double())
        assert_twice_torch_max_error(after, F.linear(x, w, b), ref, 0.0, "after an in-place change")
        assert not torch.equal(before, after)
    count = len(cpu_linear._packed)
    del w, packed
    gc.collect()
    assert len(cpu_linear._packed) == count - 1


@needs_onednn_bf16
def test_threads_share_one_packed_copy():
    x, w, b = _bf16(*_case((16,), 128, 64))
    ref = F.linear(x.double(), w.double(), b.double())
    plain = F.linear(x, w, b)
    outs, errors = [], []

    def work():
        try:
            with torch.no_grad():
                outs.append(linear(x, w, b))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(outs) == 4
    for out in outs:
        assert_twice_torch_max_error(out, plain, ref, 0.0, "packed linear from a thread")


def test_packed_linears_shares_parameters_and_leaves_the_original():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4), nn.LayerNorm(4))
    clone = packed_linears(model)
    assert [type(m) for m in model] == [nn.Linear, nn.GELU, nn.Linear, nn.LayerNorm]
    assert [type(m) for m in clone] == [PackedLinear, nn.GELU, PackedLinear, nn.LayerNorm]
    assert all(p is q for p, q in zip(model.parameters(), clone.parameters()))
    x = torch.randn(3, 8)
    assert torch.equal(model(x), clone(x))  # fp32: F.linear itself
    with torch.no_grad():
        model[0].weight.add_(1.0)  # in place: the clone sees it
    assert torch.equal(model(x), clone(x))


@needs_onednn_bf16
def test_fast_bf16_pipeline_packs_its_linears_and_fp32_packs_none():
    """The fast runtime on a CPU: bf16 runs the generator's and the ViT decoder's linear layers on packed
    weights; fp32 packs nothing (F.linear, bit-equal to the reference: tests/test_pipeline.py)."""
    from conftest import golden_generator, golden_tokenizer
    from titok.pipeline import Pipeline

    tok, _ = golden_tokenizer("tiny_legacy")
    gen, sampler, _ = golden_generator("tiny_vit")
    cls = torch.arange(2)
    seen = []
    real = cpu_linear.packed_weight

    def spy(weight):
        seen.append(weight)
        return real(weight)

    cpu_linear.packed_weight, saved = spy, cpu_linear.packed_weight
    try:
        Pipeline(tok, gen, mode="fast", sampler=sampler, dtype=torch.float32).generate(cls, seed=0)
        assert seen == []
        fast = Pipeline(tok, gen, mode="fast", sampler=sampler, dtype=torch.bfloat16)
        fast.generate(cls, seed=0)
    finally:
        cpu_linear.packed_weight = saved
    ids = {id(w) for w in seen}
    assert id(fast.generator.model.lm_head.weight) in ids
    assert id(fast.decoder.decoder.transformer[0].mlp.c_fc.weight) in ids
    assert id(fast.decoder.decoder.transformer[0].attn.in_proj_weight) in ids


def test_a_build_that_cannot_pack_falls_back_to_f_linear(monkeypatch):
    """oneDNN without the packing op (or refusing the ISA): F.linear, and no further attempt in the process."""
    def refuse(weight):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(cpu_linear, "_available", True)
    monkeypatch.setattr(cpu_linear, "packed_weight", refuse)
    x, w, b = _bf16(*_case((3,), 16, 8))
    with torch.no_grad():
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))
        assert not cpu_linear.onednn_bf16_available() and not packing_applies(x, w)


@needs_onednn_bf16
@pytest.mark.parametrize("rows, k, n", [((264,), 768, 3072), ((2, 33), 96, 384), ((1, 1), 64, 32)])
def test_gelu_and_residual_post_ops_within_twice_the_unfused_error(rows, k, n):
    """linear_gelu / linear_add on the packed route (one oneDNN call, the GELU / add on the fp32 accumulator)
    against fp64: at most twice the error of the unfused bf16 ops (F.linear, then F.gelu / +); a strided
    residual (the decoder's last layer passes x[:, rows]) gives the same values as a contiguous one."""
    x, w, b = _bf16(*_case(rows, k, n))
    g = torch.Generator().manual_seed(1)
    residual = torch.randn(*rows, n, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        x64, w64, b64 = x.double(), w.double(), b.double()
        assert_twice_torch_max_error(cpu_linear.linear_gelu(x, w, b), F.gelu(F.linear(x, w, b)),
                                     F.gelu(F.linear(x64, w64, b64)), 0.0, "linear + GELU post-op")
        assert_twice_torch_max_error(cpu_linear.linear_add(x, w, b, residual), residual + F.linear(x, w, b),
                                     residual.double() + F.linear(x64, w64, b64), 0.0, "linear + add post-op")
        wide = torch.randn(*rows, 2 * n, generator=g).to(torch.bfloat16)
        strided = wide[..., :n]
        assert torch.equal(cpu_linear.linear_add(x, w, b, strided), cpu_linear.linear_add(x, w, b, strided.clone()))


def test_gelu_and_residual_are_the_plain_ops_off_the_packed_route(monkeypatch):
    """fp32 (and bf16 with the switch off, and a residual that broadcasts): exactly F.gelu(F.linear(...)) and
    residual + F.linear(...), bit for bit (fp32 `fast` stays equal to the reference)."""
    x, w, b = _case((3, 5), 32, 16)
    residual = torch.randn(3, 5, 16)
    assert torch.equal(cpu_linear.linear_gelu(x, w, b), F.gelu(F.linear(x, w, b)))
    assert torch.equal(cpu_linear.linear_add(x, w, b, residual), residual + F.linear(x, w, b))
    xb, wb, bb, rb = _bf16(x, w, b, residual)
    with torch.no_grad():
        row = rb[:1, :1]   # broadcasts: no post-op, the sum as written
        assert torch.equal(cpu_linear.linear_add(xb, wb, bb, row), row + linear(xb, wb, bb))
        monkeypatch.setenv(PACKED_LINEAR_ENV, "0")
        assert torch.equal(cpu_linear.linear_gelu(xb, wb, bb), F.gelu(F.linear(xb, wb, bb)))
        assert torch.equal(cpu_linear.linear_add(xb, wb, bb, rb), rb + F.linear(xb, wb, bb))


@needs_onednn_bf16
def test_generator_layers_on_the_packed_route_stay_within_the_bf16_bound():
    """The fast runtime's MaskGIT-ViT layer for bf16 on a CPU (one QKV product, GELU and residual adds as
    post-ops) against the same layers in fp64: at most twice the error of the reference layers in bf16 with
    the packed linears (eps 0); its fused QKV weight follows in-place changes."""
    import copy

    from conftest import golden_generator
    from titok import fast

    gen, _, _ = golden_generator("tiny_vit")
    ids = torch.randint(0, gen.cfg.codebook_size, (3, gen.cfg.image_seq_len + 1), generator=torch.Generator()
                        .manual_seed(0))
    packed = packed_linears(copy.deepcopy(gen).to(torch.bfloat16))
    with torch.no_grad():
        gen64 = copy.deepcopy(gen).double()
        x64, x = gen64.embed(ids), packed.embed(ids)
        layer = packed.model.encoder.layer[0]
        assert packing_applies(x, layer.attention.self.query.weight)
        ref64 = gen64.layer_forward(gen64.model.encoder.layer[0], x.double(), fast.sdpa)
        plain = packed.layer_forward(layer, x, fast.sdpa)
        fused = fast._bert_layer_packed(packed, layer, x)
        assert_twice_torch_max_error(fused, plain, ref64, 0.0, "packed MaskGIT-ViT layer")
        w, b = fast.fused_qkv(layer.attention.self)
        assert w.shape == (3 * gen.cfg.hidden_size, gen.cfg.hidden_size)
        assert fast.fused_qkv(layer.attention.self)[0] is w    # cached: packed once
        layer.attention.self.key.weight.mul_(2)
        w2, _ = fast.fused_qkv(layer.attention.self)
        assert w2 is not w and torch.equal(w2[gen.cfg.hidden_size:2 * gen.cfg.hidden_size],
                                           layer.attention.self.key.weight)
