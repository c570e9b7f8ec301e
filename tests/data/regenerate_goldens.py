"""Regenerate the golden outputs in this folder with the official TiTok code.

    python tests/data/regenerate_goldens.py --official /path/to/1d-tokenizer --out tests/data

`--official` is a checkout of bytedance/1d-tokenizer (the goldens were made at
commit 942a96f); only its `modeling/` folder is imported, from that path, and the
checkout is never edited. Needs torch and safetensors (this project's
dependencies) plus what the official inference modules import: omegaconf,
einops, accelerate, transformers and huggingface_hub (all on PyPI; not
dependencies of this project). torchvision is not needed.

What it does, for each golden model `<name>` in `--data` (default: this folder):
reads `<name>.config.json` (the resolved official config), the stored weights
`<name>.{tokenizer,generator}.safetensors` and the stored inputs in
`<name>.*.io.safetensors`; builds the official module from the config, loads the
weights strictly, runs the official calls on the stored inputs, and writes
`<name>.*.io.safetensors` to `--out` (copying the config and weights there too
when `--out` is another folder). It prints, for every tensor, how the new value
compares with the stored one (`equal` or the largest absolute difference), and
exits with status 1 when any differs (the files are written all the same).
Weights and inputs are never redrawn: they are data, stored once.

The calls (fp32, CPU, eval mode, no grad):
- tokenizer: `encoder(image, latent_tokens)` -> `encoder_out`; `encode(image)` ->
  `z_quantized` and `indices` (its min_encoding_indices, B x 1 x K);
  `decoder(z_quantized)` -> `decoder_out`; `decode_tokens(indices)` -> `reconstruction`;
- generator: `forward(input_ids, condition, cond_drop_prob=0.0 / 1.0)` ->
  `logits_cond` / `logits_uncond`; for every stored key
  `generate_seed{S}_temp{T}_scale{G}`: `torch.manual_seed(S)`, then
  `generate(condition, guidance_scale=G, guidance_decay=<config's, or "constant"
  where G is 0>, randomize_temperature=T, softmax_temperature_annealing=False,
  num_sample_steps=8)`.
- generator training step (ViT only; see official_train_step.py): the official masking, forward
  (train mode, dropout 0, class drop 0.1), MLMLoss, backward, clipping and AdamW step ->
  `<name>.generator.train.safetensors` (its inputs are read back from the stored file when it exists).

Patches, made in memory only (the official files stay as they are):
- `modeling/modules/__init__.py` imports the training losses (torchvision): the
  package `modeling.modules` is registered without running that file;
- `modeling/modules/blocks.py` is loaded with a "tiny" entry (width 64, 2 layers,
  4 heads) added to the ViT size tables of its encoder and decoder;
- the two-stage tokenizer's MaskGIT-VQGAN pixel decoder is built with the
  config's `model.vq_model.pixel_hidden_channels` instead of the fixed 128.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import re
import shutil
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
TINY_VIT = {"width": 64, "num_layers": 2, "num_heads": 4}
SIZE_TABLE = re.compile(r"(self\.(width|num_layers|num_heads) = \{)")
GENERATE_KEY = re.compile(r"generate_seed(\d+)_temp([0-9.]+)_scale([0-9.]+)")


def import_official(root: Path) -> types.SimpleNamespace:
    """The official TiTok, ImageBert and UViTBert classes, imported from the checkout at `root`, patched."""
    blocks_path = root / "modeling" / "modules" / "blocks.py"
    if not blocks_path.is_file():
        raise SystemExit(f"{root} is not a checkout of bytedance/1d-tokenizer: {blocks_path} is missing")
    if "modeling" in sys.modules:
        raise SystemExit("a module named `modeling` is already imported; run this script in a fresh interpreter")
    sys.path.insert(0, str(root))
    modeling = importlib.import_module("modeling")
    if Path(modeling.__file__).resolve().parent != (root / "modeling").resolve():
        raise SystemExit(f"`modeling` was imported from {modeling.__file__}, not from {root}")

    # The package without its __init__ (which imports the training losses and torchvision).
    modules = types.ModuleType("modeling.modules")
    modules.__path__ = [str(blocks_path.parent)]
    modules.__package__ = "modeling.modules"
    sys.modules["modeling.modules"] = modules
    modeling.modules = modules

    # blocks.py with a "tiny" ViT size in each of its width / depth / heads tables.
    source = blocks_path.read_text()
    source, count = SIZE_TABLE.subn(lambda m: f'{m.group(1)}\n                "tiny": {TINY_VIT[m.group(2)]},',
                                    source)
    if count != 6:
        raise SystemExit(f"expected 6 ViT size tables (encoder and decoder: width, num_layers, num_heads) in "
                         f"{blocks_path}, found {count}: this script follows the official code at 942a96f")
    spec = importlib.util.spec_from_file_location("modeling.modules.blocks", blocks_path)
    blocks = importlib.util.module_from_spec(spec)
    sys.modules["modeling.modules.blocks"] = blocks
    exec(compile(source, str(blocks_path), "exec"), blocks.__dict__)
    modules.blocks = blocks

    titok = importlib.import_module("modeling.titok")
    maskgit = importlib.import_module("modeling.maskgit")
    return types.SimpleNamespace(titok=titok, TiTok=titok.TiTok, ImageBert=maskgit.ImageBert,
                                 UViTBert=maskgit.UViTBert)


@contextlib.contextmanager
def pixel_hidden_channels(official, hidden: int):
    """While building a TiTok, its MaskGIT-VQGAN pixel decoder has `hidden` channels (the official code fixes 128)."""
    from omegaconf import OmegaConf

    original = official.titok.Pixel_Decoder
    official.titok.Pixel_Decoder = lambda conf: original(OmegaConf.merge(conf, {"hidden_channels": hidden}))
    try:
        yield
    finally:
        official.titok.Pixel_Decoder = original


def _load(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    model.load_state_dict(load_file(path), strict=True)
    return model.eval().requires_grad_(False)


def tokenizer_io(official, config: dict, weights: Path, stored: dict) -> dict:
    from omegaconf import OmegaConf

    conf = OmegaConf.create(config)
    with pixel_hidden_channels(official, int(config["model"]["vq_model"].get("pixel_hidden_channels", 128))):
        model = _load(official.TiTok(conf), weights)
    image = stored["image"]
    with torch.no_grad():
        encoder_out = model.encoder(pixel_values=image, latent_tokens=model.latent_tokens)
        z_quantized, result = model.encode(image)
        indices = result["min_encoding_indices"]
        decoder_out = model.decoder(z_quantized)
        reconstruction = model.decode_tokens(indices)
    return {"image": image, "encoder_out": encoder_out, "z_quantized": z_quantized, "indices": indices,
            "decoder_out": decoder_out, "reconstruction": reconstruction}


def generator_io(official, config: dict, weights: Path, stored: dict) -> dict:
    from omegaconf import OmegaConf

    conf = OmegaConf.create(config)
    gen = config["model"]["generator"]
    model_cls = {"ViT": official.ImageBert, "UViT": official.UViTBert}[gen["model_type"]]
    model = _load(model_cls(conf), weights)
    condition, input_ids = stored["condition"], stored["input_ids"]
    out = {"condition": condition, "input_ids": input_ids}
    with torch.no_grad():
        out["logits_cond"] = model(input_ids, condition.clone(), cond_drop_prob=0.0)
        out["logits_uncond"] = model(input_ids, condition.clone(), cond_drop_prob=1.0)
    for key in sorted(k for k in stored if k.startswith("generate_")):
        match = GENERATE_KEY.fullmatch(key)
        if match is None:
            raise SystemExit(f"cannot read seed/temperature/scale from the stored key {key!r}")
        seed, temperature, scale = int(match[1]), float(match[2]), float(match[3])
        torch.manual_seed(seed)
        out[key] = model.generate(condition.clone(), guidance_scale=scale,
                                  guidance_decay=gen["guidance_decay"] if scale != 0 else "constant",
                                  randomize_temperature=temperature, softmax_temperature_annealing=False,
                                  num_sample_steps=8)
    return out


def compare(name: str, new: dict, stored: dict) -> bool:
    """Print how each new tensor compares with the stored one; True when all are bit-identical."""
    identical = sorted(new) == sorted(stored)
    if not identical:
        print(f"{name}: keys differ: new {sorted(new)}, stored {sorted(stored)}")
    for key in sorted(set(new) & set(stored)):
        a, b = new[key], stored[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            print(f"{name}: {key}: {tuple(a.shape)} {a.dtype} vs stored {tuple(b.shape)} {b.dtype}")
            identical = False
        elif torch.equal(a, b):
            print(f"{name}: {key}: equal")
        else:
            diff = (a.double() - b.double()).abs().max().item()
            print(f"{name}: {key}: max |new - stored| = {diff:.3g}")
            identical = False
    return identical


def _train_golden(official, args, name: str, config: dict, weights: Path) -> bool:
    from official_train_step import generator_train

    path = args.data / f"{name}.generator.train.safetensors"
    stored = load_file(path) if path.exists() else None
    new = generator_train(official, args.official.resolve(), config, weights, stored)
    if new is None:
        print(f"{name}: no training-step golden (the official training cannot build a U-ViT generator)")
        return True
    new = {k: v.contiguous() for k, v in new.items()}
    identical = compare(f"{name} (train)", new, stored) if stored is not None else True
    save_file(new, args.out / path.name)
    return identical


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of bytedance/1d-tokenizer")
    parser.add_argument("--data", type=Path, default=HERE,
                        help="folder with the stored configs, weights and inputs (default: this script's folder)")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the regenerated goldens to")
    args = parser.parse_args(argv)

    official = import_official(args.official.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    all_identical = True
    for config_path in sorted(args.data.glob("*.config.json")):
        name = config_path.name[:-len(".config.json")]
        config = json.loads(config_path.read_text())
        for part, run in (("tokenizer", tokenizer_io), ("generator", generator_io)):
            weights = args.data / f"{name}.{part}.safetensors"
            if not weights.exists():
                continue
            stored = load_file(args.data / f"{name}.{part}.io.safetensors")
            new = {k: v.contiguous() for k, v in run(official, config, weights, stored).items()}
            all_identical &= compare(name, new, stored)
            if args.out.resolve() != args.data.resolve():
                shutil.copyfile(config_path, args.out / config_path.name)
                shutil.copyfile(weights, args.out / weights.name)
            save_file(new, args.out / f"{name}.{part}.io.safetensors")
            if part == "generator":
                all_identical &= _train_golden(official, args, name, config, weights)
    if all_identical:
        print("all regenerated tensors are bit-identical to the stored ones")
        return 0
    print(f"some regenerated tensors differ from the stored ones (see above); written to {args.out} all the same")
    return 1


if __name__ == "__main__":
    sys.exit(main())
