"""The generator training step against the official one (tests/data/tiny_vit.generator.train.safetensors,
made by tests/data/regenerate_goldens.py from the official code; this test does not need it).

The golden step runs with dropout 0 (see docs/training.md): masks, loss, clipped-norm, every
parameter's gradient (fp32, within 1e-5 of the gradient norm) and the parameters after one AdamW step.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_generator, golden_path
from titok.training import TrainSettings, TrainStep, mask_tokens, masked_lm_loss, param_groups


@pytest.fixture(scope="module")
def golden():
    return load_file(golden_path("tiny_vit.generator.train.safetensors"))


def _model():
    model, _, _ = golden_generator("tiny_vit")
    return model.requires_grad_(True)


def test_masks_match_the_official_draws(golden):
    torch.manual_seed(int(golden["seed"]))
    masked, masks = mask_tokens(golden["tokens"], 64)
    assert torch.equal(masks, golden["masks"]) and torch.equal(masked, golden["masked_tokens"])
    assert bool((masks.sum(1) >= 1).all())


def test_step_matches_the_official_gradients_and_update(golden):
    model = _model()
    step = TrainStep(model, TrainSettings())
    torch.manual_seed(int(golden["seed"]))
    loss, masks = step.loss(golden["tokens"], golden["condition"])
    assert torch.equal(masks, golden["masks"])
    assert abs(loss.item() - golden["loss"].item()) <= 1e-6 * golden["loss"].item()
    grad_norm = step.backward(loss)
    assert abs(grad_norm.item() - golden["grad_norm"].item()) <= 1e-5 * golden["grad_norm"].item()
    names = [n for n, _ in model.named_parameters()]
    assert sorted(f"grad.{n}" for n in names) == sorted(k for k in golden if k.startswith("grad."))
    clipped_norm = torch.linalg.vector_norm(torch.stack([golden[f"grad.{n}"].norm() for n in names]))
    for name, p in model.named_parameters():
        assert (p.grad - golden[f"grad.{name}"]).norm() <= 1e-5 * clipped_norm, name
        # The update is checked on the golden gradients: AdamW's first step moves an entry by
        # lr * g / (|g| + eps), which for |g| near eps (1e-8) turns a gradient's last-bit CPU rounding (checked
        # above) into a visible change (1.8e-9 on an AVX2-only EPYC); from the same gradients the step is exact.
        p.grad = golden[f"grad.{name}"].clone()
    step.optimizer.step()
    for name, p in model.named_parameters():
        # AdamW's first step moves each entry by about lr * sign(grad): 1e-6 of lr bounds fp32 rounding.
        assert (p.detach() - golden[f"after.{name}"]).abs().max() <= 2e-10 + 1e-6 * p.abs().max(), name


def test_a_class_is_dropped_in_the_golden_step(golden):
    """The golden exercises the class-drop path (its seed was chosen for that)."""
    torch.manual_seed(int(golden["seed"]))
    torch.zeros(8).uniform_(0, 1)
    torch.rand(8, 8)
    assert bool((torch.rand(8) < 0.1).any())


def test_weight_decay_groups_follow_the_official_rule():
    model = _model()
    no_decay, decay = param_groups(model, 0.03)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == 0.03 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith(".weight") and "embeddings" not in n and "LayerNorm" not in n for n in decayed)
    assert "model.lm_head.weight" in decayed
    assert "model.embeddings.word_embeddings.weight" in {names[id(p)] for p in no_decay["params"]}


def test_loss_weights_and_smoothing_against_a_direct_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    masks = torch.rand(2, 5, generator=g) < 0.5
    logp = logits.log_softmax(-1)
    per = -(0.9 * logp.gather(-1, targets[..., None])[..., 0] + 0.1 * logp.mean(-1))
    w = torch.where(masks, torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64))
    expected = (per * w).sum() / (w.sum() + 1e-8)
    assert torch.allclose(masked_lm_loss(logits, targets, masks), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_uvit"])
def test_fast_runtime_steps_and_lowers_the_loss(name):
    model, _, _ = golden_generator(name)
    model.requires_grad_(True)
    step = TrainStep(model, TrainSettings(lr=1e-3), runtime="fast")
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 64, (8, 8), generator=g)
    condition = torch.randint(0, 10, (8,), generator=g)
    torch.manual_seed(3)
    first = step(tokens, condition)["loss"]
    for _ in range(5):
        torch.manual_seed(3)
        last = step(tokens, condition)["loss"]
    assert torch.isfinite(first) and last < first


def test_runtime_is_validated():
    with pytest.raises(ValueError, match="runtime"):
        TrainStep(_model(), runtime="turbo")


def _loss_and_grads(model, runtime: str, seed: int, *, autocast: bool = False, dtype=None):
    """One step's loss and the concatenated gradient (fp64) of a copy of `model`, draws from `seed`."""
    import copy
    import contextlib

    m = copy.deepcopy(model).requires_grad_(True)
    if dtype is not None:
        m = m.to(dtype)
    step = TrainStep(m, runtime=runtime)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 64, (16, 8), generator=g)
    condition = torch.randint(0, 10, (16,), generator=g)
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
        loss, _ = step.loss(tokens, condition)
    loss.backward()
    return loss.detach().double(), torch.cat([p.grad.double().flatten() for p in m.parameters()])


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_uvit"])
def test_fast_runtime_within_twice_plain_bf16_error(name):
    """The fast step (bf16 autocast trunk, fused bf16 loss) against an fp64 step, beside plain torch's bf16
    autocast of the reference step: loss and gradient errors at most twice plain bf16's (summed over 3 draws;
    measured on an AMD EPYC: 0.99-1.02x of plain)."""
    model, _, _ = golden_generator(name)
    errors = {"plain": [0.0, 0.0], "fast": [0.0, 0.0]}
    for seed in range(3):
        loss64, grad64 = _loss_and_grads(model, "reference", seed, dtype=torch.float64)
        for key, (runtime, autocast) in {"plain": ("reference", True), "fast": ("fast", False)}.items():
            loss, grad = _loss_and_grads(model, runtime, seed, autocast=autocast)
            errors[key][0] += float((loss - loss64).abs())
            errors[key][1] += float((grad - grad64).norm() / grad64.norm())
    assert errors["plain"][1] > 0                      # bf16 really ran in the plain step
    assert errors["fast"][0] <= 2 * errors["plain"][0], errors
    assert errors["fast"][1] <= 2 * errors["plain"][1], errors
