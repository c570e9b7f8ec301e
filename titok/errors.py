"""Errors that name a problem with the user's input (the CLI prints them as one line, exit status 2)."""


class TiTokInputError(ValueError):
    """Bad user input: an image, class id, token, option or model pairing that cannot be used."""


class CheckpointError(TiTokInputError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupt, unsafe, or of another model."""


class RandomWeightsWarning(UserWarning):
    """A model was built with random weights: its outputs are meaningless (fine for speed measurements)."""
