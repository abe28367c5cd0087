"""Every command block of README.md runs, in order, in a scratch folder (issue 17), so the README cannot drift.

The ```bash (or sh / shell) blocks and the ```python blocks are run as one bash session in a fresh empty folder,
as a user pasting them one after another would. What the test changes, and nothing else:
- `unmix train` (and `python -m unmix train`) gets `--steps N --checkpoint-every N --sample-every N --nfe 4`
  appended (the last value of a repeated flag counts), with N from UNMIX_README_STEPS (default 10): the README's
  trainings take minutes to hours; `unmix.train(...)` in Python blocks gets steps=N the same way;
- `pip`, `apt-get` and `python -m pytest` are skipped (the environment is installed; the suite runs elsewhere).
A block whose fence says `notest` (```bash notest) is not run. A command that exits non-zero fails the test with
its name and the output's tail.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
STEPS = int(os.environ.get("UNMIX_README_STEPS", "10"))
BASH, PYTHON = ("bash", "sh", "shell"), ("python", "py", "python3")

PREAMBLE = r"""
set -eo pipefail
_failed() { echo "README command failed (exit $1): $2" >&2; exit "$1"; }
_skip() { echo "(README test: skipped '$*')"; }
_train_flags=(--steps "$UNMIX_README_STEPS" --checkpoint-every "$UNMIX_README_STEPS" \
              --sample-every "$UNMIX_README_STEPS" --nfe 4)
unmix() {
  if [ "$1" = train ]; then command unmix "$@" "${_train_flags[@]}" || _failed $? "unmix $*"
  else command unmix "$@" || _failed $? "unmix $*"; fi
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


def script(readme: str, folder: Path) -> str:
    """One bash script: the preamble, then each block (python blocks written to files and run from it)."""
    parts = [PREAMBLE]
    for i, (line, lang, code) in enumerate(blocks(readme)):
        parts.append(f'echo "### README.md block {i + 1} (line {line}, {lang})"')
        if lang == "bash":
            parts.append(code)
        else:
            path = folder / f".readme_block_{i + 1}.py"
            path.write_text(PYTHON_PREAMBLE + "\n" + code)
            parts.append(f"python {path.name}")
    return "\n".join(parts) + "\n"


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


@pytest.mark.slow
def test_every_readme_block_runs_in_order(tmp_path):
    readme = README.read_text()
    assert blocks(readme), "README.md has no bash or python blocks"
    body = script(readme, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNMIX_README_STEPS": str(STEPS), "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "-c", body], cwd=tmp_path, env=env, capture_output=True, timeout=3000)
    output = (run.stdout + run.stderr).decode("utf-8", errors="replace")  # bytes: text=True would turn \r into \n
    shown = [line.split("\r")[-1] for line in output.split("\n")]  # a progress bar shows as its last state
    assert run.returncode == 0, "a README command failed:\n" + "\n".join(line for line in shown if line.strip())[-4000:]
