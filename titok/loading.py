"""Loading and saving checkpoints: offline, safe, and strict about what a file contains.

Sources `load_tokenizer` / `load_generator` accept:
  (a) a folder in the official Hugging Face layout: `config.json` (the official nested
      config, `${...}` interpolations resolved here) + `model.safetensors` (or a `.bin`);
  (b) a `.safetensors` or `.bin` file, with a variant name (or recognised by its keys);
  (c) a Hugging Face repo id already in the local cache (needs `huggingface_hub`; no network).
`.bin` files are read with `torch.load(weights_only=True)` only: a pickle never runs code.
Missing, unexpected or mis-shaped keys raise `CheckpointError` listing the first few and
naming the released variant whose manifest the file does match, if any. Random weights
only when asked (`random_weights=True`), with a `RandomWeightsWarning`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from titok.configs import (GeneratorConfig, TokenizerConfig, VARIANTS,
                           generator_config_from_official, get_variant,
                           tokenizer_config_from_official)
from titok.checks import check_compatible  # noqa: F401 - re-exported: titok.loading.check_compatible
from titok.errors import CheckpointError, RandomWeightsWarning
from titok.saving import save_pretrained  # noqa: F401 - re-exported: titok.loading.save_pretrained
from titok.generator import build_generator
from titok.tokenizer import TiTokTokenizer

MANIFEST_DIR = Path(__file__).parent / "manifests"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


# ---- manifests ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def manifest(stem: str, part: str) -> dict[str, tuple[int, ...]]:
    """The released state dict of `<stem>.<part>.json` (part: "tokenizer" | "generator"): key -> shape, in order."""
    with open(MANIFEST_DIR / f"{stem}.{part}.json") as f:
        return {k: tuple(v) for k, v in json.load(f).items()}


def shape_signature(state_dict: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def matching_variant(signature: dict[str, tuple[int, ...]], part: str) -> str | None:
    """Name of the released variant whose manifest equals `signature` (keys and shapes), if any."""
    for v in VARIANTS.values():
        if v.manifest is None or not (MANIFEST_DIR / f"{v.manifest}.{part}.json").exists():
            continue
        if manifest(v.manifest, part) == signature:
            return v.name
    return None


# ---- building ----------------------------------------------------------------------------------

def build_tokenizer(cfg: TokenizerConfig, device: torch.device | str = "cpu") -> TiTokTokenizer:
    with torch.device(device):
        return TiTokTokenizer(cfg)


def build_generator_model(cfg: GeneratorConfig, device: torch.device | str = "cpu") -> nn.Module:
    with torch.device(device):
        return build_generator(cfg)


@torch.no_grad()
def init_random_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic random init in the style of the official one (trunc-normal 0.02, LayerNorm 1/0)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(owner, (nn.LayerNorm, nn.GroupNorm)):
            values = torch.ones(p.shape) if leaf == "weight" else torch.zeros(p.shape)
        elif leaf == "bias" or leaf == "in_proj_bias":
            values = torch.zeros(p.shape)
        elif p.dim() >= 2 and not isinstance(owner, nn.Embedding) and leaf in ("weight", "in_proj_weight"):
            values = torch.randn(p.shape, generator=gen).clamp_(-2, 2) * 0.02
        else:  # embeddings, class/mask/latent tokens, positional tables
            values = torch.randn(p.shape, generator=gen) * (p.shape[-1] ** -0.5 if p.dim() >= 1 else 1.0)
        p.copy_(values.to(p.dtype))
    return model


# ---- reading files -----------------------------------------------------------------------------

def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` or `.bin` file; `.bin` only through the weights-only unpickler."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                                  f"{str(exc).splitlines()[0]}") from None
    if path.suffix in (".bin", ".pt", ".pth"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{path} was refused: its pickle holds objects other than tensors and plain "
                                  f"containers, and loading it could run code ({str(exc).splitlines()[0][:160]})"
                                  ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                                  f"{str(exc).splitlines()[0][:160]}") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in obj.items()):
            raise CheckpointError(f"{path} does not hold a state dict of tensors")
        return obj
    raise CheckpointError(f"unsupported checkpoint file type {path.suffix!r} ({path}); use .safetensors or .bin")


def _weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    bins = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if len(bins) == 1:
        return bins[0]
    raise CheckpointError(f"{folder} holds no single weights file (looked for {', '.join(WEIGHT_FILES)})")


def resolve_source(src: str | os.PathLike) -> Path:
    """A folder or file path as given, or a Hugging Face repo id resolved from the local cache only."""
    path = Path(src).expanduser()
    if path.exists():
        return path
    text = str(src)
    if text.count("/") == 1 and not text.startswith((".", "/")) and not path.suffix:
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise CheckpointError(f"{text!r} is not a local path, and huggingface_hub is not installed to "
                                  "look it up as a repo id in the local cache") from None
        try:
            return Path(snapshot_download(repo_id=text, local_files_only=True))
        except Exception as exc:  # LocalEntryNotFoundError and friends
            raise CheckpointError(f"Hugging Face repo {text!r} is not in the local cache (no network is used; "
                                  f"{type(exc).__name__}): {download_hint(text)}") from None
    raise CheckpointError(f"checkpoint not found: {text}")


def source_files(src: str | os.PathLike) -> list[Path]:
    """The files `load_tokenizer` / `load_generator` read for `src`: a folder's config.json (when it has one) and
    its weights file, or the file itself."""
    path = resolve_source(src)
    if path.is_dir():
        return [p for p in (path / "config.json",) if p.is_file()] + [_weights_in(path)]
    return [path]


def download_hint(repo: str) -> str:
    """How to put a Hugging Face repo in the local cache, where `resolve_source` finds it."""
    return (f"download it first where a network is available: `hf download {repo}` (or, in Python, "
            f"huggingface_hub.snapshot_download({repo!r}))")


def _read_config(folder: Path) -> dict | None:
    """The folder's config.json as a dict (None when there is none); CheckpointError when it is not a JSON object."""
    cfg = folder / "config.json"
    if not cfg.exists():
        return None
    try:
        doc = json.loads(cfg.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{cfg} is not a text file (binary data; a config.json is UTF-8 JSON)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{cfg} is nested too deeply to be a config") from None
    except OSError as exc:
        raise CheckpointError(f"{cfg} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{cfg} holds a JSON {type(doc).__name__}, not an object: not a TiTok config")
    return doc


def _config_from(doc: dict, folder: Path, part: str):
    """The TokenizerConfig / GeneratorConfig of a parsed config.json; CheckpointError naming what is wrong."""
    where = folder / "config.json"
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    if "vq_model" not in model:
        raise CheckpointError(f"{where} is not a TiTok config (it has no model.vq_model section)")
    if part == "generator" and "generator" not in model:
        raise CheckpointError(f"{where} describes a tokenizer, not a generator (it has no model.generator "
                              "section): give a generator checkpoint")
    parse = generator_config_from_official if part == "generator" else tokenizer_config_from_official
    try:
        return parse(doc)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0] if str(exc) else \
            type(exc).__name__
        raise CheckpointError(f"{where} is not a valid TiTok {part} config: {what}") from None


