"""benchmarks/sd_speed.py --smoke runs both sides on a tiny SD model and prints their rows."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")


def test_sd_speed_smoke(capsys):
    path = Path(__file__).parent.parent / "benchmarks" / "sd_speed.py"
    spec = importlib.util.spec_from_file_location("sd_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--threads", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["unmix", "diffusers"] and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
