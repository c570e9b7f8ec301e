"""Errors that name a problem with the user's input (the CLI prints them as one line, exit status 2), and the
project's one rule for what counts as running out of memory (the CLI and the benchmark harness share it)."""


class TiTokInputError(ValueError):
    """Bad user input: an image, class id, token, option or model pairing that cannot be used."""


class CheckpointError(TiTokInputError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupt, unsafe, or of another model."""


class RandomWeightsWarning(UserWarning):
    """A model was built with random weights: its outputs are meaningless (fine for speed measurements)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Out of memory: a MemoryError (host), an exception whose class is called OutOfMemoryError (torch's CUDA
    and generic ones), or a RuntimeError whose message says "out of memory" (what older torch versions and
    some backends raise). Nothing else: a ValueError mentioning memory is a bug, not an OOM."""
    if isinstance(exc, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
