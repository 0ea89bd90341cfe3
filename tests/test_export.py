"""`export windows` through the real CLI: one row per (stay, window), values equal the records'."""
import subprocess
import sys

import numpy as np
import polars as pl

from trajectory import open_version

from .conftest import REPO


def test_export_windows_matches_records(demo_build, tmp_path):
    cfg, _ = demo_build
    out = tmp_path / "w.parquet"
    subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "export", "windows",
                    str(cfg.version_dir), "--out", str(out)], check=True, capture_output=True)
    df = pl.read_parquet(out)
    v = open_version(cfg.version_dir)
    grids = [(sid, w) for sid in v.subject_ids for w in v.raw(sid)["windows"]]
    assert df.height == sum(w["shape"][0] for _, w in grids) > 0
    sid, w = next((s, w) for s, w in grids if w["shape"][0] > 3 and w["features"])
    name = v.meta["concepts"][w["features"][0]]
    rows = df.filter((pl.col("subject_id") == sid) & (pl.col("id") == w["id"])).sort("window")
    np.testing.assert_array_equal(rows[f"{name}__mean"].to_numpy(),
                                  w["data"][:, 0, w["stats"].index("mean")])
    assert rows["start"][1] - rows["start"][0] == w["step"]
    absent = [c for i, c in enumerate(v.meta["concepts"]) if i not in w["features"]][0]
    assert (rows[f"{absent}__count"] == 0).all() and rows[f"{absent}__mean"].is_nan().all()
