"""No import cycle in `titok/`, counting function-local imports too, and the layers: bench -> titok -> kernels.

The graph is read from the source (every `import` / `from ... import` statement anywhere in a module, also
inside functions): an edge a -> b when module a imports module b, or a name defined in b (`from pkg import
sub` is an edge to the submodule `pkg.sub`, not to `pkg`).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"titok": ROOT / "titok", "titok_kernels": ROOT / "kernels", "titok_bench": ROOT / "bench"}


def _modules(package: str) -> dict[str, Path]:
    base = PACKAGES[package]
    out = {}
    for path in base.rglob("*.py"):
        rel = path.relative_to(base).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join([package, *parts])] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `module` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            subs = [f"{prefix}.{a.name}" for a in node.names]
            # `from pkg import sub` imports the submodule; the package itself only for a name defined in it
            names = subs + ([prefix] if any(n not in known for n in subs) else [])
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    mods = _modules(package)
    known = set().union(*(_modules(p).keys() for p in PACKAGES))
    return {m: _imports(m, p, known) for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_in_titok():
    graph = {m: {n for n in deps if n.startswith("titok.") or n == "titok"}
             for m, deps in _graph("titok").items() if m != "titok"}   # titok/__init__ only maps lazy names
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_layers_bench_titok_kernels():
    kernels_up = {(m, n) for m, deps in _graph("titok_kernels").items() for n in deps
                  if n.split(".")[0] in ("titok", "titok_bench")}
    titok_up = {(m, n) for m, deps in _graph("titok").items() for n in deps if n.split(".")[0] == "titok_bench"}
    assert not kernels_up and not titok_up, sorted(kernels_up | titok_up)


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
