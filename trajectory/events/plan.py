"""The build plan: which input files exist, their fingerprints, and the shard count.

Planned once by the driver before any unit runs and saved as WORK_DIR/plan.json, so every unit
(on any worker, node or array task) sees the same plan. The shard count depends only on the
input (never on MAX_CPUS), which is why builds with different worker counts give the same bytes.
"""
from __future__ import annotations

import base64
import dataclasses
import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..raw.read import find_table, fingerprints, read_header, resolve_columns
from .extra_tables import plan_spec
from .tables import DICTIONARIES, TABLES

PLAN_FORMAT = 4  # 4: stage-1 cache keys (3: big tables cut into units; 2: a unit per table)
# 0x9E3779B97F4A7C15 is the 64-bit golden-ratio constant (Fibonacci hashing): consecutive
# MIMIC subject_ids spread evenly over shards whatever the shard count.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# Patients are hashed into BUCKETS_PER_SHARD x n_shards buckets, and the buckets packed into
# shards by their event counts once the partition stage has counted them (shards_of_buckets).
# Hashing patients straight into shards left the largest demo x100 shard 22% above the mean
# (patients' sizes vary ~10x), and the worker's peak memory with it; packing several buckets
# per shard brings the largest within a few percent. Four, not eight: every shard reads one
# batch per bucket from every partition unit, and with a plan cut for 64 workers (141 units,
# 128 shards on demo x100) those reads were a third of the build stage; on a lognormal
# model of demo x100's patients, 4 buckets per shard leave the largest of 41 shards 1% above
# the mean (8: 0.5%), of 128 shards 7% (8: 5%).
BUCKETS_PER_SHARD = 4


def bucket_of(subject_id: np.ndarray, n_buckets: int) -> np.ndarray:
    h = subject_id.astype(np.uint64) * _GOLDEN
    # The hash's high 32 bits scaled to [0, n_buckets) by a multiply and shift (Lemire's
    # reduction): a uint64 modulo cost 0.3 s per 13M rows in numpy, this a tenth of that.
    return (((h >> np.uint64(32)) * np.uint64(n_buckets)) >> np.uint64(32)).astype(np.int32)


# A partition file's record batches, one row each in ascending bucket order: the bucket, the
# batch's index in the IPC file, its rows, its byte range and that range's XXH3-64. Kept as one
# uint64 array (base64 in a unit's JSON marker, raw bytes in a shard's msgpack read list): as
# JSON lists, demo x800's 2.9M batches were 169 MB of Python objects that the driver parsed
# and split per shard between the stages.
BATCH_COLUMNS = ("bucket", "index", "rows", "start", "end", "xxh3")


