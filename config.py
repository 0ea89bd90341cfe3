"""User-editable defaults for build_patient_files.py, and the one typed Config they load into.

Edit the UPPER_CASE defaults below, or override any of them with an environment variable of
the same name, or with the matching command-line flag (flags win over the environment, the
environment wins over this file). `load()` is the only place that reads `os.environ`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# ---- defaults (edit these) --------------------------------------------------------------------
DATA_DIR = ""  # raw MIMIC-IV root holding hosp/, icu/, note/; empty means "use --demo or set it"
TRAJECTORY_VERSION = "v1"  # name of the output version directory under OUT_DIR
MAX_CPUS = min(20, os.cpu_count() or 1)  # Dask workers; 20 caps the scheduler overhead on big nodes
OUT_DIR = "trajectories"  # where versions are published
WORK_DIR = ""  # intermediate files; empty means OUT_DIR/_work/<version>
N_SHARDS = 0  # patient shards; 0 = auto from input size (never from MAX_CPUS)
SHARD_TARGET_MB = 48  # compressed event-table input per shard for the auto plan
MIN_SHARDS = 4  # even a tiny input gets this many shards so workers have parallel work
PARTITION_BUFFER_MB = 256  # events a partition unit holds in memory before it flushes a file
CSV_BLOCK_MB = 16  # pyarrow CSV block size: the streaming unit of decompression + parsing
ZSTD_LEVEL = 3  # level 3 is zstd's default: ~4x on records at >300 MB/s; 19 gains ~10% at 20x cost
WORKER_MEMORY_GB = 4.0  # Dask memory_limit per worker; stage budgets are sized below this
SCHEDULER = ""  # address of an existing Dask scheduler; empty starts a LocalCluster
RUNNER = "dask"  # "dask" (LocalCluster or SCHEDULER) or "serial" (in-process, for debugging)



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
    worker_memory_gb: float  # Dask worker memory limit
    scheduler: str  # existing Dask scheduler address, "" = LocalCluster
    runner: str  # "dask" or "serial"
    overwrite: bool = False  # republish over a finished version
    extra: dict = field(default_factory=dict)  # reserved for later stages' options

    @property
    def version_dir(self) -> Path:
        return self.out_dir / self.trajectory_version

    def output_hash(self) -> str:
        """Hash of the fields that change output bytes (not MAX_CPUS, paths or runners)."""
        keys = ("trajectory_version", "n_shards", "shard_target_mb", "min_shards", "zstd_level")
        blob = json.dumps({k: getattr(self, k) for k in keys} | {"extra": self.extra},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(self).items()}


_TYPES = {
    "DATA_DIR": str, "TRAJECTORY_VERSION": str, "MAX_CPUS": int, "OUT_DIR": str, "WORK_DIR": str,
    "N_SHARDS": int, "SHARD_TARGET_MB": int, "MIN_SHARDS": int, "PARTITION_BUFFER_MB": int,
    "CSV_BLOCK_MB": int, "ZSTD_LEVEL": int, "WORKER_MEMORY_GB": float, "SCHEDULER": str,
    "RUNNER": str,
}


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
                raise ValueError(f"environment variable {key}: expected {typ.__name__}, "
                                 f"got {env[key]!r}") from e
    overwrite = False
    for key, v in (overrides or {}).items():
        if key == "OVERWRITE":
            overwrite = bool(v)
        elif v is not None:
            if key not in _TYPES:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(_TYPES)}")
            values[key] = _TYPES[key](v)
    return _validate(values, overwrite)


def _validate(v: dict, overwrite: bool) -> Config:
    def positive(key):
        if v[key] <= 0:
            raise ValueError(f"{key} must be > 0, got {v[key]!r}")

    for key in ("MAX_CPUS", "SHARD_TARGET_MB", "MIN_SHARDS", "PARTITION_BUFFER_MB",
                "CSV_BLOCK_MB", "WORKER_MEMORY_GB"):
        positive(key)
    if v["N_SHARDS"] < 0:
        raise ValueError(f"N_SHARDS must be >= 0 (0 = auto), got {v['N_SHARDS']!r}")
    if not 1 <= v["ZSTD_LEVEL"] <= 22:
        raise ValueError(f"ZSTD_LEVEL must be in 1..22, got {v['ZSTD_LEVEL']!r}")
    if v["RUNNER"] not in ("dask", "serial"):
        raise ValueError(f"RUNNER must be 'dask' or 'serial', got {v['RUNNER']!r}")
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
        csv_block_mb=v["CSV_BLOCK_MB"], zstd_level=v["ZSTD_LEVEL"],
        worker_memory_gb=v["WORKER_MEMORY_GB"], scheduler=v["SCHEDULER"], runner=v["RUNNER"],
        overwrite=overwrite,
    )
