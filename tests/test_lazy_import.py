"""`import titok` and the `titok` command's help import neither torch nor Triton (the public names load lazily)."""
import subprocess
import sys

import pytest

import titok

HEAVY = ("torch", "triton", "numpy")


def _imported_modules(*args: str) -> set[str]:
    """Modules a fresh interpreter imports while running `python -X importtime ARGS` (which must exit 0)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("-c", "import titok; titok.__version__"), ("-m", "titok", "--help"),
                                  ("-m", "titok", "info", "--help"), ("-m", "titok", "generate", "--help")],
                         ids=["import", "help", "info-help", "generate-help"])
def test_no_torch_or_triton_before_a_command_runs(args):
    modules = _imported_modules(*args)
    assert "titok" in modules
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


def test_public_names_resolve_to_their_modules():
    import importlib

    for name in titok.__all__:
        obj = getattr(titok, name)
        module = importlib.import_module(titok._MODULE_OF[name])
        assert obj is getattr(module, name), name
    assert set(titok.__all__) <= set(dir(titok))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        titok.not_a_name  # noqa: B018
