"""User-editable defaults for build_patient_files.py, and the one typed Config they load into.

Edit the UPPER_CASE defaults below, or override any of them with an environment variable of
the same name, or with the matching command-line flag (flags win over the environment, the
environment wins over this file). `load()` is the only place that reads `os.environ`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

# ---- defaults (edit these) --------------------------------------------------------------------
DATA_DIR = ""  # raw MIMIC-IV root holding hosp/, icu/, note/; empty means "use --demo or set it"
TRAJECTORY_VERSION = "v1"  # name of the output version directory under OUT_DIR
MAX_CPUS = min(20, os.cpu_count() or 1)  # Dask workers; 20 caps the scheduler overhead on big nodes
OUT_DIR = "trajectories"  # where versions are published
WORK_DIR = ""  # intermediate files; empty means OUT_DIR/_work/<version>
N_SHARDS = 0  # patient shards; 0 = auto from input size (never from MAX_CPUS)
SHARD_TARGET_MB = 12  # gzip-equivalent input per shard for the auto plan (~0.9M events). A shard's build holds ~270 bytes an event at its peak: demo x800's 2M-event shards (24) peaked at 1.13 GB in a Dask worker, heavier than the 2M-event patient's own shard, so memory grew with input size
MIN_SHARDS = 4  # even a tiny input gets this many shards so workers have parallel work
PARTITION_UNIT_MB = 0.0  # gzip-equivalent input per partition unit (big tables are cut); 0 = auto from PLAN_WORKERS
PLAN_WORKERS = 0  # workers the plan is cut for (units, shards); 0 = MAX_CPUS; never changes the output
INDEX_DIR = ""  # gzip seek-point indexes, kept across builds; empty means OUT_DIR/_index
GZINDEX_THREADS = 0  # threads a scan finds a .csv.gz's seek points with; 1 = one zlib-ng pass; 0 = auto: the table's share of MAX_CPUS (idle while cut tables wait for their scans), at least 8, else 1
CACHE_DIR = ""  # stage-1 outputs shared by versions of the same inputs; empty means OUT_DIR/_cache
# Each shard's events as read, placed and sorted, kept in CACHE_DIR so that a later version of
# the same inputs skips half its build stage: "always", "never", or "auto": from the second
# version of the same inputs on (a first build does not pay for them: demo x800's were 5.9 GB,
# 0.54x the input, and 8% of the build stage's unit-seconds)
KEEP_SORTED = "auto"
PARTITION_BUFFER_MB = 64  # events a partition unit holds before it flushes a file (128: demo x800's emar_detail units peaked 1.15 GB alone, 64: 0.95)
CSV_BLOCK_MB = 4  # CSV streaming block: pyarrow's reader holds ~50 blocks ahead (emar_detail of demo x800: +148 MB at 2 MiB, +424 at 8, +583 at 16); 8 MiB was ~4% faster on chartevents
LAYOUT = "files"  # "files": patients/<shard>/<id>.msgpack.zst; "shards": one packed file per shard
ZSTD_LEVEL = 3  # level 3 is zstd's default: ~4x on records at >300 MB/s; 19 gains ~10% at 20x cost
WORKER_MEMORY_GB = 4.0  # Dask memory_limit per worker; stage budgets are sized below this
SCHEDULER = ""  # address of an existing Dask scheduler; empty starts a LocalCluster
RUNNER = "dask"  # "dask" (LocalCluster or SCHEDULER) or "serial" (in-process, for debugging)
CLUSTER = "local"  # where Dask workers run: "local" processes or "slurm" jobs (dask-jobqueue)
# ---- cleaning (docs: README "Cleaning") ----
OUTLIER_METHOD = "iqr"  # "iqr", "mad" or "none": per-code thresholds from whole-dataset sketches
OUTLIER_K = 3.0  # fence width: Tukey's "far out" 3 x IQR (or 3 scaled MADs) flags ~0.1% of normal data
OUTLIER_MIN_COUNT = 50  # codes seen fewer times get no statistical threshold (quartiles too noisy)
CLIP_TO_RANGE = False  # clip concept values outside plausible ranges instead of only flagging them
DROP_RULES = ""  # comma-separated rules that drop events instead of flagging them (lossless: none)
DEATH_MARGIN_HOURS = 24.0  # events up to this long after the day of death are not flagged
STAY_MARGIN_HOURS = 1.0  # ICU charting is often timed minutes outside intime/outtime
QC_MAX_FLAG_RATE = 0.5  # a table with more of its events flagged by one rule fails the run
QC_MAX_DROP_RATE = 0.2  # a table with more of its rows dropped by cleaning rules fails the run
QC_ON_FAIL = "error"  # "error" (nothing published) or "quarantine" (published, table excluded on read)
# ---- windows ----
WINDOW_STEP_MINUTES = 60  # grid step of the per-stay aggregates (mimic3-benchmarks, YAIB use 1 h)
WINDOW_MAX = 720  # at most 30 days of hourly windows per stay; longer stays keep the first 720
WINDOW_ADMISSIONS = False  # also build grids per hospital admission
# Flag rules whose events window statistics leave out ("none": keep every event). Impossible
# values and repeated rows never describe the patient; `outlier` is not in by default: a value
# far from a code's quartiles is often the sickest patients' real one (creatinine in renal failure).
WINDOW_EXCLUDE = "range,duplicate"
# ---- export share (docs/SHARE.md) ----
DEID_MIN_PATIENTS = 10  # codes of fewer patients are replaced by their prefix in a shared copy
# ---- export meds (docs/MEDS.md) ----
MEDS_SHARD_SUBJECTS = 1000  # subjects per data file, the community's n_subjects_per_shard (MIMIC_IV_MEDS); 0 = no limit
MEDS_SHARD_MB = 0.0  # records' MB per data file (the parquet is ~0.85x on the demo), a bound for note-heavy subjects; 0 = none, as the community
# ---- your own tables (README "Your own tables", docs/EXTRA_TABLES.md) ----
EXTRA_TABLES = ""  # TOML spec of tables of your own added to every trajectory; empty = none



@dataclass(frozen=True)
class Config:
    data_dir: Path  # raw MIMIC-IV root (hosp/, icu/, note/)
    trajectory_version: str  # output version name
    max_cpus: int  # number of Dask workers (never changes the output)
    out_dir: Path  # root of published versions
    work_dir: Path  # intermediate partitioned data and done-markers for this version
    n_shards: int  # patient shards, 0 = auto (resolved by the planner, recorded in the plan)
    shard_target_mb: int  # compressed input bytes per shard when n_shards is auto
    min_shards: int  # lower bound of the auto shard count
    partition_buffer_mb: int  # in-memory events per partition unit before a flush
    csv_block_mb: int  # CSV streaming block size
    zstd_level: int  # record compression level
    layout: str  # "files" or "shards" (same record bytes, different containers)
    worker_memory_gb: float  # Dask worker memory limit
    scheduler: str  # existing Dask scheduler address, "" = LocalCluster
    runner: str  # "dask" or "serial"
    cluster: str  # "local" or "slurm" (dask-jobqueue)
    outlier_method: str = "iqr"  # "iqr", "mad" or "none"
    outlier_k: float = 3.0  # outlier fence width (IQRs or scaled MADs)
    outlier_min_count: int = 50  # minimum observations of a code for a threshold
    clip_to_range: bool = False  # clip out-of-range concept values instead of flag only
    drop_rules: tuple = ()  # rules that drop rather than flag
    death_margin_hours: float = 24.0  # tolerance after the day of death
    stay_margin_hours: float = 1.0  # tolerance around ICU intime/outtime
    qc_max_flag_rate: float = 0.5  # per table and rule, else the run fails / quarantines
    qc_max_drop_rate: float = 0.2  # per table, cleaning drops, else fail / quarantine
    qc_on_fail: str = "error"  # "error" or "quarantine"
    window_step_minutes: int = 60  # per-stay grid step
    window_max: int = 720  # most windows per stay
    window_admissions: bool = False  # grids per admission too
    window_exclude: tuple = ("range", "duplicate")  # flag rules left out of window statistics
    overwrite: bool = False  # republish over a finished version
    partition_unit_mb: float = 0.0  # gzip-equivalent input per partition unit, 0 = auto
    plan_workers: int = 0  # workers the plan is cut for, 0 = max_cpus (never changes output)
    index_dir: Path = Path("")  # gzip seek-point index cache (resolved: OUT_DIR/_index)
    gzindex_threads: int = 0  # threads of a scan's seek-point pass, 0 = auto (jobs.scan)
    cache_dir: Path = Path("")  # stage-1 outputs by content key (resolved: OUT_DIR/_cache)
    deid_min_patients: int = 10  # export share: rarer codes are generalised to their prefix
    meds_shard_subjects: int = 1000  # export meds: subjects per data file, 0 = no limit
    meds_shard_mb: float = 0.0  # export meds: records' MB per data file, 0 = no limit
    extra_tables: Path = Path("")  # user tables' TOML spec, "" = none (content kept in the plan)
    keep_sorted: str = "auto"  # sorted shards kept in CACHE_DIR: "auto", "always" or "never"

    @property
    def version_dir(self) -> Path:
        return self.out_dir / self.trajectory_version

    def output_hash(self) -> str:
        """Hash of the fields that change output bytes (not MAX_CPUS, paths or runners)."""
        return _output_hash(self)

    def hash_values(self) -> dict:
        """The settings the output hash is made of (`hash_field_values`)."""
        return hash_field_values(self)

    def _hash_fields(self) -> str:
        blob = json.dumps(hash_field_values(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(self).items()}


# Fields that never change a record's bytes, so not in the output hash: places, workers,
# memory and how the work is cut or run.
_NOT_HASHED = frozenset({
    "data_dir", "out_dir", "work_dir", "max_cpus", "partition_buffer_mb", "partition_unit_mb",
    "plan_workers", "index_dir", "gzindex_threads", "cache_dir", "csv_block_mb", "worker_memory_gb",
    "scheduler", "runner", "cluster", "overwrite", "deid_min_patients", "meds_shard_subjects",
    "meds_shard_mb", "keep_sorted",
    # its content is in the plan's input fingerprints, as the data files are
    "extra_tables"})
RECORD_FORMAT_KEY = "record_format"
_MISSING = object()


def hash_field_values(cfg: "Config") -> dict:
    """The settings that decide the output's bytes, by field name, as JSON values (tuples as
    lists), plus the record format: what the output hash hashes, and what a refusal names."""
    from trajectory.record import FORMAT  # another record format is another output: a
    # rebuild must not find the old version finished nor resume its units
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if f.name not in _NOT_HASHED}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return {**values, RECORD_FORMAT_KEY: FORMAT}


def stored_hash_values(stored: dict, record_format) -> dict:
    """`hash_field_values` of a config kept as `Config.to_json()` (dataset.json's "config",
    with its "record_format" beside it): the hashed fields it has. A field it lacks (written
    before the field existed) is left out, and named as unknown by `setting_differences`."""
    hashed = {f.name for f in dataclasses.fields(Config)} - _NOT_HASHED
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in stored.items()
              if k in hashed}
    return {**values, RECORD_FORMAT_KEY: record_format} if record_format is not None else values


def setting_differences(old: dict, new: dict) -> list[str]:
    """What changed between two `hash_field_values`, in the user's spelling, e.g.
    ["OUTLIER_K 3.0 -> 2.5", "WINDOW_EXCLUDE range,duplicate -> none"]; settings in the order
    config.py lists them, the record format last."""
    order = [k.lower() for k in _TYPES] + [RECORD_FORMAT_KEY]
    keys = sorted(set(old) | set(new), key=lambda k: (order.index(k) if k in order
                                                      else len(order), k))
    return [f"{_setting_name(k)} {_spelling(k, old)} -> {_spelling(k, new)}"
            for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)]


def _setting_name(field: str) -> str:
    if field == RECORD_FORMAT_KEY:
        return "record format"
    return field.upper() if field.upper() in _TYPES else field


# rule lists whose parser takes "none" for the empty list (_rule_list); DROP_RULES does not
_EMPTY_RULES = {"window_exclude": "none"}


def _spelling(field: str, values: dict) -> str:
    """A value as a user would write it in the environment: true/false, comma-separated
    rules ("none" where the setting takes it), "" for empty; "(not recorded)" when absent."""
    if field not in values:
        return "(not recorded)"
    v = values[field]
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) if v else _EMPTY_RULES.get(field, '""')
    return str(v) if v != "" else '""'


@functools.lru_cache(maxsize=32)
def _output_hash(cfg: "Config") -> str:
    # every done-marker read checks it: 116 markers cost finalize 0.05 s of asdict + json
    return cfg._hash_fields()


_PATH_FIELDS = ("data_dir", "out_dir", "work_dir", "extra_tables", "index_dir", "cache_dir")


def from_json(d: dict) -> Config:
    """The inverse of `Config.to_json()` (e.g. WORK_DIR/config.json read by a SLURM task)."""
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"config JSON: unknown field(s) {unknown}")
    values = dict(d)
    for key in _PATH_FIELDS:
        if key in values:
            values[key] = Path(values[key])
    for key in ("drop_rules", "window_exclude"):
        if key in values:
            values[key] = tuple(values[key])
    return Config(**values)


def _bool(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false/1/0), got {v!r}")


_TYPES = {
    "DATA_DIR": str, "TRAJECTORY_VERSION": str, "MAX_CPUS": int, "OUT_DIR": str, "WORK_DIR": str,
    "N_SHARDS": int, "SHARD_TARGET_MB": int, "PARTITION_UNIT_MB": float, "PLAN_WORKERS": int,
    "INDEX_DIR": str, "GZINDEX_THREADS": int, "CACHE_DIR": str, "MIN_SHARDS": int, "PARTITION_BUFFER_MB": int,
    "CSV_BLOCK_MB": int, "ZSTD_LEVEL": int, "LAYOUT": str, "WORKER_MEMORY_GB": float, "SCHEDULER": str,
    "RUNNER": str, "CLUSTER": str, "OUTLIER_METHOD": str, "OUTLIER_K": float, "OUTLIER_MIN_COUNT": int,
    "CLIP_TO_RANGE": _bool, "DROP_RULES": str, "DEATH_MARGIN_HOURS": float,
    "STAY_MARGIN_HOURS": float, "QC_MAX_FLAG_RATE": float, "QC_MAX_DROP_RATE": float,
    "QC_ON_FAIL": str, "WINDOW_STEP_MINUTES": int, "WINDOW_MAX": int,
    "WINDOW_ADMISSIONS": _bool, "WINDOW_EXCLUDE": str, "DEID_MIN_PATIENTS": int,
    "EXTRA_TABLES": str, "MEDS_SHARD_SUBJECTS": int, "MEDS_SHARD_MB": float,
    "KEEP_SORTED": str,
}
RULES = ("range", "outlier", "duplicate", "before_birth", "after_death", "outside_stay",
         "admission_order")


def defaults() -> dict:
    return {k: globals()[k] for k in _TYPES}


def load(overrides: dict | None = None, environ: dict | None = None) -> Config:
    """config.py defaults < environment < overrides (command-line flags); validated."""
    env = os.environ if environ is None else environ
    values = defaults()
    for key, typ in _TYPES.items():
        if key in env and env[key] != "":
            try:
                values[key] = typ(env[key])
            except ValueError as e:
                raise ValueError(f"environment variable {key}: expected {typ.__name__.strip('_')}, "
                                 f"got {env[key]!r}") from e
    overwrite = False
    for key, v in (overrides or {}).items():
        if key == "OVERWRITE":
            overwrite = bool(v)
        elif v is not None:
            if key not in _TYPES:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(_TYPES)}")
            try:
                values[key] = _TYPES[key](v)
            except ValueError as e:
                raise ValueError(f"setting {key}: {e}") from e
    return _validate(values, overwrite)


def _rule_list(key: str, text: str) -> tuple:
    """Comma-separated rule names -> a tuple in RULES order without repeats, so equivalent
    spellings ("duplicate,range" and "range,duplicate") give one output hash; "none" or ""
    is the empty tuple."""
    names = [r.strip() for r in str(text).split(",") if r.strip()]
    if names == ["none"]:
        return ()
    unknown = [r for r in names if r not in RULES]
    if unknown:
        raise ValueError(f"{key}: unknown rule(s) {unknown} in {text!r}; known: "
                         f"{', '.join(RULES)} (or 'none')")
    return tuple(r for r in RULES if r in names)


def _extra_tables(text: str) -> Path:
    """EXTRA_TABLES: "" (none) or an existing file; its entries are checked by the plan."""
    if not text:
        return Path("")
    path = Path(text).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"EXTRA_TABLES {text!r}: no such file; expected a TOML spec of your own "
                         "tables (docs/EXTRA_TABLES.md)")
    return path


def _validate(v: dict, overwrite: bool) -> Config:
    def positive(key):
        if v[key] <= 0:
            raise ValueError(f"{key} must be > 0, got {v[key]!r}")

    for key in ("MAX_CPUS", "SHARD_TARGET_MB", "MIN_SHARDS", "PARTITION_BUFFER_MB",
                "CSV_BLOCK_MB", "WORKER_MEMORY_GB"):
        positive(key)
    for key in ("PARTITION_UNIT_MB", "PLAN_WORKERS", "GZINDEX_THREADS"):
        if v[key] < 0:
            raise ValueError(f"{key} must be >= 0 (0 = auto), got {v[key]!r}")
    if v["N_SHARDS"] < 0:
        raise ValueError(f"N_SHARDS must be >= 0 (0 = auto), got {v['N_SHARDS']!r}")
    if not 1 <= v["ZSTD_LEVEL"] <= 22:
        raise ValueError(f"ZSTD_LEVEL must be in 1..22, got {v['ZSTD_LEVEL']!r}")
    if v["LAYOUT"] not in ("files", "shards"):
        raise ValueError(f"LAYOUT must be 'files' or 'shards', got {v['LAYOUT']!r}")
    if v["CLUSTER"] not in ("local", "slurm"):
        raise ValueError(f"CLUSTER must be 'local' or 'slurm', got {v['CLUSTER']!r}")
    if v["RUNNER"] not in ("dask", "serial"):
        raise ValueError(f"RUNNER must be 'dask' or 'serial', got {v['RUNNER']!r}")
    if v["OUTLIER_METHOD"] not in ("iqr", "mad", "none"):
        raise ValueError(f"OUTLIER_METHOD must be 'iqr', 'mad' or 'none', got {v['OUTLIER_METHOD']!r}")
    if v["KEEP_SORTED"] not in ("auto", "always", "never"):
        raise ValueError(f"KEEP_SORTED must be 'auto', 'always' or 'never', got "
                         f"{v['KEEP_SORTED']!r}")
    if v["QC_ON_FAIL"] not in ("error", "quarantine"):
        raise ValueError(f"QC_ON_FAIL must be 'error' or 'quarantine', got {v['QC_ON_FAIL']!r}")
    drop_rules = tuple(r.strip() for r in v["DROP_RULES"].split(",") if r.strip())
    unknown = [r for r in drop_rules if r not in RULES]
    if unknown:
        raise ValueError(f"DROP_RULES: unknown rule(s) {unknown}; known: {', '.join(RULES)}")
    window_exclude = _rule_list("WINDOW_EXCLUDE", v["WINDOW_EXCLUDE"])
    for key in ("OUTLIER_K", "WINDOW_STEP_MINUTES", "WINDOW_MAX", "DEID_MIN_PATIENTS"):
        positive(key)
    for key in ("QC_MAX_FLAG_RATE", "QC_MAX_DROP_RATE"):
        if not 0 <= v[key] <= 1:
            raise ValueError(f"{key} must be in [0, 1], got {v[key]!r}")
    for key in ("DEATH_MARGIN_HOURS", "STAY_MARGIN_HOURS", "OUTLIER_MIN_COUNT",
                "MEDS_SHARD_SUBJECTS", "MEDS_SHARD_MB"):
        if v[key] < 0:
            raise ValueError(f"{key} must be >= 0, got {v[key]!r}")
    name = v["TRAJECTORY_VERSION"]
    if not name or "/" in name or name.startswith((".", "_")):
        raise ValueError(f"TRAJECTORY_VERSION must be a plain directory name, got {name!r}")
    out_dir = Path(v["OUT_DIR"]).expanduser().resolve()
    work = (Path(v["WORK_DIR"]).expanduser().resolve() if v["WORK_DIR"]
            else out_dir / "_work" / name)
    return Config(
        data_dir=Path(v["DATA_DIR"]).expanduser().resolve() if v["DATA_DIR"] else Path(""),
        trajectory_version=name, max_cpus=v["MAX_CPUS"], out_dir=out_dir, work_dir=work,
        n_shards=v["N_SHARDS"], shard_target_mb=v["SHARD_TARGET_MB"],
        min_shards=v["MIN_SHARDS"], partition_buffer_mb=v["PARTITION_BUFFER_MB"],
        csv_block_mb=v["CSV_BLOCK_MB"], zstd_level=v["ZSTD_LEVEL"], layout=v["LAYOUT"],
        worker_memory_gb=v["WORKER_MEMORY_GB"], scheduler=v["SCHEDULER"], runner=v["RUNNER"],
        cluster=v["CLUSTER"], outlier_method=v["OUTLIER_METHOD"], outlier_k=v["OUTLIER_K"],
        outlier_min_count=v["OUTLIER_MIN_COUNT"], clip_to_range=v["CLIP_TO_RANGE"],
        drop_rules=drop_rules, death_margin_hours=v["DEATH_MARGIN_HOURS"],
        stay_margin_hours=v["STAY_MARGIN_HOURS"], qc_max_flag_rate=v["QC_MAX_FLAG_RATE"],
        qc_max_drop_rate=v["QC_MAX_DROP_RATE"], qc_on_fail=v["QC_ON_FAIL"],
        window_step_minutes=v["WINDOW_STEP_MINUTES"], window_max=v["WINDOW_MAX"],
        window_admissions=v["WINDOW_ADMISSIONS"], window_exclude=window_exclude,
        overwrite=overwrite,
        partition_unit_mb=v["PARTITION_UNIT_MB"],
        plan_workers=v["PLAN_WORKERS"] or v["MAX_CPUS"],
        index_dir=(Path(v["INDEX_DIR"]).expanduser().resolve() if v["INDEX_DIR"]
                   else out_dir / "_index"),
        gzindex_threads=v["GZINDEX_THREADS"],
        cache_dir=(Path(v["CACHE_DIR"]).expanduser().resolve() if v["CACHE_DIR"]
                   else out_dir / "_cache"),
        deid_min_patients=v["DEID_MIN_PATIENTS"],
        meds_shard_subjects=v["MEDS_SHARD_SUBJECTS"], meds_shard_mb=v["MEDS_SHARD_MB"],
        extra_tables=_extra_tables(v["EXTRA_TABLES"]), keep_sorted=v["KEEP_SORTED"],
    )
