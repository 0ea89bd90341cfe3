"""examples/train_mortality.py end to end: on a synthetic set with the generator's planted
in-ICU-death signal it must learn (held-out AUROC >= 0.75); on the real demo it must run. Also
its numpy AUROC/AUPRC against hand-worked values."""
import importlib.util

import numpy as np
import pytest

pytest.importorskip("torch")

from .conftest import REPO  # noqa: E402


def example():
    spec = importlib.util.spec_from_file_location("train_mortality",
                                                  REPO / "examples" / "train_mortality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_metrics_by_hand():
    m = example()
    y = np.array([0, 0, 1, 1], bool)
    assert m.auroc(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert m.auroc(y, np.array([1, 1, 1, 1.0])) == 0.5  # ties count half
    assert np.isnan(m.auroc(y[:2], np.array([0.1, 0.2])))
    # ranked 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg): AP = (1/1 + 2/3) / 2
    assert m.auprc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx((1 + 2 / 3) / 2)
    assert m.auprc(y, np.array([1, 1, 1, 1.0])) == 0.5  # all tied: the prevalence


def test_learns_the_synthetic_signal(tmp_path):
    # 500 patients, half dying in their last admission: ~350 samples, ~85 positive; ~15 s
    r = example().main(["--demo", "--out-dir", str(tmp_path), "--patients", "500",
                        "--death-rate", "0.5", "--seed", "0", "--runner", "serial"])
    assert r["heldout_positives"] >= 10 and r["heldout_samples"] - r["heldout_positives"] >= 10
    assert r["auroc"] >= 0.75, r
    assert r["auprc"] > r["heldout_positives"] / r["heldout_samples"], r


def test_runs_on_the_demo(demo_build):
    cfg, _ = demo_build
    r = example().main(["--version", str(cfg.version_dir), "--epochs", "50"])
    assert r["train_samples"] + r["heldout_samples"] == 74  # the task's demo samples
