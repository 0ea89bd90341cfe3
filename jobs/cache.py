"""Stage 1's outputs, kept by content in CACHE_DIR (default OUT_DIR/_cache) and shared by every
version built from the same inputs.

Researchers rebuild often with one setting changed (an outlier width, a window step); stage 1
(the gzip scans, the partition units, the dictionaries) is ~60% of a build and depends on none
of those settings. Its outputs therefore live under a key of what they do depend on, one entry
per table:

    CACHE_DIR/<table>-<key>/scan.json           the scan unit's marker (the cut points)
    CACHE_DIR/<table>-<key>/<part>/             a partition unit's files and its done.json
    CACHE_DIR/dictionaries-<key>/               the d_* labels and their done.json
    CACHE_DIR/sorted-<shard>-<key>/             a shard's events read, placed and sorted

The key hashes the table's input fingerprint (size and first/last MiB: for a .csv.gz that
covers the trailer's CRC of the whole text), the plan's cut (parts, row-group ranges) and
patient buckets, the source of every module whose code decides stage 1's bytes, and the
polars/pyarrow versions that parse the input. Settings that only change stage 2 (cleaning,
windows, compression, layout) are not in it, so a version that changes only those reuses every
entry; a changed table file gets a new key for that table alone.

Safe under concurrent builds without locks (which NFS and Lustre do not always honour): a unit
is written to a private temporary folder, its marker inside it, and renamed into place. A
rename onto an existing folder fails, so the first finisher wins and a second finisher drops
its identical copy; a folder exists under its final name only once it is complete. A table's
entry holds a `used` stamp, touched by every build that reads it, for `cache prune`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import polars as pl
import pyarrow as pa

from trajectory.atomic import atomic_write_json
from trajectory.plan import identity

CACHE_FORMAT = 1
DICTIONARIES = "dictionaries"
# Modules whose code decides the bytes of stage 1's outputs (relative to the repository root).
# Editing any of them gives every entry a new key: a stale entry is never read.
STAGE1_SOURCES = (
    "trajectory/tables.py", "trajectory/events.py", "trajectory/read.py", "trajectory/split.py",
    "trajectory/gzindex.py", "trajectory/cleaning.py", "trajectory/kernels_qc.py",
    "trajectory/plan.py", "jobs/partition.py", "jobs/scan.py", "jobs/dictionaries.py",
    "jobs/cache.py",
)
# What decides a shard's events up to the sort (before cleaning, which OUTLIER_K and the other
# cleaning settings change): the stage-1 sources, and these.
SORTED_SOURCES = ("trajectory/assemble.py", "trajectory/vocab.py", "trajectory/extra_tables.py",
                  "jobs/build.py")
_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=4)
def _sources_hash(sources: tuple) -> str:
    h = hashlib.blake2b(digest_size=16)
    for rel in sources:
        h.update(rel.encode())
        h.update((_ROOT / rel).read_bytes())
    h.update(f"polars {pl.__version__} pyarrow {pa.__version__}".encode())
    return h.hexdigest()


def code_hash() -> str:
    return _sources_hash(STAGE1_SOURCES)


def sorted_dir(cfg, plan, shard: int, buckets: list[int]) -> tuple[Path, str]:
    """Where a shard's sorted events are kept, and their key: every table's stage-1 key (so
    the same inputs and cut), the shard's buckets, and the code up to the sort."""
    key = _digest({"format": CACHE_FORMAT, "tables": plan.cache_keys, "shard": shard,
                   "buckets": buckets,
                   "code": _sources_hash(STAGE1_SOURCES + SORTED_SOURCES)})
    return cfg.cache_dir / f"sorted-{shard:05d}-{key}", key


def _digest(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def table_keys(plan) -> dict[str, str]:
    """Each table's entry key, and the dictionaries' (under "dictionaries")."""
    base = {"format": CACHE_FORMAT, "code": code_hash(), "n_buckets": plan.n_buckets}
    keys = {t: _digest({**base, "table": t, "input": identity(fp), "parts": plan.parts[t],
                        "row_groups": plan.row_groups.get(t)})
            for t, fp in plan.tables.items()}
    keys[DICTIONARIES] = _digest({**base, "n_buckets": None, "dictionaries": {
        d: identity(fp) for d, fp in sorted(plan.dictionaries.items())}})
    return keys


def entry_dir(cfg, plan, table: str) -> Path:
    try:
        key = plan.cache_keys[table]
    except KeyError as e:
        raise ValueError(f"{table!r} has no cache key in the plan "
                         f"{cfg.work_dir / 'plan.json'}; the plan is older than the stage-1 "
                         "cache: rebuild with --overwrite") from e
    return cfg.cache_dir / f"{table}-{key}"


def unit_dir(cfg, plan, table: str, part: int) -> Path:
    return entry_dir(cfg, plan, table) / f"{part:04d}"


def scan_marker_path(cfg, plan, table: str) -> Path:
    return entry_dir(cfg, plan, table) / "scan.json"


def read_marker(path: Path, key: str) -> dict | None:
    """A finished unit's marker, or None. A marker under another key cannot be (the key names
    the folder), so a mismatch means a damaged cache."""
    try:
        marker = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt cache marker ({e}); delete its folder to redo the "
                         "unit") from e
    if marker.get("cache_key") != key:
        raise ValueError(f"{path}: cache marker for key {marker.get('cache_key')!r} in the "
                         f"entry of key {key!r}; delete the folder to redo the unit")
    return marker


