"""Big tables cut into several partition units (CSV byte ranges through gzip seek points,
parquet row-group ranges) give the same output as tables read whole; a bad value names the
file and the unit's range."""
import csv
import dataclasses
import gzip
import io
import json
import re
import shutil

import polars as pl
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from jobs import scan
from trajectory import synth
from trajectory.atomic import atomic_write_json
from jobs.driver import partition_tasks, prepare, run_build, stage1_marker
from trajectory.events.plan import load_plan, make_plan, plan_path, unit_name
from trajectory.events.tables import TABLES, TABLES_BY_NAME
from trajectory.raw.csv_ranges import Part
from trajectory.raw.gzindex import scan_points
from trajectory.raw.read import ARROW_TYPES, find_table, iter_batches

from .conftest import demo_dir, make_cfg

UNCUT_MB = 100_000  # every table read whole


def plan_json(cfg) -> dict:
    return json.loads(plan_path(cfg).read_text())


def records(cfg) -> dict[int, bytes]:
    """subject_id -> the record's bytes, read where the manifest says they are."""
    m = pl.read_parquet(cfg.version_dir / "manifest.parquet")
    out = {}
    for sid, path, offset, size in m.select("subject_id", "path", "offset", "bytes").iter_rows():
        with open(cfg.version_dir / path, "rb") as f:
            f.seek(offset)
            out[sid] = f.read(size)
        assert len(out[sid]) == size
    return out


def assert_same_output(cfg, ref_cfg) -> None:
    a, b = records(cfg), records(ref_cfg)
    assert len(a) > 0 and sorted(a) == sorted(b)
    differ = [sid for sid in a if a[sid] != b[sid]]
    assert not differ, f"{len(differ)} of {len(a)} records differ, e.g. {differ[:5]}"
    ma = pl.read_parquet(cfg.version_dir / "manifest.parquet").sort("subject_id")
    mb = pl.read_parquet(ref_cfg.version_dir / "manifest.parquet").sort("subject_id")
    assert ma["checksum"].equals(mb["checksum"])
    for name in ("codes.parquet", "qc_report.json"):
        got, want = (c.version_dir / name for c in (cfg, ref_cfg))
        assert got.read_bytes() == want.read_bytes(), name


def unit_markers(cfg, plan: dict, table: str) -> list[dict]:
    p = load_plan(cfg)
    return [stage1_marker(cfg, p, "partition", unit_name(table, k))
            for k in range(plan["parts"][table])]


def assert_byte_ranges_tile(cfg, plan: dict, table: str) -> None:
    """A cut CSV table's units read contiguous, non-empty byte ranges from the end of the
    header to the end of the text: every row read exactly once."""
    cut = stage1_marker(cfg, load_plan(cfg), scan.STAGE, table)
    ranges = [m["range"] for m in unit_markers(cfg, plan, table)]
    assert [r[0] for r in ranges] == ["bytes"] * len(ranges)
    assert [r[1] for r in ranges] == cut["cuts"][:-1]
    assert [r[2] for r in ranges] == cut["cuts"][1:]
    assert ranges[-1][2] == cut["size"]
    assert all(a < b for _, a, b in ranges), (table, ranges)


def qc_rows(cfg, table: str) -> int:
    report = json.loads((cfg.version_dir / "qc_report.json").read_text())
    return report["tables"][table]["rows_read"]


# ---- the real demo ------------------------------------------------------------------------------

def test_demo_cut_into_small_units_same_output(demo_build, tmp_path):
    ref_cfg, _ = demo_build
    ref_plan = plan_json(ref_cfg)
    assert set(ref_plan["parts"].values()) == {1}  # the reference reads every table whole
    cfg = make_cfg(demo_dir(), tmp_path / "cut", partition_unit_mb=0.1, n_shards=3,
                   index_dir=tmp_path / "index")
    run_build(cfg, progress=False)
    plan = plan_json(cfg)
    assert plan["n_shards"] == 3 != ref_plan["n_shards"]
    cut = sorted(t for t, n in plan["parts"].items() if n > 1)
    assert len(cut) >= 5, plan["parts"]
    assert plan["parts"]["chartevents"] >= 10 and plan["parts"]["labevents"] >= 5
    # gzip seek-point indexes went to INDEX_DIR, one per cut table
    assert len(list((tmp_path / "index").glob("chartevents-*.gzidx"))) == 1
    assert len(list((tmp_path / "index").glob("*.gzidx"))) == len(cut)
    for table in cut:
        assert_byte_ranges_tile(cfg, plan, table)
        rows = sum(m["rows_read"] for m in unit_markers(cfg, plan, table))
        assert rows == qc_rows(ref_cfg, table), table
    assert_same_output(cfg, ref_cfg)


# ---- synthetic set with notes -------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("synth") / "mimic", n_patients=20, seed=11)


