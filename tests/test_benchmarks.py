"""Every benchmark still runs on today's code: it imports (an import error fails here, not months later), it
calls unmix only through public names and never another benchmark, and its --smoke mode (the same code path at
toy size, in a temporary folder) exits 0."""
import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))
# Smokes that take more than seconds run with the slow tests: those that train the emoji feature or identity
# network on first use (minutes on a fresh machine), one that measures bits/dim through DDPM's 1000-term VLB, and
# one that loads the machine with busy processes on purpose.
SLOW = {"emoji_budget", "latent_emoji", "text_emoji", "time_to_quality", "threads_under_load"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _violations(path: Path) -> list[str]:
    """Imports of another benchmark or of a private unmix name, relative imports, and private attributes."""
    siblings = {p.stem for p in BENCHMARKS}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules, names = [a.name for a in node.names], []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(f"line {node.lineno}: relative import")
                continue
            modules, names = [node.module], [a.name for a in node.names]
        else:
            if isinstance(node, ast.Attribute) and _private(node.attr):
                found.append(f"line {node.lineno}: private attribute .{node.attr}")
            continue
        for module in modules:
            if module.split(".")[0] in siblings:
                found.append(f"line {node.lineno}: imports the benchmark {module}")
            if module.split(".")[0] == "unmix":
                found += [f"line {node.lineno}: private name {n} of {module}"
                          for n in [*module.split("."), *names] if _private(n)]
    return found


def test_the_benchmarks_are_found():
    assert len(BENCHMARKS) >= 10, BENCHMARKS


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_a_benchmark_calls_only_public_api(path):
    assert not _violations(path), _violations(path)


def test_the_check_sees_violations(tmp_path):
    """Guards the test above against passing vacuously."""
    bad = tmp_path / "bad.py"
    bad.write_text("from unmix.data.products import _scaled_glyph\nfrom samplers import run\nfrom . import x\n"
                   "import unmix._hidden\nmodel._steered(1)\n")
    assert len(_violations(bad)) == 5, _violations(bad)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_a_benchmark_imports(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else [])
                                  for p in BENCHMARKS])
def test_a_benchmark_runs_its_smoke(path, tmp_path):
    """Run from an empty folder, so a smoke that writes outside its temporary folder leaves it behind here."""
    result = subprocess.run([sys.executable, str(path), "--smoke"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert result.returncode == 0, f"{path.name} --smoke:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert not list(tmp_path.iterdir()), f"{path.name} --smoke wrote {sorted(tmp_path.iterdir())}"