def batch_table(value) -> np.ndarray:
    """A file's batches as an (n, 6) uint64 array, from either encoding."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raw = base64.b64decode(value["b64"])
        if value.get("dtype") != "<u8":
            raise ValueError(f"batch table of dtype {value.get('dtype')!r}, expected '<u8'")
    return np.frombuffer(raw, dtype="<u8").reshape(-1, len(BATCH_COLUMNS))


def batch_json(table: np.ndarray) -> dict:
    table = np.ascontiguousarray(table, dtype="<u8").reshape(-1, len(BATCH_COLUMNS))
    return {"dtype": "<u8", "shape": list(table.shape),
            "b64": base64.b64encode(table.tobytes()).decode("ascii")}


def shards_of_buckets(rows: np.ndarray, n_shards: int) -> list[list[int]]:
    """Buckets of each shard: largest bucket first into the least loaded shard (ties: fewer
    buckets, then lower shard id; buckets by lower id), so the result depends on the input
    only."""
    order = sorted(range(len(rows)), key=lambda b: (-int(rows[b]), b))
    load = [(0, 0, s) for s in range(n_shards)]
    shards: list[list[int]] = [[] for _ in range(n_shards)]
    for b in order:
        total, count, s = heapq.heappop(load)
        shards[s].append(b)
        heapq.heappush(load, (total + int(rows[b]), count + 1, s))
    return [sorted(b) for b in shards]


# Peak RSS of one worker, measured on demo x20 (8 shards of 33 MB of .csv.gz, 2.5M events
# each, allocator keeping freed pages 30 s): ~1.2 GB, i.e. ~250 MB of libraries plus ~28 bytes
# per byte of gzip input; demo x100 (41 shards) peaked 2% higher. Other formats are weighed by
# how much smaller gzip would have been (MIMIC's CSVs compress ~7x; parquet about as well).
BASE_RSS_MB = 250
RSS_PER_GZ_BYTE = 28
GZ_EQUIVALENT = {".csv.gz": 1.0, ".csv": 1 / 7, ".parquet": 1.0}
# Share of WORKER_MEMORY_GB a shard may be planned to use: Dask starts spilling a worker's
# data at 60% of its limit, and the estimate is a measurement, not a bound.
MEMORY_SHARE = 0.6


# Auto partition unit: the input over PLAN_WORKERS x UNITS_PER_WORKER units, within
# [MIN_UNIT_MB, MAX_UNIT_MB] of gzip-equivalent input. A unit has fixed costs (its first block
# parses before anything overlaps it, one batch per bucket to write, each shard reads one
# file more): on demo x20 cut for 16 workers, 4 units per worker (4 MB, 75 units) cost 46
# partition unit-seconds, 2 per worker (8.6 MB, 46 units) 36, against 30 for 25 units; above
# 128 MB a unit is minutes on MIMIC-IV. Four, not two: demo x800 cut for 64 workers had units
# of 82 MB taking up to 12 s (chartevents' waited for its scan, and datetimeevents stayed
# whole), and the model put stage 1 at 22.6 s on 64 workers against 13.8 of unit-seconds / 64;
# below MIN_UNIT_MB (every input up to ~1.3 GB at 16 workers) nothing changes.
UNITS_PER_WORKER = 4
MIN_UNIT_MB, MAX_UNIT_MB = 8.0, 128.0
SCAN_SHARE = 0.1  # a table's scan time over its units' (inflate ~1 GB/s of text, parse ~0.1)
# Shards per planned worker: two, so the build stage's last wave is half a shard, not a whole.
SHARDS_PER_WORKER = 2


@dataclass(frozen=True)
class Plan:
    tables: dict  # table name -> fingerprint dict (path, bytes, hash) of present tables
    dictionaries: dict  # dictionary name -> fingerprint of present d_* tables
    missing: list  # optional tables absent from DATA_DIR (warned, recorded in dataset.json)
    n_shards: int
    config_hash: str
    shard_input_mb: float  # gzip-equivalent input per shard
    est_peak_mb: float  # estimated build-stage peak RSS of a worker (BASE + per-byte model)
    why: str  # what set the shard count: "size" target, worker "memory", "min", "workers" or "config"
    parts: dict  # table name -> number of partition units (1: read whole)
    row_groups: dict  # parquet table name -> [first, end) row-group range of each unit
    unit_mb: float  # gzip-equivalent input per partition unit the parts were cut for
    cache_keys: dict = field(default_factory=dict)  # table -> stage-1 cache key (jobs.cache)
    # the settings config_hash is made of (Config.hash_values), so a refusal can name the
    # changed ones; {} in a plan written before they were kept
    config: dict = field(default_factory=dict)

    @property
    def n_buckets(self) -> int:
        return self.n_shards * BUCKETS_PER_SHARD

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "tables": self.tables, "dictionaries": self.dictionaries,
                "missing": self.missing, "n_shards": self.n_shards,
                "config_hash": self.config_hash, "shard_input_mb": self.shard_input_mb,
                "est_peak_mb": self.est_peak_mb, "why": self.why, "parts": self.parts,
                "row_groups": self.row_groups, "unit_mb": self.unit_mb,
                "cache_keys": self.cache_keys, "config": self.config}

    def largest_first(self) -> list[str]:
        """Tables by input size, largest first: a big table started last would leave the
        other workers idle at the end of the stage."""
        return sorted(self.tables, key=lambda t: -self.tables[t]["bytes"])

    def partition_units(self) -> list[str]:
        """Every partition unit, `<table>.<part>`, largest table first."""
        return [unit_name(t, k) for t in self.largest_first() for k in range(self.parts[t])]

    def scan_tables(self) -> list[str]:
        """CSV tables cut into several units: each needs its cut points (and, gzipped, a
        seek-point index) before its units can run."""
        return [t for t in self.largest_first()
                if self.parts[t] > 1 and t not in self.row_groups]

    def describe(self, cfg) -> str:
        split = sum(1 for n in self.parts.values() if n > 1)
        return (f"plan: {self.n_shards} shards of ~{self.shard_input_mb:,.0f} MB of input "
                f"(set by {self.why}), estimated peak {self.est_peak_mb:,.0f} MB per worker "
                f"of a {cfg.worker_memory_gb:g} GB budget; {sum(self.parts.values())} "
                f"partition units of <= ~{self.unit_mb:g} MB ({split} tables cut), for "
                f"{cfg.plan_workers} workers")


def unit_name(table: str, part: int) -> str:
    return f"{table}.{part:04d}"


def split_unit(unit: str) -> tuple[str, int]:
    table, _, part = unit.rpartition(".")
    if not table or not part.isdigit():
        raise ValueError(f"partition unit {unit!r}: expected '<table>.<part>', e.g. "
                         "'chartevents.0003'")
    return table, int(part)


def unit_size_mb(gz_bytes: float, cfg) -> float:
    if cfg.partition_unit_mb:
        return cfg.partition_unit_mb
    auto = gz_bytes / 2**20 / (cfg.plan_workers * UNITS_PER_WORKER)
    return round(min(MAX_UNIT_MB, max(MIN_UNIT_MB, auto)), 1)


def row_group_ranges(path: Path, n: int) -> list[list[int]]:
    """At most n contiguous row-group ranges of near-equal compressed size."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    sizes = np.array([meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)],
                     np.float64)
    if len(sizes) == 0:
        return [[0, 0]]
    n = max(1, min(n, len(sizes)))
    ends = np.searchsorted(np.cumsum(sizes), sizes.sum() * np.arange(1, n) / n, side="left") + 1
    bounds = sorted(set([0, *ends.tolist(), len(sizes)]))
    return [[a, b] for a, b in zip(bounds[:-1], bounds[1:])]


