"""`titok generate`: one grid of class-conditional samples."""
from __future__ import annotations

from titok.cli import options
from titok.errors import TiTokInputError


def cmd_generate(args) -> int:
    import numpy as np
    import torch

    from titok.images import MAX_IMAGE_PIXELS, OutputFiles, grid_layout, image_format, place_in_grid, to_uint8
    from titok.checks import check_class_ids

    device = options.device(args.device)
    outputs = OutputFiles(overwrite=args.overwrite)
    out = outputs.check_file(args.out)
    fmt, _, max_side = image_format(out)
    tok, gen, pipe = options.load_generation(args, device)
    sampler = pipe.sampler
    classes = torch.tensor(args.classes, dtype=torch.long)
    check_class_ids(classes, gen.cfg.num_classes)
    n, size = len(args.classes), tok.image_size
    rows, cols = grid_layout(n, args.columns)
    height, width = rows * size, cols * size
    if height * width > MAX_IMAGE_PIXELS:
        raise TiTokInputError(f"a grid of {n} images of {size}x{size} would be {width}x{height} pixels, more than "
                              f"image readers open ({MAX_IMAGE_PIXELS:,}); generate at most "
                              f"{MAX_IMAGE_PIXELS // (size * size)} images per run")
    if max(height, width) > max_side:
        raise TiTokInputError(f"a {width}x{height} grid is larger than {fmt} allows ({max_side} pixels a side); "
                              "use .png, or change --columns")
    grid = np.zeros((height, width, 3), dtype=np.uint8)
    torch.manual_seed(args.seed)  # then every batch draws on, as the official sampler in one process
    with outputs, options.progress() as progress, torch.no_grad():
        task = progress.add_task("generating", total=n)
        for batch in options.batches(list(range(n)), args.batch_size):
            images = pipe.generate(classes[batch])
            options.check_finite(images, "pixels", args)
            for i, image in zip(batch, to_uint8(images)):
                place_in_grid(grid, i, image, cols)
            progress.advance(task, len(batch))
        outputs.stage_image(out, grid)
        outputs.commit()
    options.console().print(f"{n} images (classes {args.classes}, seed {args.seed}, "
                     f"{sampler.num_steps} steps, guidance {sampler.guidance_scale} {sampler.guidance_decay}, "
                     f"temperature {sampler.randomize_temperature}) -> {args.out}", markup=False)
    return 0


def add_parser(sub, models: list) -> None:
    """`generate`: one grid of class-conditional samples."""
    p = sub.add_parser("generate", help="generate class-conditional images with the MaskGIT generator",
                       description="Sample tokens for each ImageNet class id with the MaskGIT sampler (with "
                                   "--mode reference: the official algorithm and random-number order), decode "
                                   "them, and write one grid image.", epilog=f"{options.EPILOG_OUTPUTS} {options.EXIT_STATUSES}")
    options.add_common_options(p, models, checkpoint_flag=False)
    p.add_argument("--tokenizer", metavar="SRC", help="tokenizer weights (folder, file or cached repo id)")
    p.add_argument("--generator", metavar="SRC", help="generator weights (folder, file or cached repo id)")
    p.add_argument("--classes", type=options.int_in(0, 2**63 - 1), nargs="+", required=True, metavar="ID",
                   help="ImageNet class ids 0..999")
    p.add_argument("--seed", type=options.int_in(0, 2**64 - 1), default=0,
                   help="torch.manual_seed before sampling, 0..2^64-1 (default: 0); batches draw on from it. "
                        "The fast mode is reproducible too, but draws differently")
    options.add_sampler_overrides(p)
    p.add_argument("--columns", type=options.int_in(1), metavar="N",
                   help="grid columns (default: up to 8; never more than the number of images)")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="output grid image; its extension names the format: .png, .jpg/.jpeg (quality 95), "
                        ".webp (lossless), .bmp, .tif/.tiff")
    p.set_defaults(func=cmd_generate)
