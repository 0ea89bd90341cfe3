"""What every stage step shares: atomic writes and done-markers.

A unit writes its outputs under temporary names, renames them into place, and only then writes
its done-marker (itself atomically). A marker exists only for a finished unit, so a crash at any
point leaves either no marker (the unit reruns from scratch) or a complete unit.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path


def checksum_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def checksum_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def tmp_name(path: Path) -> Path:
    # pid + hostname: two array tasks racing on one unit never share a temporary file.
    return path.with_name(f".{path.name}.tmp-{os.uname().nodename}-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


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
                         f"run has {cfg.output_hash()}; use --overwrite or another WORK_DIR")
    return marker


def write_done(cfg, stage: str, unit: str, payload: dict) -> dict:
    marker = {"config_hash": cfg.output_hash(), "stage": stage, "unit": unit,
              "finished_at": time.time(), **payload}
    atomic_write_json(done_path(cfg, stage, unit), marker)
    return marker
