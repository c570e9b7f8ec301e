"""Test set-up: Triton runs under its CPU interpreter when no GPU is present, and every test is seeded."""
import os

import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit kernel is defined (at import of kernels.*).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (a skip is not a pass)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# ---- the official reference data (shared/reference beside the repository) -----------------------
import json  # noqa: E402
from pathlib import Path  # noqa: E402

REFERENCE_DIR = Path(os.environ.get("TITOK_REFERENCE_DIR",
                                    Path(__file__).resolve().parents[2] / "shared" / "reference"))
GOLDEN_DIR = REFERENCE_DIR / "goldens"


def golden_path(name: str) -> Path:
    path = GOLDEN_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"reference data missing: {path} (set TITOK_REFERENCE_DIR to shared/reference)")
    return path


def golden_tokenizer(name: str):
    """(tokenizer loaded from the golden weights, its io tensors)."""
    from safetensors.torch import load_file

    from titok.configs import tokenizer_config_from_official
    from titok.loading import build_tokenizer, load_strict

    cfg = tokenizer_config_from_official(json.loads(golden_path(f"{name}.config.json").read_text()))
    model = build_tokenizer(cfg, "meta").to_empty(device="cpu")
    load_strict(model, load_file(golden_path(f"{name}.tokenizer.safetensors")), part="tokenizer", label=name)
    return model.eval(), load_file(golden_path(f"{name}.tokenizer.io.safetensors"))


def golden_generator(name: str):
    """(generator, sampler config, io tensors) from the golden files."""
    from safetensors.torch import load_file

    from titok.configs import generator_config_from_official
    from titok.loading import build_generator_model, load_strict

    gcfg, scfg = generator_config_from_official(json.loads(golden_path(f"{name}.config.json").read_text()))
    model = build_generator_model(gcfg, "meta").to_empty(device="cpu")
    load_strict(model, load_file(golden_path(f"{name}.generator.safetensors")), part="generator", label=name)
    return model.eval(), scfg, load_file(golden_path(f"{name}.generator.io.safetensors"))
