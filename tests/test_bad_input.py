"""Bad input: one clear error naming the file/column, and no version that looks complete."""
import gzip
import shutil

import pytest

from jobs.driver import run_build

from .conftest import make_cfg


def build_fails(data_dir, tmp_path, match):
    cfg = make_cfg(data_dir, tmp_path / "out")
    with pytest.raises(ValueError, match=match):
        run_build(cfg, progress=False)
    assert not (cfg.version_dir / "dataset.json").exists()
    assert not (cfg.version_dir / "manifest.parquet").exists()
    return cfg


def test_data_dir_not_a_directory(tmp_path):
    build_fails(tmp_path / "nope", tmp_path, "is not a directory")


def test_data_dir_wrong_folder(tmp_path):
    (tmp_path / "somewhere" / "icu").mkdir(parents=True)
    build_fails(tmp_path / "somewhere", tmp_path, "no hosp/ folder")


def test_missing_core_table(demo_copy, tmp_path):
    (demo_copy / "hosp" / "admissions.csv.gz").unlink()
    build_fails(demo_copy, tmp_path, "core table hosp/admissions is missing")


def test_missing_column_names_file_and_column(demo_copy, tmp_path):
    path = demo_copy / "hosp" / "labevents.csv.gz"
    with gzip.open(path, "rt") as f:
        text = f.read()
    header, rest = text.split("\n", 1)
    with gzip.open(path, "wt") as f:
        f.write(header.replace("valuenum", "value_num") + "\n" + rest)
    build_fails(demo_copy, tmp_path, r"labevents\.csv\.gz: missing required column\(s\) 'valuenum'")


def test_truncated_gzip(demo_copy, tmp_path):
    path = demo_copy / "hosp" / "labevents.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    build_fails(demo_copy, tmp_path, r"labevents\.csv\.gz")


def test_wrong_type_names_column(demo_copy, tmp_path):
    path = demo_copy / "hosp" / "labevents.csv.gz"
    with gzip.open(path, "rt") as f:
        lines = f.read().split("\n")
    cols = lines[1].split(",")
    cols[9] = "not-a-number"  # valuenum
    lines[1] = ",".join(cols)
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines))
    build_fails(demo_copy, tmp_path, r"labevents\.csv\.gz: column 'valuenum'.*not-a-number")


def test_uppercase_columns_and_plain_csv_and_parquet(demo_copy, tmp_path):
    """Column names match case-insensitively; .csv and .parquet inputs work like .csv.gz."""
    import polars as pl

    path = demo_copy / "hosp" / "services.csv.gz"
    with gzip.open(path, "rt") as f:
        text = f.read()
    header, rest = text.split("\n", 1)
    path.unlink()
    (demo_copy / "hosp" / "services.csv").write_text(header.upper() + "\n" + rest)
    omr = demo_copy / "hosp" / "omr.csv.gz"
    pl.read_csv(omr, infer_schema=False).write_parquet(demo_copy / "hosp" / "omr.parquet")
    omr.unlink()
    shutil.rmtree(demo_copy / "icu")  # icu is optional: its absence is a warning
    cfg = make_cfg(demo_copy, tmp_path / "out")
    summary = run_build(cfg, progress=False)
    assert summary["n_patients"] == 100
    import json

    report = json.loads((cfg.version_dir / "qc_report.json").read_text())["tables"]
    assert report["services"]["rows_read"] == 319
    assert report["omr"]["rows_read"] == 2964
    assert any("icu/chartevents" in w for w in summary["warnings"])


def test_non_utf8_text_names_file_and_column(demo_copy, tmp_path):
    path = demo_copy / "hosp" / "services.csv.gz"
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data.replace(b",GYN\n", b",GY\xff\xfeN\n", 1))
    build_fails(demo_copy, tmp_path, r"services\.csv\.gz: column 'curr_service'.*UTF8")


def test_empty_table_and_orphan_rows(demo_copy, tmp_path):
    """A header-only table is fine (0 rows); rows of subjects absent from patients are
    dropped and counted, not silently lost and not fatal."""
    import json

    with gzip.open(demo_copy / "hosp" / "hcpcsevents.csv.gz", "rt") as f:
        header = f.readline()
    with gzip.open(demo_copy / "hosp" / "hcpcsevents.csv.gz", "wt") as f:
        f.write(header)
    path = demo_copy / "hosp" / "services.csv.gz"
    with gzip.open(path, "rt") as f:
        text = f.read()
    with gzip.open(path, "wt") as f:
        f.write(text + "99999999,,2110-04-11 15:09:36,,GYN\n")
    cfg = make_cfg(demo_copy, tmp_path / "out")
    run_build(cfg, progress=False)
    report = json.loads((cfg.version_dir / "qc_report.json").read_text())["tables"]
    assert report["hcpcsevents"]["rows_read"] == 0
    svc = report["services"]["events"]["service"]
    assert svc["rows"] == 320 and svc["dropped"] == {"subject_not_in_patients": 1}


def test_empty_file_is_a_clear_error(demo_copy, tmp_path):
    (demo_copy / "hosp" / "omr.csv.gz").unlink()
    (demo_copy / "hosp" / "omr.csv").write_bytes(b"")
    build_fails(demo_copy, tmp_path, r"omr\.csv: empty file, expected a CSV header line")