# ---- strict state-dict loading -----------------------------------------------------------------

def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, part: str, label: str) -> None:
    """Copy `state_dict` into `model`, refusing missing, unexpected or mis-shaped keys, and tensors that are
    not floating point where the model's are, or that hold NaN or infinite values (naming the tensor).

    A model on the meta device is checked first and materialised on the CPU only when the file fits it,
    so a config.json that describes a huge model allocates nothing."""
    expected_tensors = model.state_dict()
    expected = shape_signature(expected_tensors)
    got = shape_signature(state_dict)
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    misshaped = [f"{k} {list(got[k])} (expected {list(expected[k])})"
                 for k in expected if k in got and got[k] != expected[k]]
    if missing or unexpected or misshaped:
        lines = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                lines.append(f"{len(items)} {title} keys: {', '.join(items[:5])}{more}")
        match = matching_variant(got, part)
        hint = f"; this file matches the released variant {match!r}" if match else ""
        if not match and got and not any(k in expected for k in got):
            hint = f"; none of its tensors belongs to a TiTok {part} (another model's checkpoint?)"
        raise CheckpointError(f"{label} does not fit the model: " + "; ".join(lines) + hint)
    check_weights(state_dict, expected_tensors, label=label)
    if any(t.is_meta for t in expected_tensors.values()):
        model.to_empty(device="cpu")
    model.load_state_dict(state_dict, strict=True)


def check_weights(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, label: str) -> None:
    """Refuse a tensor whose dtype kind differs from the model's (integer or bool weights for float
    parameters), and floating-point tensors holding NaN or infinity: CheckpointError naming the tensor."""
    for name, want in expected.items():
        t = state_dict[name]
        if want.dtype.is_floating_point and not t.dtype.is_floating_point:
            raise CheckpointError(f"{label}: tensor {name!r} has dtype {str(t.dtype).replace('torch.', '')}; "
                                  "the model's weights are floating point (a corrupt or converted file?)")
        # A finite sum means every value is finite (one NaN or inf makes it NaN or inf): one fast reduction,
        # and the exact element check only where the sum is not finite (which a large finite tensor can be).
        if t.dtype.is_floating_point and t.numel() and not math.isfinite(float(t.sum())) \
                and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{label}: tensor {name!r} holds {bad} NaN or infinite value(s) of {t.numel()}: "
                                  "the checkpoint is corrupt (or diverged in training)")