def new_unit_folder(final: Path) -> Path:
    """A private folder beside `final` for one attempt (pid and time: two builds, or a retry
    after a kill, never share one)."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    return tmp


@contextlib.contextmanager
def cleaned_on_error(tmp: Path):
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_unit(tmp: Path, final: Path, key: str, marker: dict) -> dict:
    """Write the marker into `tmp`, then rename it to `final`; if another build got there
    first, keep theirs (the same bytes) and drop ours."""
    marker = {"cache_key": key, "finished_at": time.time(), **marker}
    atomic_write_json(tmp / "done.json", marker)
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "done.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return read_marker(final / "done.json", key)
    return marker


# ---- damage: named, moved aside, redone as a miss ----

DAMAGE_DIR = "cache_damage"  # under WORK_DIR: one JSON note per damaged entry, for dataset.json


class Damaged(ValueError):
    """A cached file or marker failed its check (a changed byte, a truncated or missing file,
    a corrupt marker). Never an input fault: the caller moves the entry aside and redoes it."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = Path(path), why


def set_aside(cfg, path: Path, why: str) -> None:
    """Move a damaged cache entry, unit folder or index file out of the way (renamed to a
    `.damaged-` name that `cache prune` and the next run remove; a concurrent reader keeps
    its open files) and note it in WORK_DIR/cache_damage/, which finalize copies into
    dataset.json's warnings. Two processes finding the same damage: one rename wins, the
    other's finds nothing to move; both notes are kept, with the same text."""
    path = Path(path)
    aside = path.with_name(f".damaged-{path.name}-{os.uname().nodename}-{os.getpid()}-"
                           f"{time.time_ns()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        pass
    note = {"entry": str(path), "why": why, "at": time.time()}
    atomic_write_json(cfg.work_dir / DAMAGE_DIR / f"{time.time_ns()}-{os.getpid()}.json", note)


def damage_warnings(cfg) -> list[str]:
    """dataset.json warnings for the damage this build found and repaired, one per entry."""
    seen = {}
    for p in sorted((cfg.work_dir / DAMAGE_DIR).glob("*.json")):
        try:
            note = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        seen.setdefault(note["entry"], note["why"])
    return [f"cache entry {entry} was damaged ({why}): moved aside and rebuilt"
            for entry, why in seen.items()]


def touch(entry: Path) -> None:
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "used").touch()


# ---- list and prune (python build_patient_files.py cache list|prune) ----

def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _referenced(out_dir: Path) -> dict[str, list[str]]:
    """Entry name -> versions (finished, or with a plan in a work folder) that use it."""
    refs: dict[str, list[str]] = {}
    plans = {p.parent.name: p for p in out_dir.glob("*/dataset.json")}
    # a work folder without its published version: a build that may be resumed
    plans.update({f"{p.parent.name} (work folder)": p for p in out_dir.glob("_work/*/plan.json")
                  if p.parent.name not in plans})
    for version, path in plans.items():
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        names = [f"{table}-{key}" for table, key in (meta.get("cache_keys") or {}).items()]
        names += meta.get("sorted_cache") or []
        for marker in (path.parent / "done" / "build").glob("*.json"):  # a work folder's
            try:
                names.append(json.loads(marker.read_text())["sorted"])
            except (OSError, json.JSONDecodeError, KeyError):
                continue
        for name in names:
            refs.setdefault(name, []).append(version)
    return refs


def entries(cfg) -> list[dict]:
    if not cfg.cache_dir.is_dir():
        return []
    refs = _referenced(cfg.out_dir)
    out = []
    for d in sorted(p for p in cfg.cache_dir.iterdir() if p.is_dir()):
        stamp = d / "used"
        used = stamp.stat().st_mtime if stamp.exists() else d.stat().st_mtime
        out.append({"entry": d.name, "bytes": _size(d), "last_used": used,
                    "units": sum(1 for p in d.glob("[0-9]*/done.json")),
                    "versions": sorted(refs.get(d.name, []))})
    return out


def prune(cfg, older_than_hours: float = 24.0, dry_run: bool = False) -> list[dict]:
    """Remove the entries no version in OUT_DIR refers to and no build used in the last
    `older_than_hours` (a build that is reading an entry touched it when it started)."""
    cutoff = time.time() - older_than_hours * 3600
    gone = [e for e in entries(cfg) if not e["versions"] and e["last_used"] < cutoff]
    if not dry_run:
        for e in gone:
            shutil.rmtree(cfg.cache_dir / e["entry"])
        # attempts killed before their rename (a live one is younger than the cutoff)
        for tmp in cfg.cache_dir.glob("*/.*.tmp-*"):
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
    return gone


def describe(rows: list[dict], verb: str = "") -> str:
    if not rows:
        return f"{verb or 'cache'}: nothing"
    now = time.time()
    lines = [f"{'entry':<42} {'MB':>9} {'units':>5} {'used':>9}  versions"]
    for e in rows:
        lines.append(f"{e['entry']:<42} {e['bytes'] / 2**20:9.1f} {e['units']:5d} "
                     f"{(now - e['last_used']) / 3600:8.1f}h  {', '.join(e['versions']) or '-'}")
    total = sum(e["bytes"] for e in rows) / 2**20
    lines.append(f"{verb + ' ' if verb else ''}{len(rows)} entries, {total:,.1f} MB")
    return "\n".join(lines)