def shard_count(gz_bytes: float, cfg) -> tuple[int, str]:
    """Shards so that each holds at most SHARD_TARGET_MB of gzip-equivalent input and its
    estimated build peak fits MEMORY_SHARE of the worker budget."""
    if cfg.n_shards:
        return cfg.n_shards, "config"
    room_mb = cfg.worker_memory_gb * 1024 * MEMORY_SHARE - BASE_RSS_MB
    if room_mb < 64:
        raise ValueError(f"WORKER_MEMORY_GB={cfg.worker_memory_gb:g} leaves no room to build a "
                         f"shard (~{BASE_RSS_MB} MB of libraries, and {MEMORY_SHARE:.0%} of the "
                         "budget is usable); give workers at least 1 GB")
    by_size = math.ceil(gz_bytes / (cfg.shard_target_mb << 20))
    by_memory = math.ceil(gz_bytes * RSS_PER_GZ_BYTE / (room_mb * 2**20))
    by_workers = cfg.plan_workers * SHARDS_PER_WORKER
    n = max(cfg.min_shards, by_size, by_memory, by_workers)
    # the first bound, in this order, that reaches n set it
    why = next(w for w, b in (("min", cfg.min_shards), ("workers", by_workers),
                              ("memory", by_memory), ("size", by_size)) if b == n)
    # Rounded up to a multiple of the workers, so the build stage's last wave is full: demo
    # x20 on 2 workers had 9 shards, and its build stage took 16.3 s against 15.0 s of
    # unit-seconds / 2 (one worker built the ninth alone). Smaller shards only: the
    # memory bound still holds.
    return -(-n // cfg.plan_workers) * cfg.plan_workers, why


def make_plan(cfg) -> Plan:
    data_dir = cfg.data_dir
    if not str(data_dir) or not data_dir.is_dir():
        raise ValueError(f"DATA_DIR {str(data_dir)!r} is not a directory; expected the MIMIC-IV "
                         "root holding hosp/ and icu/ (and note/), or use --demo")
    if not (data_dir / "hosp").is_dir():
        found = sorted(p.name for p in data_dir.iterdir())[:10]
        raise ValueError(f"DATA_DIR {data_dir}: no hosp/ folder (found: {', '.join(found) or 'nothing'}); "
                         "expected the MIMIC-IV root holding hosp/, icu/, note/")
    missing, found, found_dicts = [], {}, {}
    for t in TABLES:
        path = find_table(data_dir, t.module, t.name)
        if path is None:
            if t.required:
                raise ValueError(f"DATA_DIR {data_dir}: core table {t.module}/{t.name} is "
                                 "missing (looked for .csv.gz, .csv, .parquet)")
            missing.append(f"{t.module}/{t.name}")
            continue
        resolve_columns(path, read_header(path), t.columns)  # fail now, not an hour in
        found[t.name] = path
    for d in DICTIONARIES:
        path = find_table(data_dir, d.module, d.name)
        if path is None:
            missing.append(f"{d.module}/{d.name}")
            continue
        resolve_columns(path, read_header(path), d.columns)
        found_dicts[d.name] = path
    # Every input hashed whole (read.fingerprint), in threads; a later build finds the hashes
    # in INDEX_DIR and pays a stat per file.
    memo = hash_memo_dir(cfg)
    fps = fingerprints([*found.values(), *found_dicts.values()], memo)
    tables = dict(zip(found, fps))
    dictionaries = dict(zip(found_dicts, fps[len(found):]))
    gz_of = {}
    for name, path in found.items():
        suffix = next(x for x in GZ_EQUIVALENT if path.name.endswith(x))
        gz_of[name] = tables[name]["bytes"] * GZ_EQUIVALENT[suffix]
    # EXTRA_TABLES: checked now (names, keys, columns, a parsed sample), and partitioned as
    # any table; their fingerprints carry the spec, so resume and caches see its changes
    for name, fp in plan_spec(getattr(cfg, "extra_tables", ""), tables, memo).items():
        tables[name] = fp
        gz_of[name] = fp["bytes"] * next(v for x, v in GZ_EQUIVALENT.items()
                                         if fp["path"].endswith(x))
    gz_bytes = float(sum(gz_of.values()))
    n_shards, why = shard_count(gz_bytes, cfg)
    per_shard = gz_bytes / n_shards
    unit_mb = unit_size_mb(gz_bytes, cfg)
    parts, row_groups = {}, {}
    for name, fp in tables.items():
        parts[name] = max(1, math.ceil(gz_of[name] / (unit_mb * 2**20)))
        if parts[name] == 2 and not cfg.partition_unit_mb and not fp["path"].endswith(".parquet"):
            # Cut in two, a CSV table pays a scan (one more pass over all its text) and a
            # unit's fixed costs to shorten its longest unit from two sizes to one; whole, it
            # still ends within the biggest table's scan plus unit, stage 1's critical path
            # at any worker count. Demo x20 cut for 16 workers: 4 such tables, whose scans
            # took 0.52 CPU-s and whose second units' fixed costs ~0.2 s more.
            parts[name] = 1
        if fp["path"].endswith(".parquet"):
            row_groups[name] = row_group_ranges(Path(fp["path"]), parts[name])
            parts[name] = len(row_groups[name])
    # Stage 1's critical path is the biggest cut table's scan (one sequential pass, about
    # SCAN_SHARE of the table's own parse, so 0.1 n units for a table of n units) plus its
    # longest unit. While that scan is comparable to a unit, halving the table's units
    # shortens the path by half a unit for n more units: cut for 16 workers, demo x20's
    # chartevents scan (1.0 s) and longest unit (1.9 s) took stage 1 a third past its ideal.
    # A longer scan dominates (the index cache removes it), and more units would only cost.
    scanned = [t for t in parts if parts[t] > 1 and t not in row_groups]
    if scanned:
        big = max(scanned, key=lambda t: (gz_of[t], t))
        if 0.5 <= SCAN_SHARE * parts[big] <= 2:
            parts[big] *= 2
    return Plan(tables, dictionaries, missing, n_shards, cfg.output_hash(),
                shard_input_mb=round(per_shard / 2**20, 1),
                est_peak_mb=round(BASE_RSS_MB + per_shard * RSS_PER_GZ_BYTE / 2**20),
                why=why, parts=parts, row_groups=row_groups, unit_mb=unit_mb,
                config=cfg.hash_values())


def hash_memo_dir(cfg) -> Path | None:
    """Where input hashes are remembered: INDEX_DIR/_hashes (INDEX_DIR is kept across
    builds); None when no INDEX_DIR is set (a bare Config in a test)."""
    index_dir = getattr(cfg, "index_dir", None)
    if index_dir is None or str(index_dir) in ("", "."):
        return None
    return Path(index_dir) / "_hashes"


def plan_path(cfg) -> Path:
    return cfg.work_dir / "plan.json"


def load_plan(cfg) -> Plan:
    path = plan_path(cfg)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no build plan; run the build (or its plan step) first") from e
    if data.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path}: plan format {data.get('format')!r}, expected {PLAN_FORMAT}")
    data.pop("format")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(Plan)})
    if unknown:
        raise ValueError(f"{path}: unknown plan field(s) {', '.join(unknown)}, written by "
                         "another release of this tool; rebuild with --overwrite")
    return Plan(**data)