def _finish(model: nn.Module, device, dtype) -> nn.Module:
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    model.eval().requires_grad_(False)
    return model


def _random_warning(what: str) -> None:
    warnings.warn(f"{what} has RANDOM weights: outputs are meaningless (speed does not depend on weights)",
                  RandomWeightsWarning, stacklevel=3)


# ---- public API ----------------------------------------------------------------------------------

def load_tokenizer(src: str | os.PathLike | None = None, variant: str | None = None, *,
                   random_weights: bool = False, device: torch.device | str = "cpu",
                   dtype: torch.dtype | None = None, seed: int = 0) -> TiTokTokenizer:
    """Load a TiTok tokenizer from a folder, a weights file or a cached HF repo id (see module doc)."""
    if src is None:
        if variant is None:
            raise CheckpointError("give a checkpoint source, a variant name, or both")
        if not random_weights:
            raise CheckpointError(f"no checkpoint given for {variant!r}; pass one, or ask for random weights "
                                  "explicitly (random_weights=True / --random-weights)")
        model = init_random_weights(build_tokenizer(get_variant(variant).tokenizer), seed)
        _random_warning(f"tokenizer {variant!r}")
        return _finish(model, device, dtype)
    path = resolve_source(src)
    if path.is_dir():
        doc = _read_config(path)
        weights = _weights_in(path)
        if doc is not None:
            cfg = _config_from(doc, path, "tokenizer")
        elif variant is not None:
            cfg = get_variant(variant).tokenizer
        else:
            raise CheckpointError(f"{path} has no config.json; name the variant (--model)")
    else:
        weights = path
        cfg = None if variant is None else get_variant(variant).tokenizer
    state = read_state_dict(weights)
    if cfg is None:
        match = matching_variant(shape_signature(state), "tokenizer")
        if match is None:
            raise CheckpointError(f"{weights} matches no released tokenizer; name the variant (--model)")
        cfg = get_variant(match).tokenizer
    if variant is not None and cfg != get_variant(variant).tokenizer and path.is_dir():
        raise CheckpointError(f"{path}/config.json describes another model than {variant!r}")
    model = build_tokenizer(cfg, "meta")
    load_strict(model, state, part="tokenizer", label=str(weights))
    return _finish(model, device, dtype)


def load_generator(src: str | os.PathLike | None = None, variant: str | None = None, *,
                   random_weights: bool = False, device: torch.device | str = "cpu",
                   dtype: torch.dtype | None = None, seed: int = 0) -> nn.Module:
    """Load a MaskGIT generator; its sampling defaults travel in `model.cfg.sampler` (from the checkpoint's
    config.json, or the variant's when a variant is named)."""
    if src is None:
        if variant is None:
            raise CheckpointError("give a checkpoint source, a variant name, or both")
        v = get_variant(variant)
        if v.generator is None:
            raise CheckpointError(f"{variant!r} has no generator")
        if not random_weights:
            raise CheckpointError(f"no checkpoint given for {variant!r}'s generator; pass one, or ask for random "
                                  "weights explicitly (random_weights=True / --random-weights)")
        model = init_random_weights(build_generator_model(v.generator), seed)
        _random_warning(f"generator {variant!r}")
        return _finish(model, device, dtype)
    path = resolve_source(src)
    cfg = None
    if path.is_dir():
        weights = _weights_in(path)
        doc = _read_config(path)
        if doc is not None:
            cfg = _config_from(doc, path, "generator")
    else:
        weights = path
    if cfg is None and variant is not None:
        cfg = get_variant(variant).generator
        if cfg is None:
            raise CheckpointError(f"{variant!r} has no generator")
    state = read_state_dict(weights)
    if cfg is None:
        match = matching_variant(shape_signature(state), "generator")
        if match is None:
            raise CheckpointError(f"{weights} matches no released generator; name the variant (--model)")
        cfg = get_variant(match).generator
    if variant is not None and get_variant(variant).generator is not None and path.is_dir():
        # The official config.json has no softmax-annealing flag: take the variant's defaults wholesale.
        cfg = dataclasses.replace(cfg, sampler=get_variant(variant).generator.sampler)
    model = build_generator_model(cfg, "meta")
    load_strict(model, state, part="generator", label=str(weights))
    return _finish(model, device, dtype)