def csv_records(path) -> int:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def text_and_longest_record(path) -> tuple[int, int]:
    """Bytes of text after the header, and the longest record (its newline included), with
    records ended by newlines outside quotes."""
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    header, body = data.split(b"\n", 1)
    longest, cur, odd = 0, 0, 0
    for line in body.split(b"\n")[:-1]:
        cur += len(line) + 1
        odd ^= line.count(b'"') & 1
        if not odd:
            longest, cur = max(longest, cur), 0
    assert cur == 0 and body.endswith(b"\n")
    return len(body), longest


def test_synthetic_notes_every_table_cut_same_output(synth_dir, tmp_path):
    """Every table, the multi-line note tables included, cut into several units."""
    ref = make_cfg(synth_dir, tmp_path / "whole", partition_unit_mb=UNCUT_MB,
                   index_dir=tmp_path / "index")
    run_build(ref, progress=False)
    assert set(plan_json(ref)["parts"].values()) == {1}

    cfg = make_cfg(synth_dir, tmp_path / "cut", partition_unit_mb=0.004, n_shards=3,
                   index_dir=tmp_path / "index")
    # No single PARTITION_UNIT_MB cuts every table of this small set: a unit small enough to
    # cut hcpcsevents (~250 gzip bytes) in two cuts the ~10 KB discharge table into more
    # units than it has notes, and an empty unit fails (test_empty_byte_range_reads_no_rows).
    # So take the plan's cut at 4 KB units and give every table between 2 units and as many
    # as keep each range at least two of its longest records long. The driver keeps a plan
    # it finds in WORK_DIR (a resumed build keeps its cut).
    plan = make_plan(cfg)
    parts = {}
    for name in plan.tables:
        path = find_table(synth_dir, TABLES_BY_NAME[name].module, name)
        size, longest = text_and_longest_record(path)
        most = size // (2 * longest)
        assert most >= 2, (name, size, longest)
        parts[name] = max(2, min(plan.parts[name], most))
        if TABLES_BY_NAME[name].multiline:
            parts[name] = min(most, 8)
    atomic_write_json(plan_path(cfg), dataclasses.replace(plan, parts=parts).to_json())
    run_build(cfg, progress=False)

    got = plan_json(cfg)
    assert got["parts"] == parts
    assert set(got["parts"]) == {t.name for t in TABLES}  # the synthetic set has every table
    assert min(got["parts"].values()) >= 2, got["parts"]
    assert got["parts"]["discharge"] >= 3 and got["parts"]["radiology"] >= 3
    assert got["parts"]["chartevents"] >= 20
    for table in got["parts"]:
        assert_byte_ranges_tile(cfg, got, table)
    for note in ("discharge", "radiology"):
        n = csv_records(synth_dir / "note" / f"{note}.csv.gz")
        assert n > 20
        assert qc_rows(cfg, note) == qc_rows(ref, note) == n
        assert sum(m["rows_read"] for m in unit_markers(cfg, got, note)) == n
    assert_same_output(cfg, ref)


# ---- parquet inputs: row-group ranges -----------------------------------------------------------

def to_parquet(data_dir, table: str, row_group_size: int, typed: bool) -> int:
    """Replace the table's .csv.gz by a parquet file of small row groups: with the spec's
    column types (`typed`), or every column a string (cast by the reader)."""
    spec = TABLES_BY_NAME[table]
    src = data_dir / spec.module / f"{table}.csv.gz"
    if typed:
        with gzip.open(src, "rt") as f:
            header = next(csv.reader(io.StringIO(f.readline())))
        names = {h.lower(): h for h in header}
        tbl = pacsv.read_csv(src, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                             convert_options=pacsv.ConvertOptions(
                                 column_types={names[c]: ARROW_TYPES[t]
                                               for c, t in spec.columns.items()},
                                 strings_can_be_null=True, null_values=[""],
                                 quoted_strings_can_be_null=True))
    else:
        tbl = pl.read_csv(src, infer_schema=False).to_arrow()
    dst = src.with_name(f"{table}.parquet")
    pq.write_table(tbl, dst, row_group_size=row_group_size)
    src.unlink()
    return pq.ParquetFile(dst).metadata.num_row_groups


def test_parquet_row_group_ranges_same_output(synth_dir, tmp_path):
    data = tmp_path / "mimic"
    shutil.copytree(synth_dir, data)
    groups = {"chartevents": to_parquet(data, "chartevents", 1000, typed=True),
              "labevents": to_parquet(data, "labevents", 250, typed=False),
              "discharge": to_parquet(data, "discharge", 8, typed=True)}
    assert min(groups.values()) >= 5, groups
    ref = make_cfg(data, tmp_path / "whole", partition_unit_mb=UNCUT_MB,
                   index_dir=tmp_path / "index")
    run_build(ref, progress=False)
    assert all(plan_json(ref)["row_groups"][t] == [[0, n]] for t, n in groups.items())
    cfg = make_cfg(data, tmp_path / "cut", partition_unit_mb=0.01, index_dir=tmp_path / "index")
    run_build(cfg, progress=False)
    plan = plan_json(cfg)
    assert set(plan["row_groups"]) == set(groups)
    for table, n in groups.items():
        ranges = plan["row_groups"][table]
        assert plan["parts"][table] == len(ranges) > 1, (table, ranges)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a < b for a, b in ranges) and all(
            x[1] == y[0] for x, y in zip(ranges, ranges[1:])), ranges
        markers = unit_markers(cfg, plan, table)
        assert [m["range"] for m in markers] == [["row_groups", a, b] for a, b in ranges]
        path = data / TABLES_BY_NAME[table].module / f"{table}.parquet"
        rows = pq.ParquetFile(path).metadata.num_rows
        assert sum(m["rows_read"] for m in markers) == qc_rows(ref, table) == rows, table
    assert len(plan["row_groups"]["chartevents"]) >= 5
    assert len(plan["row_groups"]["labevents"]) >= 2
    assert_same_output(cfg, ref)


