"""MaskGIT generators over TiTok tokens, with the official state-dict layouts.

Token space (both generators): [0, V) image tokens, V the mask token, V+1+c the
class c, V+1+num_classes the dropped class (unconditional). Input rows are
[class token, K image tokens]; logits are returned for the K image rows.

- `MaskGITViT`: the official `ImageBert`, a HuggingFace BertModel (post-LN, GELU,
  LayerNorm eps 1e-12, absolute + token-type embeddings) stored under `model.`,
  with `model.lm_head` to the codebook.
- `UViT`: the official `UViTBert`: pre-LN blocks with long skips, qkv without bias,
  attention computed in fp32.

`forward(input_ids, condition, cond_drop_prob)` is the official call, including
its draw of one `torch.rand(B)` for the class-drop mask (the reference sampler's
random-number order depends on it). `logits(input_ids, class_tokens)` is the same
network with the class tokens given, for the fast path (no random draw).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok.configs import GeneratorConfig


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, seq, width = x.shape
    return x.view(b, seq, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, seq, d = x.shape
    return x.transpose(1, 2).reshape(b, seq, h * d)


class _Module(nn.Module):
    """A bare container whose children are added by name (to mirror HF's module paths)."""


def _bert_layer(hidden: int, intermediate: int) -> nn.Module:
    layer = _Module()
    layer.attention = _Module()
    layer.attention.self = _Module()
    for name in ("query", "key", "value"):
        setattr(layer.attention.self, name, nn.Linear(hidden, hidden))
    layer.attention.output = _Module()
    layer.attention.output.dense = nn.Linear(hidden, hidden)
    layer.attention.output.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
    layer.intermediate = _Module()
    layer.intermediate.dense = nn.Linear(hidden, intermediate)
    layer.output = _Module()
    layer.output.dense = nn.Linear(intermediate, hidden)
    layer.output.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
    return layer


class _Generator(nn.Module):
    cfg: GeneratorConfig

    @property
    def mask_token_id(self) -> int:
        return self.cfg.mask_token_id

    def class_tokens(self, condition: torch.Tensor, drop: torch.Tensor | bool) -> torch.Tensor:
        """Class ids (B,) -> class token ids, replaced by the dropped-class token where `drop`."""
        shifted = condition + self.cfg.codebook_size + 1
        null = self.cfg.codebook_size + 1 + self.cfg.num_classes
        if isinstance(drop, bool):
            return torch.full_like(shifted, null) if drop else shifted
        return torch.where(drop, torch.full_like(shifted, null), shifted)

    def forward(self, input_ids: torch.Tensor, condition: torch.Tensor, cond_drop_prob: float = 0.1) -> torch.Tensor:
        """The official forward: draws rand(B) for the class drop, returns logits (B, K, V)."""
        drop = torch.rand_like(condition, dtype=torch.float) < cond_drop_prob
        return self.logits(input_ids, self.class_tokens(condition, drop))

    def save_pretrained(self, folder, *, tokenizer_cfg) -> None:
        """Write `config.json` (official layout, sampling defaults included) + `model.safetensors`; the
        official config also describes the tokenizer the generator pairs with (`tokenizer_cfg`)."""
        from titok.saving import save_pretrained

        save_pretrained(self, folder, tokenizer_cfg=tokenizer_cfg, generator_cfg=self.cfg)

    def logits(self, input_ids: torch.Tensor, class_tokens: torch.Tensor) -> torch.Tensor:
        ids = torch.cat([class_tokens.view(-1, 1), input_ids.view(input_ids.shape[0], -1)], dim=1)
        return self.lm_head_logits(self.hidden_states(ids))

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def lm_head_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MaskGITViT(_Generator):
    """BERT-layout MaskGIT transformer (TiTok-L-32 / B-64 generators)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        if cfg.model_type != "ViT":
            raise ValueError(f"MaskGITViT needs model_type 'ViT', got {cfg.model_type!r}")
        self.cfg = cfg
        h = cfg.hidden_size
        self.model = _Module()
        emb = self.model.embeddings = _Module()
        emb.word_embeddings = nn.Embedding(cfg.vocab_size, h)
        emb.position_embeddings = nn.Embedding(cfg.image_seq_len + 1, h)
        emb.token_type_embeddings = nn.Embedding(2, h)
        emb.LayerNorm = nn.LayerNorm(h, eps=1e-12)
        self.model.encoder = _Module()
        self.model.encoder.layer = nn.ModuleList(
            [_bert_layer(h, cfg.intermediate_size) for _ in range(cfg.num_layers)])
        self.model.lm_head = nn.Linear(h, cfg.codebook_size)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.model.embeddings
        x = emb.word_embeddings(ids) + emb.token_type_embeddings.weight[0]
        x = x + emb.position_embeddings.weight[: ids.shape[1]]
        return emb.LayerNorm(x)

    def layer_forward(self, layer: nn.Module, x: torch.Tensor, attend=F.scaled_dot_product_attention) -> torch.Tensor:
        """One BERT layer; `attend(q, k, v)` is the attention (SDPA; the fast runtime passes its own)."""
        heads = self.cfg.num_heads
        att = layer.attention
        q, k, v = (_split_heads(getattr(att.self, n)(x), heads) for n in ("query", "key", "value"))
        ctx = _merge_heads(attend(q, k, v))
        x = att.output.LayerNorm(att.output.dense(ctx) + x)
        h = F.gelu(layer.intermediate.dense(x))
        return layer.output.LayerNorm(layer.output.dense(h) + x)

    def hidden_states(self, ids: torch.Tensor, attend=F.scaled_dot_product_attention) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.model.encoder.layer:
            x = self.layer_forward(layer, x, attend)
        return x

    def lm_head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden[:, 1:])


class UViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, seq, dim = x.shape
        # Official: attention in fp32 whatever the activation dtype.
        qkv = self.qkv(x).view(b, seq, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4).float()
        out = _merge_heads(F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]))
        return self.proj(out.to(x.dtype))  # back to the activation dtype (a no-op in fp32, as the official)


class UViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class UViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, skip: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = UViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = UViTMlp(dim, hidden)
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(_Generator):
    """U-ViT MaskGIT transformer (TiTok-S-128 generator): in-blocks, a mid block, out-blocks with long skips."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        if cfg.model_type != "UViT":
            raise ValueError(f"UViT needs model_type 'UViT', got {cfg.model_type!r}")
        self.cfg = cfg
        h, heads, inter = cfg.hidden_size, cfg.num_heads, cfg.intermediate_size
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.image_seq_len + 1, h))
        self.embeddings = nn.Embedding(cfg.vocab_size, h)
        self.in_blocks = nn.ModuleList([UViTBlock(h, heads, inter) for _ in range(cfg.num_layers // 2)])
        self.mid_block = UViTBlock(h, heads, inter)
        self.out_blocks = nn.ModuleList([UViTBlock(h, heads, inter, skip=True) for _ in range(cfg.num_layers // 2)])
        self.norm = nn.LayerNorm(h)
        self.lm_head = nn.Linear(h, cfg.codebook_size)

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids) + self.pos_embed[:, : ids.shape[1]]
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return x

    def lm_head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden)[:, 1:])


def build_generator(cfg: GeneratorConfig) -> _Generator:
    return MaskGITViT(cfg) if cfg.model_type == "ViT" else UViT(cfg)
