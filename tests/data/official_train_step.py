"""The official MaskGIT generator training step on a golden tiny generator (used by regenerate_goldens.py).

The official pieces are taken from the checkout, in memory: `MLMLoss` (modeling/modules/losses.py) and
`create_optimizer` (utils/train_utils.py) are each compiled alone from their source (their modules import
torchvision, open_clip, the diffusion code...), `ImageBert.masking_input_tokens` and `ImageBert.forward`
are the imported class's. The step is `train_one_epoch_generator`'s body with one process and no
accelerate wrapper: `accelerator.clip_grad_norm_` is torch's `clip_grad_norm_` there (no fp16 scaler),
and the learning rate is the configured 2e-4 held constant (the official warm-up would make the first
step's lr 0). Dropout and attention dropout are set to 0 in the config so that gradients do not
depend on the order of dropout draws inside HF's BertModel (see docs/training.md).

Stored per generator in `<name>.generator.train.safetensors`: the inputs `tokens` (B, K) and
`condition` (B,) (drawn once, then read back: inputs are data), `seed`, the official `masked_tokens`,
`masks`, `loss`, `grad_norm`, `grad.<param>` and `after.<param>` (the parameters after one AdamW step).
"""
from __future__ import annotations

import ast
import math
import typing
from pathlib import Path

import torch

BATCH = 8
OPTIMIZER = {"name": "adamw", "params": {"learning_rate": 2e-4, "beta1": 0.9, "beta2": 0.96,
                                         "weight_decay": 0.03}}
TRAINING = {"max_grad_norm": 1.0}
LOSSES = {"label_smoothing": 0.1, "loss_weight_unmasked_token": 0.1}


def _compile_definition(path: Path, name: str, namespace: dict):
    """Compile the one top-level def/class `name` of `path` into `namespace` (nothing else of the file runs)."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if getattr(n, "name", None) == name]
    if len(nodes) != 1:
        raise SystemExit(f"expected one definition of {name} in {path}, found {len(nodes)}")
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def official_pieces(root: Path) -> tuple:
    from einops import rearrange

    namespace = {"torch": torch, "rearrange": rearrange, "Tuple": typing.Tuple, "Mapping": typing.Mapping,
                 "Text": typing.Text, "AdamW": torch.optim.AdamW, "math": math}
    loss_cls = _compile_definition(root / "modeling" / "modules" / "losses.py", "MLMLoss", namespace)
    create_optimizer = _compile_definition(root / "utils" / "train_utils.py", "create_optimizer", namespace)
    return loss_cls, create_optimizer


def _seed_with_a_class_drop(batch: int, seq: int, drop_prob: float) -> int:
    """The first seed whose official draws (masking, then the class drop) drop at least one class."""
    for seed in range(1000):
        torch.manual_seed(seed)
        torch.zeros(batch).uniform_(0, 1)
        torch.rand(batch, seq)
        if (torch.rand(batch) < drop_prob).any():
            return seed
    raise SystemExit("no seed below 1000 drops a class")


def train_inputs(config: dict, stored: dict | None) -> dict:
    gen = config["model"]["generator"]
    if stored is not None:
        return {k: stored[k] for k in ("tokens", "condition", "seed")}
    draw = torch.Generator().manual_seed(20)
    seq, vocab = gen["image_seq_len"], config["model"]["vq_model"]["codebook_size"]
    return {"tokens": torch.randint(0, vocab, (BATCH, seq), generator=draw),
            "condition": torch.randint(0, gen["condition_num_classes"], (BATCH,), generator=draw),
            "seed": torch.tensor(_seed_with_a_class_drop(BATCH, seq, gen["class_label_dropout"]))}


def generator_train(official, root: Path, config: dict, weights: Path, stored: dict | None) -> dict | None:
    """The official step's tensors, or None for a generator the official training cannot build (U-ViT)."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    gen = config["model"]["generator"]
    if gen["model_type"] != "ViT":
        # utils/train_utils.py:create_model_and_loss_module has `model_cls == UViTBert` (a comparison):
        # the official training of a U-ViT generator stops there.
        return None
    loss_cls, create_optimizer = official_pieces(root)
    conf = OmegaConf.create({**config, "optimizer": OPTIMIZER, "training": TRAINING, "losses": LOSSES})
    conf.model.generator.dropout = 0.0
    conf.model.generator.attn_drop = 0.0
    model = official.ImageBert(conf)
    model.load_state_dict(load_file(weights), strict=True)
    loss_module = loss_cls(conf)
    log = type("Log", (), {"info": staticmethod(lambda *a, **k: None)})()
    optimizer, _ = create_optimizer(conf, log, model, loss_module, model_type="maskgit", need_discrminator=False)
    inputs = train_inputs(config, stored)
    tokens, condition = inputs["tokens"], inputs["condition"]

    model.train()
    torch.manual_seed(int(inputs["seed"]))
    masked_tokens, masks = model.masking_input_tokens(tokens)
    logits = model(masked_tokens, condition.clone(), cond_drop_prob=gen["class_label_dropout"])
    loss, _ = loss_module(logits, tokens, weights=masks)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), TRAINING["max_grad_norm"])
    out = {**inputs, "masked_tokens": masked_tokens, "masks": masks, "loss": loss.detach(),
           "grad_norm": grad_norm}
    out.update({f"grad.{n}": p.grad.clone() for n, p in model.named_parameters()})
    optimizer.step()
    out.update({f"after.{n}": p.detach().clone() for n, p in model.named_parameters()})
    return out
