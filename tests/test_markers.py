"""Build markers carry arrays as base64 (jobs.common.array_to_json): the same numbers back,
and a work folder whose markers were written with plain JSON lists (before) still finalizes
to the same version."""
from __future__ import annotations

import filecmp
import json

import numpy as np
import polars as pl
import pytest

from jobs.common import array_from_json, array_to_json
from trajectory import synth

from .conftest import make_cfg


@pytest.mark.parametrize("a", [np.arange(7, dtype=np.int32), np.zeros(0, np.int64),
                               np.array([[1, 2**40], [3, 4]], np.int64),
                               np.array([2**64 - 1], np.uint64)])
def test_arrays_round_trip_through_json(a):
    back = array_from_json(json.loads(json.dumps(array_to_json(a))))
    assert back.dtype == a.dtype and back.shape == a.shape and (back == a).all()
    assert (array_from_json(a.tolist()) == a).all()  # an earlier marker's plain list


def test_markers_with_plain_lists_finalize_to_the_same_version(tmp_path):
    from jobs import finalize
    from jobs.driver import run_build

    data = tmp_path / "data"
    synth.generate(data, n_patients=12, seed=4)
    cfg = make_cfg(data, tmp_path / "out")
    run_build(cfg, progress=False)
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("codes.parquet", "qc_report.json", "manifest.parquet"):
        (kept / name).write_bytes((cfg.version_dir / name).read_bytes())
    for path in (cfg.work_dir / "done" / "build").glob("*.json"):
        m = json.loads(path.read_text())
        for key in ("code_ids", "code_counts", "concept_histogram"):
            m[key] = array_from_json(m[key]).tolist()
        path.write_text(json.dumps(m))
    (cfg.version_dir / "dataset.json").unlink()
    finalize.run("all", cfg)
    for name in ("codes.parquet", "qc_report.json", "manifest.parquet"):
        assert filecmp.cmp(kept / name, cfg.version_dir / name, shallow=False), name
    # every event has one code: the summed code counts are the records' events
    codes = pl.read_parquet(cfg.version_dir / "codes.parquet")
    events = pl.read_parquet(cfg.version_dir / "manifest.parquet")["n_events"].sum()
    assert codes["count"].sum() == events > 0
