"""`titok sample`: a class-conditional evaluation set (the logic: `titok.evalset`)."""
from __future__ import annotations

from titok import evalset
from titok.cli import options


def add_parser(sub, models: list[str]) -> None:
    """Register `titok sample` on the `titok` command's subparsers."""
    p = sub.add_parser(
        "sample", help="generate a class-conditional evaluation set (.npz for FID), resumable, multi-GPU",
        description="Generate len(classes) x N class-conditional samples into a folder: one PNG per sample, "
                    "then samples.npz (arr_0 uint8 N x H x W x 3, labels) as the ADM/guided-diffusion evaluation "
                    "suite reads it, tokens.npy, manifest.json and summary.json. Sample i has class "
                    "classes[i % len(classes)] and randomness that depends on (seed, i) only: the set is the same "
                    "with any number of processes and after a resume. Run it again with the same options to "
                    "resume after an interruption; other options are refused. Many GPUs or machines: "
                    "torchrun --nproc_per_node=8 -m titok sample ... (the output folder must be shared).",
        epilog="Exit status: 0 done, 2 error (one line on stderr), 130 interrupted (finished shards kept).")
    options.add_set_model_options(p, models, "generator")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing; resumed if it "
                                                               "holds a run with the same settings)")
    p.add_argument("--classes", nargs="+", default=["all"], metavar="IDS",
                   help="all (default), class ids and ranges: 0-99, '1 7 282', 0-9,20-29")
    p.add_argument("--num-per-class", type=options.int_in(1), default=50, metavar="N",
                   help="samples per class (default: 50; 1000 classes x 50 = the 50,000-sample FID set)")
    p.add_argument("--seed", type=options.int_in(0, 2**64 - 1), default=0,
                   help="seed of the sampling noise, 0..2^64-1 (default: 0); sample i's noise depends on "
                        "(seed, i) only")
    p.add_argument("--batch-size", type=options.int_in(1), metavar="N",
                   help="samples per generator batch per process (default: 64 on CUDA, 8 on CPU); may change "
                        "between runs")
    p.add_argument("--decode-batch-size", type=options.int_in(1), default=evalset.DEFAULT_DECODE_BATCH, metavar="N",
                   help=f"rows of every decode call, the last chunk padded (default: {evalset.DEFAULT_DECODE_BATCH}): "
                        "part of the settings")
    p.add_argument("--shard-size", type=options.int_in(1), default=evalset.DEFAULT_SHARD, metavar="N",
                   help=f"samples per shard file, the unit of resume and of work per process (default: "
                        f"{evalset.DEFAULT_SHARD})")
    options.add_sampler_overrides(p)
    p.add_argument("--no-png", action="store_true", help="write no per-sample PNGs (only the .npz)")
    p.add_argument("--keep-shards", action="store_true", help="keep shards/ after samples.npz is written")
    p.set_defaults(func=run)


def run(args) -> int:
    """The command: its flags as `titok.evalset.SampleSettings`, then `titok.evalset.run_sample`."""
    return evalset.run_sample(evalset.SampleSettings.from_namespace(args))
