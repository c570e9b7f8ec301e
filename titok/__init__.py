"""titok-kernels: a faithful PyTorch TiTok (tokenizer, MaskGIT-VQGAN decoder, MaskGIT generators, sampler).

The public names below are imported on first use (PEP 562 module `__getattr__`), so
that `import titok` and the `titok` command's argument parsing import neither torch
nor Triton.
"""
import importlib

_PUBLIC = {
    "titok.configs": ("VARIANTS", "GeneratorConfig", "SamplerConfig", "TokenizerConfig", "Variant", "get_variant"),
    "titok.errors": ("CheckpointError", "RandomWeightsWarning", "TiTokInputError"),
    "titok.generator": ("MaskGITViT", "UViT"),
    "titok.loading": ("load_generator", "load_tokenizer", "save_pretrained"),
    "titok.sampler": ("generate", "sampling_schedule"),
    "titok.tokenizer": ("TiTokTokenizer",),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = list(_MODULE_OF)
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'titok' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