def identity(fp: dict) -> dict:
    """A fingerprint without its path: a moved DATA_DIR is the same input."""
    return {k: v for k, v in fp.items() if k != "path"}


def input_differences(hash_was: str, hash_now: str, was: tuple[dict, dict],
                      now: tuple[dict, dict], settings: list[str] | None = None) -> list[str]:
    """What differs between two (config hash, (tables, dictionaries) fingerprints) states.
    `settings`: the changed settings by name (config.setting_differences of the values each
    hash was made of, e.g. "OUTLIER_K 3.0 -> 2.5"), named instead of the hashes; the
    hashes are named when they are not known (a plan or version older than them)."""
    problems = []
    if hash_was != hash_now:
        problems += settings or [f"config hash {hash_was} -> {hash_now}"]
    for a, b in zip(was, now):
        for name in sorted(set(a) | set(b)):
            fa, fb = identity(a.get(name, {})), identity(b.get(name, {}))
            if fa == fb:
                continue
            if fa and fb and "xxh3_128" in fb and "xxh3_128" not in fa:
                # the first-and-last-MiB hash of releases before the whole-file one: nothing
                # tells whether the file is the same, so it counts as changed
                problems.append(f"input {name} was fingerprinted by an older release "
                                "(no whole-file hash), cannot be compared")
                continue
            problems.append(f"input {name} " + ("added" if not fa else "removed" if not fb
                                                else "changed"))
    return problems


def same_inputs(old: Plan, new: Plan, settings: list[str] | None = None) -> list[str]:
    """Differences that make an existing work directory unusable for this run. How the work is
    cut (shards, units) is not one: it never changes the output, so a resumed build keeps the
    plan it started with, whatever MAX_CPUS or PLAN_WORKERS it is resumed with. `settings`:
    the changed settings by name, as for `input_differences`."""
    return input_differences(old.config_hash, new.config_hash,
                             (old.tables, old.dictionaries), (new.tables, new.dictionaries),
                             settings)
