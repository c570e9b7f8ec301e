"""titok-kernels: a faithful PyTorch TiTok (tokenizer, MaskGIT-VQGAN decoder, MaskGIT generators, sampler)."""
from titok.configs import (VARIANTS, GeneratorConfig, SamplerConfig, TokenizerConfig, Variant,
                           get_variant)
from titok.errors import CheckpointError, RandomWeightsWarning, TiTokInputError
from titok.generator import MaskGITViT, UViT
from titok.loading import load_generator, load_tokenizer, save_pretrained
from titok.sampler import generate, sampling_schedule
from titok.tokenizer import TiTokTokenizer

__all__ = [
    "VARIANTS", "GeneratorConfig", "SamplerConfig", "TokenizerConfig", "Variant", "get_variant",
    "CheckpointError", "RandomWeightsWarning", "TiTokInputError", "MaskGITViT", "UViT",
    "load_generator", "load_tokenizer", "save_pretrained", "generate", "sampling_schedule", "TiTokTokenizer",
]
__version__ = "0.1.0"
