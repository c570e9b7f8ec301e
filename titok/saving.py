"""Writing a model in the official layout: `config.json` (the official nested config) + `model.safetensors`.

`save_pretrained(model, folder, tokenizer_cfg=..., generator_cfg=...)` writes both under temporary names and
renames them once both are written, with the permissions the umask gives a new file; the official code (and
`titok.loading`) reads the folder back. This module imports only the configs and the file helpers, so the
model classes' `save_pretrained` methods can import it without an import cycle through `titok.loading`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from titok.configs import GeneratorConfig, TokenizerConfig, to_official
from titok.outputs import create_temp


def save_pretrained(model, folder: str | os.PathLike, *, tokenizer_cfg: TokenizerConfig,
                    generator_cfg: GeneratorConfig | None = None) -> None:
    """Write `config.json` (official nested layout) + `model.safetensors`, as the official release does: both
    under temporary names, renamed once both are written, with the permissions the umask gives a new file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = to_official(tokenizer_cfg, generator_cfg)
    tmp_cfg, tmp_w = create_temp(folder, "config.json"), create_temp(folder, "model.safetensors")
    try:
        mode = os.stat(tmp_w).st_mode & 0o7777   # 0666 minus the umask
        tmp_cfg.write_text(json.dumps(doc, indent=4))
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp_w))
        os.chmod(tmp_w, mode)                     # safetensors writes its file with mode 0600
        os.replace(tmp_cfg, folder / "config.json")
        os.replace(tmp_w, folder / "model.safetensors")
    except BaseException:
        for tmp in (tmp_cfg, tmp_w):
            tmp.unlink(missing_ok=True)
        raise
