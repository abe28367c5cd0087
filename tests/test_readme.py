"""Every command block of README.md and of each guide in docs/guide/ runs, in order, in a scratch folder (issues 17
and 30), so the README and the guides cannot drift.

The ```bash (or sh / shell) blocks and the ```python blocks of one file are run as one bash session in a fresh empty
folder, as a user pasting them one after another would; each guide starts from an empty folder of its own, so a
guide trains what it uses. What the test changes, and nothing else:
- `unmix train` (and `python -m unmix train`) gets `--steps N --checkpoint-every N --sample-every N --nfe 4`
  appended (the last value of a repeated flag counts), with N from UNMIX_README_STEPS (default 10): the README's
  trainings take minutes to hours; `unmix.train(...)` in Python blocks gets steps=N the same way;
  `unmix train-autoencoder` gets the same flags but --nfe, `unmix distill` gets `--steps N` (steps per round);
- `pip`, `apt-get` and `python -m pytest` are skipped (the environment is installed; the suite runs elsewhere).
A block whose fence says `notest` (```bash notest) is not run. A command that exits non-zero fails the test with
its name and the output's tail.

The default suite checks the harness, that every block of every guide is valid bash or Python, and that every
relative link and picture of the README, the guides and docs/results/ exists (seconds); running the blocks is the
slow tests' work (`python -m pytest -m slow tests/test_readme.py`).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guide").glob("*.md"))
RESULTS = sorted((ROOT / "docs" / "results").glob("*.md"))
STEPS = int(os.environ.get("UNMIX_README_STEPS", "10"))
BASH, PYTHON = ("bash", "sh", "shell"), ("python", "py", "python3")

PREAMBLE = r"""
set -eo pipefail
_failed() { echo "README command failed (exit $1): $2" >&2; exit "$1"; }
_skip() { echo "(README test: skipped '$*')"; }
_train_flags=(--steps "$UNMIX_README_STEPS" --checkpoint-every "$UNMIX_README_STEPS" \
              --sample-every "$UNMIX_README_STEPS" --nfe 4)
_budget_flags=(--steps "$UNMIX_README_STEPS" --checkpoint-every "$UNMIX_README_STEPS" \
               --sample-every "$UNMIX_README_STEPS")
unmix() {
  case "$1" in
    train) command unmix "$@" "${_train_flags[@]}" || _failed $? "unmix $*" ;;
    train-autoencoder) command unmix "$@" "${_budget_flags[@]}" || _failed $? "unmix $*" ;;
    distill) command unmix "$@" --steps "$UNMIX_README_STEPS" || _failed $? "unmix $*" ;;
    *) command unmix "$@" || _failed $? "unmix $*" ;;
  esac
}
python() {
  case "$1 $2" in
    "-m pytest"|"-m pip") _skip "python $*"; return 0 ;;
    "-m unmix") shift 2; unmix "$@"; return ;;
  esac
  command python "$@" || _failed $? "python $*"
}
python3() { python "$@"; }
pip() { _skip "pip $*"; }
pip3() { _skip "pip3 $*"; }
pytest() { _skip "pytest $*"; }
apt-get() { _skip "apt-get $*"; }
sudo() { _skip "sudo $*"; }
torchrun() {
  case " $* " in *" unmix train "*) command torchrun "$@" "${_train_flags[@]}" || _failed $? "torchrun $*" ;;
                 *) command torchrun "$@" || _failed $? "torchrun $*" ;; esac
}
"""

# Python blocks: unmix.train(...) trains for STEPS steps, whatever the block asks for.
PYTHON_PREAMBLE = """\
import os as _os
import unmix.api as _api

_train, _n = _api.train, int(_os.environ["UNMIX_README_STEPS"])


def _short_train(*args, **settings):
    settings.update(steps=_n, checkpoint_every=_n, sample_every=_n, nfe=4)
    settings.pop("minutes", None)
    return _train(*args, **settings)


_api.train = _short_train
del _os
"""


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, language, code) of each fenced block to run, in order."""
    found = []
    for m in re.finditer(r"^```[ \t]*(\w+)([^\n]*)\n(.*?)^```[ \t]*$", text, flags=re.M | re.S):
        lang, info, code = m.group(1).lower(), m.group(2), m.group(3)
        if "notest" in info or lang not in BASH + PYTHON:
            continue
        found.append((text.count("\n", 0, m.start()) + 1, "bash" if lang in BASH else "python", code))
    return found


