"""What a `titok sample` run is asked for, as a value (`SampleSettings`): the command line builds one from its
flags (`titok.cli.sample`), Python code builds one directly:

    from titok.evalset import SampleSettings, run_sample
    run_sample(SampleSettings(out="l32_50k", tokenizer="yucornetto/tokenizer_titok_l32_imagenet",
                              generator="yucornetto/generator_titok_l32_imagenet"))

The fields are the command's flags (`--num-per-class` is `num_per_class`, ...), with its defaults; a bad value
raises `TiTokInputError` naming the field, as the command line's parser would refuse it.
"""
from __future__ import annotations

import dataclasses

from titok.configs import MODES
from titok.errors import TiTokInputError
from titok.evalset.plan import DEFAULT_DECODE_BATCH, DEFAULT_SHARD
from titok.noise import MAX_STEPS

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """The settings of one `titok sample` run (see the module docstring); the manifest records what matters."""

    out: str
    tokenizer: str | None = None
    generator: str | None = None
    model: str | None = None
    random_weights: bool = False
    device: str = "auto"
    mode: str = "fast"
    dtype: str | None = None
    classes: tuple = ("all",)
    num_per_class: int = 50
    seed: int = 0
    batch_size: int | None = None
    decode_batch_size: int = DEFAULT_DECODE_BATCH
    shard_size: int = DEFAULT_SHARD
    guidance_scale: float | None = None
    temperature: float | None = None
    steps: int | None = None
    no_png: bool = False
    keep_shards: bool = False

    def __post_init__(self):
        object.__setattr__(self, "out", str(self.out))
        classes = [self.classes] if isinstance(self.classes, (str, int)) else list(self.classes)
        object.__setattr__(self, "classes", tuple(str(c) for c in classes))
        if self.mode not in MODES:
            raise TiTokInputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise TiTokInputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name, lo in (("num_per_class", 1), ("decode_batch_size", 1), ("shard_size", 1), ("batch_size", 1),
                         ("steps", 1), ("seed", 0)):
            value = getattr(self, name)
            if value is None and name in ("batch_size", "steps"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise TiTokInputError(f"{name} must be an integer >= {lo}, got {value!r}")
        if self.seed >= 2**64:
            raise TiTokInputError(f"seed must be below 2^64, got {self.seed}")
        if self.steps is not None and self.steps > MAX_STEPS:
            raise TiTokInputError(f"steps: at most {MAX_STEPS}, got {self.steps}")
        for name in ("guidance_scale", "temperature"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value >= 0 and value == value
                                          and value != float("inf")):
                raise TiTokInputError(f"{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_namespace(cls, ns) -> "SampleSettings":
        """From the command line's parsed flags (an argparse Namespace with the same names)."""
        return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