# ---- a bad value in one unit ------------------------------------------------------------------

BAD = "not-a-number-xyz"


@pytest.mark.parametrize("suffix, unit_mb", [(".csv.gz", 0.005), (".csv", 0.005)])
def test_bad_value_names_file_and_unit_range(synth_dir, tmp_path, suffix, unit_mb):
    data = tmp_path / "mimic"
    shutil.copytree(synth_dir, data)
    src = data / "hosp" / "labevents.csv.gz"
    text = gzip.decompress(src.read_bytes())
    header, body = text.split(b"\n", 1)
    col = [h.lower() for h in header.decode().split(",")].index("valuenum")
    lines = body.split(b"\n")
    # a row about 85% through the file with a numeric valuenum (labevents has no quoted
    # fields in the synthetic set, so splitting on commas is exact)
    k = next(i for i in range(int(len(lines) * 0.85), len(lines))
             if b'"' not in lines[i] and lines[i].split(b",")[col] not in (b"",))
    fields = lines[k].split(b",")
    fields[col] = BAD.encode()
    lines[k] = b",".join(fields)
    bad_text = header + b"\n" + b"\n".join(lines)
    bad_at = len(header) + 1 + sum(len(x) + 1 for x in lines[:k])  # the bad row's offset
    assert bad_text[bad_at:].startswith(lines[k])
    src.unlink()
    path = src.with_name("labevents" + suffix)
    path.write_bytes(gzip.compress(bad_text, compresslevel=6, mtime=0) if suffix == ".csv.gz"
                     else bad_text)

    cfg = make_cfg(data, tmp_path / "out", partition_unit_mb=unit_mb,
                   index_dir=tmp_path / "index")
    plan = prepare(cfg)
    n = plan.parts["labevents"]
    assert n >= 5, plan.parts
    tasks = [t for t in partition_tasks(plan) if t[2] == "labevents" or
             t[2].startswith("labevents.")]
    assert [t[0] for t in tasks] == ["scan-labevents"] + [unit_name("labevents", k)
                                                          for k in range(n)]
    key, fn, unit, deps = tasks[0]
    cuts = fn(unit, cfg)["cuts"]
    assert len(cuts) == n + 1 and cuts[-1] == len(bad_text)
    bad_k = next(k for k in range(n) if cuts[k] <= bad_at < cuts[k + 1])
    assert 0 < bad_k  # late in the file, so not the first unit
    part = Part(bad_k, n, cuts[bad_k], cuts[bad_k + 1], "bytes")
    failed = []
    for k, (key, fn, unit, deps) in enumerate(tasks[1:]):
        assert deps == ["scan-labevents"]
        if k != bad_k:
            fn(unit, cfg)  # every other unit of the table reads fine
            continue
        with pytest.raises(ValueError, match=re.escape(f"{path} ({part.describe()})")) as e:
            fn(unit, cfg)
        failed.append(k)
        msg = str(e.value)
        assert "part " in msg and "uncompressed bytes" in msg
        assert "valuenum" in msg and BAD in msg, msg
    assert failed == [bad_k]
    assert stage1_marker(cfg, load_plan(cfg), "partition", unit_name("labevents", bad_k)) is None
    assert not list(cfg.cache_dir.glob("labevents-*/.*.tmp-*"))  # the failed attempt's folder


# ---- empty units ------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv.gz", ".csv"])
def test_empty_byte_range_reads_no_rows(synth_dir, tmp_path, suffix):
    src = synth_dir / "hosp" / "patients.csv.gz"
    text = gzip.decompress(src.read_bytes())
    path = tmp_path / f"patients{suffix}"
    path.write_bytes(src.read_bytes() if suffix == ".csv.gz" else text)
    points = scan_points(path)[1] if suffix == ".csv.gz" else None
    start = text.index(b"\n") + 1
    columns = TABLES_BY_NAME["patients"].columns
    # the same range read through a non-empty neighbour works ...
    rows = sum(b.num_rows for b in iter_batches(path, columns, 1 << 20, False,
                                                Part(0, 2, start, len(text), "bytes"), points))
    assert rows == 20
    # ... an empty one (cuts k and k+1 equal) should give no rows
    rows = sum(b.num_rows for b in iter_batches(path, columns, 1 << 20, False,
                                                Part(1, 2, len(text), len(text), "bytes"),
                                                points))
    assert rows == 0