def script(readme: str, folder: Path, name: str = "README.md") -> str:
    """One bash script: the preamble, then each block (python blocks written to files and run from it)."""
    parts = [PREAMBLE]
    for i, (line, lang, code) in enumerate(blocks(readme)):
        parts.append(f'echo "### {name} block {i + 1} (line {line}, {lang})"')
        if lang == "bash":
            parts.append(code)
        else:
            path = folder / f".readme_block_{i + 1}.py"
            path.write_text(PYTHON_PREAMBLE + "\n" + code)
            parts.append(f"python {path.name}")
    return "\n".join(parts) + "\n"


def run_blocks(text: str, name: str, folder: Path, timeout: int = 3000) -> None:
    """Run a file's blocks in `folder` (empty) as one bash session; fail with the output's tail."""
    body = script(text, folder, name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNMIX_README_STEPS": str(STEPS), "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "-c", body], cwd=folder, env=env, capture_output=True, timeout=timeout)
    output = (run.stdout + run.stderr).decode("utf-8", errors="replace")  # bytes: text=True would turn \r into \n
    shown = [line.split("\r")[-1] for line in output.split("\n")]  # a progress bar shows as its last state
    assert run.returncode == 0, f"a {name} command failed:\n" + "\n".join(line for line in shown if line.strip())[-4000:]


def links(text: str) -> list[str]:
    """Relative targets of Markdown links and <img src=...> in a page (web links and #anchors left out)."""
    found = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<img [^>]*src=\"([^\"]+)\"", text)
    return [t.split("#")[0] for t in found if not re.match(r"[a-z]+:|#", t) and t.split("#")[0]]


def test_the_harness_finds_blocks_and_shortens_training(tmp_path):
    """The harness itself, on a README written for it (fast: no command of unmix runs)."""
    readme = textwrap.dedent("""\
        ```bash
        pip install -e . && echo "one two" > out.txt   # comment
        ```
        ```text
        not run
        ```
        ```python
        print("hi")
        ```
        ```bash notest
        exit 1
        ```
        """)
    found = blocks(readme)
    assert [(line, lang) for line, lang, _ in found] == [(1, "bash"), (7, "python")]
    body = script(readme, tmp_path)
    assert "exit 1" not in body and "not run" not in body and "python .readme_block_2.py" in body
    env = {**os.environ, "UNMIX_README_STEPS": "3", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "skipped 'pip install -e .'" in run.stdout and "hi" in run.stdout
    assert (tmp_path / "out.txt").read_text() == "one two\n"
    # a failing command in the middle of an && list still fails the script
    run = subprocess.run(["bash", "-c", PREAMBLE + "python -c 'raise SystemExit(3)' && echo after\n"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "after" not in run.stdout and "README command failed (exit 3)" in run.stderr


def test_every_guide_block_is_valid_bash_or_python(tmp_path):
    """Fast: a typo in a guide's block fails here, before the slow test runs it."""
    assert GUIDES, "docs/guide/ has no guides"
    for guide in GUIDES:
        found = blocks(guide.read_text())
        assert found, f"{guide.name} has no bash or python block to run"
        for line, lang, code in found:
            if lang == "python":
                compile(code, f"{guide.name}:{line}", "exec")
        check = subprocess.run(["bash", "-n", "-c", script(guide.read_text(), tmp_path, guide.name)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"{guide.name}: {check.stderr}"


def test_links_and_pictures_exist():
    """Fast: every relative link of the README, the guides and the results pages resolves; the README links
    every guide and the results."""
    for page in [README, *GUIDES, *RESULTS]:
        for target in links(page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links {target}, which does not exist"
    linked = {(README.parent / t).resolve() for t in links(README.read_text())}
    for guide in GUIDES:
        assert guide.resolve() in linked, f"README.md does not link {guide.relative_to(ROOT)}"
    assert (ROOT / "docs" / "results").resolve() in linked or any(r.resolve() in linked for r in RESULTS)


@pytest.mark.slow
def test_every_readme_block_runs_in_order(tmp_path):
    readme = README.read_text()
    assert blocks(readme), "README.md has no bash or python blocks"
    run_blocks(readme, "README.md", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_every_guide_block_runs_in_order(guide, tmp_path):
    run_blocks(guide.read_text(), f"docs/guide/{guide.name}", tmp_path)
