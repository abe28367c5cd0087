"""The package's import picture: no cycles, and nothing below the application layer imports it.

Every `import` and `from ... import` of an unmix module is read with `ast` (function-local ones included, so a
cycle cannot hide inside a function)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unmix"
TOP = ("unmix.api", "unmix.cli", "unmix.web", "unmix.__main__")  # the application layer: API, CLI, web page


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the module pkg.mod; `from pkg import name` imports pkg itself
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [n for n in subs if n in modules] or [node.module]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, set(files)) - {m} for m, p in files.items()}


def _is_top(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TOP)


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for dep in sorted(graph[m]):
            if dep == "unmix" or m == "unmix":
                continue  # the package's lazy front door (PEP 562) imports nothing at import time
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_nothing_below_the_application_layer_imports_it():
    wrong = {m: sorted(d for d in deps if _is_top(d)) for m, deps in _graph().items() if not _is_top(m)}
    assert not {m: d for m, d in wrong.items() if d}, wrong


def test_the_walk_sees_real_imports():
    """Guards the two tests above against passing vacuously."""
    graph = _graph()
    assert "unmix.model" in graph["unmix.training.trainer"] and "unmix.training.trainer" in graph["unmix.api"]
    assert any(_is_top(d) for d in graph["unmix.cli.sample_cmd"])
