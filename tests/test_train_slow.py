"""End-to-end: the default digits recipe learns recognisable, varied digits (slow: minutes on 2 CPU cores)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _digit_classifier():
    from sklearn.linear_model import LogisticRegression

    from unmix.data import load_dataset

    ds = load_dataset("digits")
    return LogisticRegression(max_iter=2000).fit(ds.data.reshape(len(ds), -1).numpy(), ds.labels.numpy())


def test_default_digits_run_gives_recognisable_varied_digits(tmp_path):
    out, samples = tmp_path / "digits", tmp_path / "samples"
    steps = os.environ.get("UNMIX_SLOW_STEPS", "1000")
    run = [sys.executable, "-m", "unmix"]
    subprocess.run([*run, "train", "--out", str(out), "--steps", steps], check=True)
    subprocess.run([*run, "sample", str(out), "--n", "200", "--out", str(samples), "--save-npy",
                    str(samples / "x.npy"), "--no-singles"], check=True)
    x = np.load(samples / "x.npy").reshape(200, -1)
    proba = _digit_classifier().predict_proba(x)
    confident = proba.max(1) > 0.8
    classes = np.bincount(proba.argmax(1), minlength=10)
    print(json.dumps({"confident": float(confident.mean()), "classes": classes.tolist()}))
    assert confident.mean() > 0.6  # most samples look like one clear digit to a classifier
    assert (classes >= 5).sum() >= 9  # and nearly every digit shows up
