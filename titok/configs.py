"""Model configurations: the official nested config format, and the registry of named variants.

The official code configures everything through one nested OmegaConf document
(`model.vq_model`, `model.generator`, `dataset.preprocessing.crop_size`). This
module parses that document (resolving the `${a.b.c}` interpolations the
released `config.json` files still carry) into small frozen dataclasses, and
writes it back, so that a folder saved here loads in the official code too.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

# ViT sizes of the official code (width, layers, heads); "tiny" is the size the
# golden models of tests/data were produced with; "mini" (head dim 32, the smallest head dim
# the attention kernel takes) lets CPU tests run the fast path's Triton attention.
VIT_SIZES = {
    "tiny": (64, 2, 4),
    "mini": (64, 2, 2),
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")
MODES = ("reference", "compile", "fast")   # the runtimes of titok.pipeline.Pipeline (tests check they agree)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """A TiTok tokenizer (1D encoder + quantizer + decoder + optional MaskGIT-VQGAN pixel decoder)."""

    image_size: int = 256
    enc_size: str = "large"
    dec_size: str = "large"
    enc_patch_size: int = 16
    dec_patch_size: int = 16
    num_latent_tokens: int = 32
    token_size: int = 12
    codebook_size: int = 4096
    use_l2_norm: bool = True
    quantize_mode: str = "vq"           # "vq" (discrete tokens) or "vae" (continuous mean/logvar tokens)
    two_stage: bool = True              # official `finetune_decoder`: proxy-code logits -> MaskGIT-VQGAN decoder
    is_legacy: bool = True              # legacy (L-32/B-64/S-128) latent reshape without permute
    pixel_hidden_channels: int = 128    # MaskGIT-VQGAN decoder width (128 in every released model)
    proxy_codes_per_patch: int = 1      # 2x2 = 4 for the 512px architectures (see VARIANTS)
    commitment_cost: float = 0.25

    def __post_init__(self):
        for name in ("enc_size", "dec_size"):
            if getattr(self, name) not in VIT_SIZES:
                raise ValueError(f"{name} must be one of {sorted(VIT_SIZES)}, got {getattr(self, name)!r}")
        if self.quantize_mode not in ("vq", "vae"):
            raise ValueError(f"quantize_mode must be 'vq' or 'vae', got {self.quantize_mode!r}")
        if self.two_stage and self.quantize_mode != "vq":
            raise ValueError("the two-stage (proxy-code) decoder exists only with vq quantization")
        for name in ("enc_patch_size", "dec_patch_size"):
            if self.image_size % getattr(self, name):
                raise ValueError(f"image_size {self.image_size} is not a multiple of {name} {getattr(self, name)}")
        if self.proxy_codes_per_patch not in (1, 4):
            raise ValueError(f"proxy_codes_per_patch must be 1 or 4, got {self.proxy_codes_per_patch}")

    @property
    def enc_width(self) -> int:
        return VIT_SIZES[self.enc_size][0]

    @property
    def dec_width(self) -> int:
        return VIT_SIZES[self.dec_size][0]

    @property
    def enc_grid(self) -> int:
        return self.image_size // self.enc_patch_size

    @property
    def dec_grid(self) -> int:
        return self.image_size // self.dec_patch_size

    @property
    def proxy_grid(self) -> int:
        """Side of the 2D proxy-code grid fed to the MaskGIT-VQGAN decoder (16 at 256px, 32 at 512px)."""
        return self.dec_grid * (2 if self.proxy_codes_per_patch == 4 else 1)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """MaskGIT sampling hyper-parameters (the official `generate` arguments)."""

    num_steps: int = 8
    guidance_scale: float = 4.5
    guidance_decay: str = "linear"
    guidance_scale_pow: float = 3.0
    randomize_temperature: float = 9.5
    softmax_temperature_annealing: bool = True   # the official sampling script turns it on

    def __post_init__(self):
        if self.guidance_decay not in GUIDANCE_DECAYS:
            raise ValueError(f"guidance_decay must be one of {GUIDANCE_DECAYS}, got {self.guidance_decay!r}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """A MaskGIT generator over TiTok tokens: BERT-layout ViT ("ViT") or U-ViT ("UViT")."""

    model_type: str = "ViT"
    hidden_size: int = 768
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 3072
    image_seq_len: int = 32
    codebook_size: int = 4096
    num_classes: int = 1000
    # The sampling defaults travel with the generator: read from its checkpoint's config (or the variant).
    sampler: SamplerConfig = SamplerConfig()

    def __post_init__(self):
        if not isinstance(self.sampler, SamplerConfig):
            raise TypeError(f"sampler must be a SamplerConfig, got {type(self.sampler).__name__}")
        if self.model_type not in ("ViT", "UViT"):
            raise ValueError(f"model_type must be 'ViT' or 'UViT', got {self.model_type!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @property
    def vocab_size(self) -> int:
        """codebook + mask token + classes + the dropped-class token."""
        return self.codebook_size + self.num_classes + 2

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size


# ---------------------------------------------------------------------------------------------
# The official nested config document
# ---------------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def resolve_interpolations(doc: dict) -> dict:
    """Resolve whole-value `${a.b.c}` references (OmegaConf style) in a nested dict; returns a copy."""
    doc = copy.deepcopy(doc)

    def lookup(path: str, seen: tuple) -> Any:
        if path in seen:
            raise ValueError(f"config interpolation cycle: {' -> '.join(seen + (path,))}")
        node: Any = doc
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"config interpolation ${{{path}}} points to a missing key")
            node = node[part]
        return resolve(node, seen + (path,))

    def resolve(value: Any, seen: tuple = ()) -> Any:
        if isinstance(value, str):
            match = _INTERPOLATION.match(value.strip())
            if match:
                return lookup(match.group(1), seen)
        return value

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(resolve(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(resolve(v)) for v in node]
        return node

    return walk(doc)


def tokenizer_config_from_official(doc: dict) -> TokenizerConfig:
    """Build a TokenizerConfig from the official nested config (a parsed config.json / yaml)."""
    doc = resolve_interpolations(doc)
    try:
        vq = doc["model"]["vq_model"]
        crop = doc.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError("not an official TiTok config: it has no model.vq_model section") from exc
    mode = vq.get("quantize_mode", "vq")
    return TokenizerConfig(
        image_size=int(crop),
        enc_size=vq["vit_enc_model_size"],
        dec_size=vq["vit_dec_model_size"],
        enc_patch_size=int(vq["vit_enc_patch_size"]),
        dec_patch_size=int(vq["vit_dec_patch_size"]),
        num_latent_tokens=int(vq["num_latent_tokens"]),
        token_size=int(vq["token_size"]),
        codebook_size=int(vq.get("codebook_size", 0)) if mode == "vq" else 0,
        use_l2_norm=bool(vq.get("use_l2_norm", False)),
        quantize_mode=mode,
        two_stage=bool(vq.get("finetune_decoder", True)),
        is_legacy=bool(vq.get("is_legacy", True)),
        pixel_hidden_channels=int(vq.get("pixel_hidden_channels", 128)),
        proxy_codes_per_patch=int(vq.get("proxy_codes_per_patch", 1)),
        commitment_cost=float(vq.get("commitment_cost", 0.25)),
    )


def generator_config_from_official(doc: dict) -> GeneratorConfig:
    """Build a GeneratorConfig, its sampling defaults included, from the official nested config."""
    doc = resolve_interpolations(doc)
    try:
        gen = doc["model"]["generator"]
        vq = doc["model"]["vq_model"]
    except (KeyError, TypeError) as exc:
        raise ValueError("not an official TiTok generator config: it has no model.generator section") from exc
    sampler = SamplerConfig(
        num_steps=int(gen.get("num_steps", 8)),
        guidance_scale=float(gen.get("guidance_scale", 3.0)),
        guidance_decay=gen.get("guidance_decay", "constant"),
        randomize_temperature=float(gen.get("randomize_temperature", 4.5)),
    )
    return GeneratorConfig(
        model_type=gen["model_type"],
        hidden_size=int(gen["hidden_size"]),
        num_layers=int(gen["num_hidden_layers"]),
        num_heads=int(gen["num_attention_heads"]),
        intermediate_size=int(gen["intermediate_size"]),
        image_seq_len=int(gen["image_seq_len"]),
        codebook_size=int(vq["codebook_size"]),
        num_classes=int(gen["condition_num_classes"]),
        sampler=sampler,
    )


def to_official(tokenizer: TokenizerConfig, generator: GeneratorConfig | None = None) -> dict:
    """The official nested config document for these configs (what config.json holds)."""
    vq: dict[str, Any] = {
        "token_size": tokenizer.token_size,
        "vit_enc_model_size": tokenizer.enc_size,
        "vit_dec_model_size": tokenizer.dec_size,
        "vit_enc_patch_size": tokenizer.enc_patch_size,
        "vit_dec_patch_size": tokenizer.dec_patch_size,
        "num_latent_tokens": tokenizer.num_latent_tokens,
        "finetune_decoder": tokenizer.two_stage,
        "is_legacy": tokenizer.is_legacy,
    }
    if tokenizer.quantize_mode == "vq":
        vq.update(codebook_size=tokenizer.codebook_size, use_l2_norm=tokenizer.use_l2_norm,
                  commitment_cost=tokenizer.commitment_cost)
    else:
        vq["quantize_mode"] = "vae"
    if tokenizer.pixel_hidden_channels != 128:
        vq["pixel_hidden_channels"] = tokenizer.pixel_hidden_channels
    if tokenizer.proxy_codes_per_patch != 1:
        vq["proxy_codes_per_patch"] = tokenizer.proxy_codes_per_patch
    doc: dict[str, Any] = {"model": {"vq_model": vq},
                           "dataset": {"preprocessing": {"crop_size": tokenizer.image_size}}}
    if generator is not None:
        sampler = generator.sampler
        doc["model"]["generator"] = {
            "model_type": generator.model_type,
            "hidden_size": generator.hidden_size,
            "num_hidden_layers": generator.num_layers,
            "num_attention_heads": generator.num_heads,
            "intermediate_size": generator.intermediate_size,
            "dropout": 0.1,
            "attn_drop": 0.1,
            "num_steps": sampler.num_steps,
            "class_label_dropout": 0.1,
            "image_seq_len": "${model.vq_model.num_latent_tokens}",
            "condition_num_classes": generator.num_classes,
            "randomize_temperature": sampler.randomize_temperature,
            "guidance_scale": sampler.guidance_scale,
            "guidance_decay": sampler.guidance_decay,
        }
        if generator.image_seq_len != tokenizer.num_latent_tokens:
            doc["model"]["generator"]["image_seq_len"] = generator.image_seq_len
        if generator.codebook_size != tokenizer.codebook_size:
            raise ValueError(f"generator codebook {generator.codebook_size} != tokenizer codebook "
                             f"{tokenizer.codebook_size}")
    return doc


# ---------------------------------------------------------------------------------------------
# Named variants
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Variant:
    """A named model: tokenizer, optional generator + its sampling defaults, and where weights live."""

    name: str
    tokenizer: TokenizerConfig
    generator: GeneratorConfig | None = None   # its `sampler` holds the variant's sampling defaults
    tokenizer_repo: str | None = None
    generator_repo: str | None = None
    manifest: str | None = None              # stem in titok/manifests/, e.g. "titok_l32"
    architecture_only: bool = False          # no released weights: for speed measurement only
    description: str = ""

    @property
    def sampler(self) -> SamplerConfig | None:
        return None if self.generator is None else self.generator.sampler


def _maskgit_vit(seq_len: int, sampler: SamplerConfig, codebook: int = 4096) -> GeneratorConfig:
    return GeneratorConfig("ViT", 768, 24, 16, 3072, image_seq_len=seq_len, codebook_size=codebook, sampler=sampler)


def _register() -> dict[str, Variant]:
    hf = "yucornetto/"
    tok = TokenizerConfig
    v = [
        Variant("titok-l-32", tok(enc_size="large", dec_size="large", num_latent_tokens=32),
                _maskgit_vit(32, SamplerConfig(8, 4.5, "linear", randomize_temperature=9.5)),
                hf + "tokenizer_titok_l32_imagenet", hf + "generator_titok_l32_imagenet", "titok_l32",
                description="ViT-L, 32 tokens, 4096 codes, two-stage; MaskGIT-ViT generator"),
        Variant("titok-b-64", tok(enc_size="base", dec_size="base", num_latent_tokens=64),
                _maskgit_vit(64, SamplerConfig(8, 3.0, "linear", randomize_temperature=11.0)),
                hf + "tokenizer_titok_b64_imagenet", hf + "generator_titok_b64_imagenet", "titok_b64",
                description="ViT-B, 64 tokens, 4096 codes, two-stage; MaskGIT-ViT generator"),
        Variant("titok-s-128", tok(enc_size="small", dec_size="small", num_latent_tokens=128),
                GeneratorConfig("UViT", 1024, 20, 16, 4096, image_seq_len=128,
                                sampler=SamplerConfig(64, 6.9, "power-cosine", randomize_temperature=2.8)),
                hf + "tokenizer_titok_s128_imagenet", hf + "generator_titok_s128_imagenet", "titok_s128",
                description="ViT-S, 128 tokens, 4096 codes, two-stage; U-ViT generator"),
    ]
    for k, enc in ((64, "base"), (128, "base"), (256, "small")):
        name = f"titok-{enc[0]}l-{k}-vq8k"
        v.append(Variant(name, tok(enc_size=enc, dec_size="large", num_latent_tokens=k, token_size=64,
                                   codebook_size=8192, use_l2_norm=False, two_stage=False, is_legacy=False),
                         tokenizer_repo=hf + f"tokenizer_titok_{enc[0]}l{k}_vq8k_imagenet",
                         manifest=f"titok_{enc[0]}l{k}_vq8k",
                         description=f"ViT-{enc[0].upper()} enc / ViT-L dec, {k} tokens, 8192x64 codes, "
                                     "single-stage"))
    for k, enc in ((32, "large"), (64, "base"), (128, "base")):
        name = f"titok-{enc[0]}l-{k}-vae"
        v.append(Variant(name, tok(enc_size=enc, dec_size="large", num_latent_tokens=k, token_size=16,
                                   codebook_size=0, use_l2_norm=False, quantize_mode="vae", two_stage=False,
                                   is_legacy=False),
                         tokenizer_repo=hf + f"tokenizer_titok_{enc[0]}l{k}_vae_c16_imagenet",
                         manifest=f"titok_{enc[0]}l{k}_vae_c16",
                         description=f"ViT-{enc[0].upper()} enc / ViT-L dec, {k} continuous 16-channel tokens"))
    # The paper's 512x512 models (Table 2). No weights were released: architecture only.
    # Patch 32 gives a 16x16 patch grid, but the MaskGIT-VQGAN decoder needs a 32x32 proxy-code grid
    # at 512px (its 16x upsampling). The decoder head therefore predicts 2x2 proxy codes per patch:
    # its last 1x1 conv emits 4 * 1024 logits per patch, pixel-shuffled to the 32x32 grid.
    # Sampling hyper-parameters were not published for these: L-32's are used (speed only).
    for name, size, k, steps in (("titok-l-64-512", "large", 64, 8), ("titok-b-128-512", "base", 128, 64)):
        v.append(Variant(name, tok(image_size=512, enc_size=size, dec_size=size, enc_patch_size=32,
                                   dec_patch_size=32, num_latent_tokens=k, proxy_codes_per_patch=4),
                         _maskgit_vit(k, SamplerConfig(steps, 4.5, "linear", randomize_temperature=9.5)),
                         architecture_only=True,
                         description=f"512px, ViT-{size[0].upper()} patch 32, {k} tokens; architecture only "
                                     f"(no released weights), MaskGIT-ViT {steps} steps"))
    return {x.name: x for x in v}


VARIANTS: dict[str, Variant] = _register()

# Small configurations for tests: the shapes of the golden models in tests/data.
TINY_TOKENIZER = TokenizerConfig(image_size=64, enc_size="tiny", dec_size="tiny", num_latent_tokens=8,
                                 token_size=12, codebook_size=64, pixel_hidden_channels=32)
TINY_GENERATOR = GeneratorConfig("ViT", 64, 2, 4, 128, image_seq_len=8, codebook_size=64, num_classes=10)


def get_variant(name: str) -> Variant:
    """Look up a variant by name, with a helpful error listing the known names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(VARIANTS)}") from None
