"""What every stage step shares: done-markers (atomic writes live in trajectory.atomic).

A unit writes its outputs under temporary names, renames them into place, and only then writes
its done-marker (itself atomically). A marker exists only for a finished unit, so a crash at any
point leaves either no marker (the unit reruns from scratch) or a complete unit.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import gc
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import config
from trajectory.atomic import atomic_write_json

try:  # glibc's malloc_trim hands freed heap pages back; absent elsewhere (musl, macOS)
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _LIBC.malloc_trim
except (OSError, AttributeError):
    _LIBC = None


def publish_dir(tmp: Path, final: Path) -> None:
    """Replace `final` by the finished directory `tmp` (a stale unfinished `final` from a killed
    run is removed first: without a done-marker it was never valid)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def done_path(cfg, stage: str, unit: str) -> Path:
    return cfg.work_dir / "done" / stage / f"{unit}.json"


def read_done(cfg, stage: str, unit: str) -> dict | None:
    """The unit's marker if it finished under this config; a marker from another config is
    refused, because mixing outputs of two configs would publish an inconsistent version."""
    path = done_path(cfg, stage, unit)
    try:
        marker = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt done-marker ({e}); delete it to redo the unit") from e
    if marker.get("config_hash") != cfg.output_hash():
        raise ValueError(f"{path}: unit was built with config {marker.get('config_hash')}, this "
                         f"run has {cfg.output_hash()}{_named_changes(cfg, marker)}; use "
                         "--overwrite or another WORK_DIR")
    return marker


def _named_changes(cfg, marker: dict) -> str:
    """The settings that differ from the unit's, named from WORK_DIR/plan.json when that plan
    was made with the unit's config (a plan keeps the settings its hash was made of); ""
    when they cannot be known: an older plan, or none readable."""
    try:
        plan = json.loads((cfg.work_dir / "plan.json").read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(plan, dict) or plan.get("config_hash") != marker.get("config_hash") \
            or not isinstance(plan.get("config"), dict) or not plan["config"]:
        return ""
    named = config.setting_differences(plan["config"], cfg.hash_values())
    return f" ({'; '.join(named)})" if named else ""


def fresh_unit_memory() -> float | None:
    """Start a unit's memory afresh, and its peak-RSS count with it; returns the resident
    memory the unit starts from (MiB).

    A worker runs units one after another (one thread). What the last unit freed stayed
    resident: pyarrow's pool and glibc's heap keep freed pages for reuse, and the next unit's
    peak stood on them. In a Dask worker, demo x100's shards (10.8 MB of input) started at
    490-580 MB and peaked at 920-970 MB; the same shard in a fresh process peaked at 560. Both
    are handed back here (pool.release_unused, malloc_trim: ~10 ms). Then "5" to
    /proc/self/clear_refs resets VmHWM (Linux), so `peak_rss_mb` after the unit is this
    unit's peak, not the worker's lifetime one."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: peak_rss_mb then reports the process's lifetime peak
    return _status_mb("VmRSS:")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory since `fresh_unit_memory` (MiB), None where the
    platform does not say."""
    return _status_mb("VmHWM:")


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def array_to_json(a: np.ndarray) -> dict:
    """A numeric array as a marker field: dtype, shape and its bytes in base64. As a JSON list
    of numbers, demo x800's 896 build markers (a shard's code counts and concept histogram,
    ~9k numbers each) took finalize 2.0 s to parse, the serial tail of the build."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape),
            "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def array_from_json(v) -> np.ndarray:
    """The inverse of array_to_json; a plain JSON list (markers of earlier builds) too."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["b64"]), dtype=np.dtype(v["dtype"])
                             ).reshape(v["shape"])
    return np.asarray(v)


def write_done(cfg, stage: str, unit: str, payload: dict) -> dict:
    marker = {"config_hash": cfg.output_hash(), "stage": stage, "unit": unit,
              "finished_at": time.time(), **payload}
    atomic_write_json(done_path(cfg, stage, unit), marker)
    return marker
