import os
import shutil
from pathlib import Path

import pytest

import config

REPO = Path(__file__).resolve().parent.parent


def demo_dir() -> Path:
    """The real MIMIC-IV demo, located by MIMIC_DEMO_DIR (set by .ci/run)."""
    path = Path(os.environ.get("MIMIC_DEMO_DIR", REPO.parent / "shared/data/mimic-iv-demo"))
    if not (path / "hosp" / "patients.csv.gz").exists():
        pytest.skip(f"MIMIC-IV demo not found at {path} (set MIMIC_DEMO_DIR)")
    return path


def make_cfg(data_dir, out_dir, **overrides):
    """A Config for tests: serial runner unless asked otherwise, no environment leakage."""
    values = {"DATA_DIR": str(data_dir), "OUT_DIR": str(out_dir), "RUNNER": "serial"}
    values.update({k.upper(): v for k, v in overrides.items()})
    return config.load(values, environ={})


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """One serial build of the real demo, shared by the read-only tests."""
    from jobs.driver import run_build

    out = tmp_path_factory.mktemp("demo_build")
    cfg = make_cfg(demo_dir(), out)
    summary = run_build(cfg, progress=False)
    return cfg, summary


@pytest.fixture
def demo_copy(tmp_path):
    """A writable copy of the demo (only hosp/ and icu/), for tests that corrupt it."""
    src = demo_dir()
    dst = tmp_path / "mimic"
    for module in ("hosp", "icu"):
        shutil.copytree(src / module, dst / module)
    return dst
