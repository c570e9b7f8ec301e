"""`titok decode`: token ids (.npy, as `titok tokenize` or `titok sample` write them) back to images."""
from __future__ import annotations

import json
from pathlib import Path

from titok import evalset
from titok.cli import options
from titok.errors import TiTokInputError


def add_parser(sub, models: list[str]) -> None:
    """Register `titok decode` on the `titok` command's subparsers."""
    p = sub.add_parser(
        "decode", help="decode token ids (.npy, from tokenize or sample) to images",
        description="Decode an (N, K) array of token ids (as `titok tokenize` or `titok sample` write them) to "
                    "DIR/000000.png ... (000000_<name>.png when tokenize's file list, NAME.files.json for NAME.npy, "
                    "lies beside the array). Every batch is padded to --batch-size rows, so an image does not depend on N: with "
                    "sample's --decode-batch-size, mode, dtype and device type, decoding OUT/tokens.npy gives "
                    "the images of OUT/samples.npz exactly.",
        epilog="Outputs: checked before any work; an existing file is replaced only with --overwrite; written when "
               "the whole run succeeded. Exit status: 0 done, 2 error (one line on stderr), 130 interrupted.")
    p.add_argument("tokens", metavar="TOKENS.npy", help="token array (.npy)")
    options.add_set_model_options(p, models, "checkpoint")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--batch-size", type=options.int_in(1), default=evalset.DEFAULT_DECODE_BATCH, metavar="N",
                   help=f"rows per decode call, the last one padded (default: {evalset.DEFAULT_DECODE_BATCH})")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.set_defaults(func=run_decode)


def run_decode(args) -> int:
    """The `titok decode` command: token ids (.npy, as `titok tokenize` or `titok sample` write them) -> PNGs."""
    import numpy as np
    import torch

    from titok.cpu_threads import ItemRunner
    from titok.evalset import decode_fixed
    from titok.images import OutputFiles

    path = Path(args.tokens)
    if not path.is_file():
        raise TiTokInputError(f"tokens file not found: {path}")
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TiTokInputError(f"{path} is not a NumPy .npy array ({' '.join(str(exc).split())[:100]})") from None
    if tokens.ndim < 2 or tokens.shape[0] == 0:
        raise TiTokInputError(f"{path}: expected tokens (N, K) (or (N, C, 1, K) VAE tokens), got shape "
                              f"{tokens.shape}")
    names = _decode_names(path, tokens.shape[0])
    outputs = OutputFiles(overwrite=args.overwrite, inputs=[path])
    out = outputs.check_folder(args.out)
    targets = [out / n for n in names]
    for t in targets:
        outputs.check_file(t, flag="output")
    device = options.device(args.device)
    with outputs, options.progress() as progress, torch.no_grad():
        tok = options.load_tokenizer(args, device)
        pipe = options.pipeline(args, tok)
        task = progress.add_task("decoding", total=len(targets))
        with ItemRunner(device) as runner:
            group = args.batch_size * (runner.workers or 1)  # one batch per worker at a time (CPU)
            for c in range(0, len(targets), group):
                chunk = np.asarray(tokens[c:c + group])
                t = torch.from_numpy(chunk.astype(np.int64) if chunk.dtype.kind in "iu" else chunk.astype(np.float32))
                images = decode_fixed(pipe, pipe.decoder.check_tokens(t.to(device)), args.batch_size,
                                      check=lambda x: options.check_finite(x, "pixels", args), runner=runner)
                for target, image in zip(targets[c:c + group], images):
                    outputs.stage_png(target, image)
                progress.advance(task, chunk.shape[0])
        outputs.commit()
    options.console().print(f"{len(targets)} token sequences ({path}) -> {len(targets)} PNGs in {out} ({pipe.mode} "
                     f"{str(pipe.dtype).replace('torch.', '')}, batches of {args.batch_size})", markup=False)
    return 0


def _decode_names(path: Path, n: int) -> list[str]:
    """000000.png ...; with `titok tokenize`'s NAME.files.json beside NAME.npy: 000000_<image name>.png."""
    width = max(6, len(str(n - 1)))
    stems = None
    listing = path.with_suffix(".files.json")
    if listing.is_file():
        try:
            files = json.loads(listing.read_text()).get("files")
            if isinstance(files, list) and len(files) == n:
                stems = [Path(str(f)).stem for f in files]
        except (OSError, ValueError, AttributeError):
            stems = None
    return [f"{i:0{width}d}_{stems[i]}.png" if stems else f"{i:0{width}d}.png" for i in range(n)]
