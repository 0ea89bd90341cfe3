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

The key hashes the table's input fingerprint (its size and an XXH3-128 hash of its whole
content, remembered in INDEX_DIR/_hashes by the file's stat), the plan's cut (parts, row-group
ranges) and patient buckets, the source of every module whose code decides stage 1's bytes, and the
polars/pyarrow versions that parse the input. Settings that only change stage 2 (cleaning,
windows, compression, layout) are not in it, so a version that changes only those reuses every
entry; a changed table file gets a new key for that table alone.

Safe under concurrent builds without locks (which NFS and Lustre do not always honour): a unit
is written to a private temporary folder, its marker inside it, and renamed into place. A
rename onto an existing folder fails, so the first finisher wins and a second finisher drops
its identical copy; a folder exists under its final name only once it is complete. A table's
entry holds a `used` stamp, touched by every build that reads it, and every process that uses
an entry lists it in its lease (jobs.lease), which `cache prune` honours.

Damage is found, named and repaired, never published (as git and ccache do: checksums written
with the data, verified on read, a failed check is a miss). Every file an entry holds is
hashed with XXH3 as it is written and the hash goes in the marker, which carries a checksum
of its own. A file read whole (codes, sketches, labels, a sorted shard) is verified whole
when read; a partition unit's Arrow files are verified per record batch (the marker holds
each batch's byte range and hash, and those of the file's schema and footer), so a shard
verifies only the bytes it reads. A failed check, a missing or truncated file or a corrupt
marker sets the entry aside (`set_aside`: renamed, named in dataset.json's warnings) and the
unit is redone as a miss, so the build's bytes are a cold build's.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numba
import numpy as np
import polars as pl
import pyarrow as pa

import xxhash

from trajectory.atomic import atomic_write_json, xxh3_file
from trajectory.events.plan import identity

from . import lease

CACHE_FORMAT = 2  # 2: checksummed files and markers (1: none)
DICTIONARIES = "dictionaries"
# Modules whose code decides the bytes of stage 1's outputs: every project module the stage-1
# jobs import, directly or not, found by reading their imports (project_imports). Editing any
# of them gives every entry a new key: a stale entry is never read. A hand-kept list missed
# trajectory/record.py, the user tables' mapping and the sort kernel, so a changed sort order
# would have been served from sorted shards made by the code before.
STAGE1_ENTRY = ("jobs/partition.py", "jobs/scan.py", "jobs/dictionaries.py", "jobs/cache.py")
# What decides a shard's events up to the sort: the build stage's imports. They include the
# cleaning, windows and records modules, so editing those also makes the sorted shards again:
# a few seconds a shard more after an upgrade, never a stale sort.
SORTED_ENTRY = ("jobs/build.py",)
PROJECT_PACKAGES = ("trajectory", "jobs")
_ROOT = Path(__file__).resolve().parent.parent


def project_imports(root: Path, entry: tuple[str, ...],
                    packages: tuple[str, ...] = PROJECT_PACKAGES) -> tuple[str, ...]:
    """The files under `root` of the modules `entry` (paths relative to root) import,
    transitively, within `packages`: absolute and relative imports, at module level or inside
    functions, `from pkg import submodule` included; sorted, relative to root."""
    def module_file(dotted: str) -> Path | None:
        p = root.joinpath(*dotted.split("."))
        if p.with_suffix(".py").is_file():
            return p.with_suffix(".py")
        return p / "__init__.py" if (p / "__init__.py").is_file() else None

    def imported(path: Path) -> set[Path]:
        rel = path.relative_to(root).with_suffix("").parts
        package = list(rel[:-1])  # a module's package; an __init__'s is its own folder
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names.add(module)
                names.update(f"{module}.{a.name}" for a in node.names)
        files = set()
        for name in names:
            if name.split(".")[0] in packages:
                # a package's own __init__ runs too when one of its modules is imported
                parts = name.split(".")
                for k in range(1, len(parts) + 1):
                    f = module_file(".".join(parts[:k]))
                    if f is not None:
                        files.add(f)
        return files

    seen: set[Path] = set()
    todo = [root / e for e in entry]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(imported(f) - seen)
    return tuple(sorted(str(f.relative_to(root)) for f in seen))


@functools.lru_cache(maxsize=4)
def _sources_hash(entry: tuple) -> str:
    h = hashlib.blake2b(digest_size=16)
    for rel in project_imports(_ROOT, entry):
        h.update(rel.encode())
        h.update((_ROOT / rel).read_bytes())
    h.update(f"polars {pl.__version__} pyarrow {pa.__version__} numpy {np.__version__} "
             f"numba {numba.__version__}".encode())
    return h.hexdigest()


def code_hash() -> str:
    return _sources_hash(STAGE1_ENTRY)


def sorted_dir(cfg, plan, shard: int, buckets: list[int]) -> tuple[Path, str]:
    """Where a shard's sorted events are kept, and their key: every table's stage-1 key (so
    the same inputs and cut), the shard's buckets, and the code up to the sort."""
    key = _digest({"format": CACHE_FORMAT, "tables": plan.cache_keys, "shard": shard,
                   "buckets": buckets,
                   "code": _sources_hash(STAGE1_ENTRY + SORTED_ENTRY)})
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


def _marker_sum(marker: dict) -> str:
    body = {k: v for k, v in marker.items() if k != "marker_xxh3"}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True, default=str).encode())


def seal(marker: dict) -> dict:
    """The marker with a checksum of its own content: a flipped digit in a cut point or a
    batch's offset is found, not followed."""
    return {**marker, "marker_xxh3": _marker_sum(marker)}


def read_marker(path: Path, key: str) -> dict | None:
    """A finished unit's marker, or None if there is none. Raises Damaged for a marker that
    is not valid JSON, fails its checksum, or names another key (the key names the folder)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise Damaged(path, f"unreadable cache marker ({e})") from e
    try:
        marker = json.loads(text)
    except json.JSONDecodeError as e:
        raise Damaged(path, f"corrupt cache marker ({e})") from e
    if not isinstance(marker, dict) or marker.get("marker_xxh3") != _marker_sum(marker):
        raise Damaged(path, "cache marker fails its checksum")
    if marker.get("cache_key") != key:
        raise Damaged(path, f"cache marker for key {marker.get('cache_key')!r} in the entry "
                            f"of key {key!r}")
    return marker


def file_sums(folder: Path, names, whole=True) -> dict:
    """{name: {"bytes", "xxh3"}} of files just written; xxh3 None for files verified by
    ranges instead (`whole` False)."""
    return {n: {"bytes": (folder / n).stat().st_size,
                "xxh3": xxh3_file(folder / n) if whole else None} for n in names}


def check_present(folder: Path, marker: dict) -> None:
    """Every file the marker lists is there at its size (a stat each): what a cache hit
    checks before it is trusted; contents are verified when read."""
    for name, f in marker.get("files", {}).items():
        try:
            size = (folder / name).stat().st_size
        except FileNotFoundError as e:
            raise Damaged(folder / name, "file missing from a finished cache entry") from e
        if size != f["bytes"]:
            raise Damaged(folder / name, f"{size:,} bytes, its marker says {f['bytes']:,} "
                                         "(truncated or extended)")


def verify_file(folder: Path, name: str, marker: dict) -> Path:
    """`folder/name` after its size and XXH3 match the marker; the path, to be read."""
    f = marker["files"][name]
    path = folder / name
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise Damaged(path, "file missing from a finished cache entry") from e
    if size != f["bytes"]:
        raise Damaged(path, f"{size:,} bytes, its marker says {f['bytes']:,}")
    if f["xxh3"] is not None and xxh3_file(path) != f["xxh3"]:
        raise Damaged(path, "content fails its XXH3 checksum")
    return path


def lookup(cfg, folder: Path, key: str) -> dict | None:
    """A finished unit's marker if its entry passes the cheap checks (a sealed marker, every
    file present at its size); None for a miss. A damaged unit is set aside first, so the
    caller redoes it. A unit folder without its marker counts as damaged: folders appear
    under their final name only with their marker inside (publish_unit)."""
    try:
        marker = read_marker(folder / "done.json", key)
        if marker is None:
            if folder.is_dir():
                raise Damaged(folder / "done.json", "finished cache folder has no marker")
            return None
        check_present(folder, marker)
        return marker
    except Damaged as e:
        set_aside(cfg, folder, e.why if e.path == folder else f"{e.path.name}: {e.why}")
        return None


def new_unit_folder(final: Path) -> Path:
    """A private folder beside `final` for one attempt. Its name carries host, pid and time:
    two builds, or a retry after a kill, never share one, and `cache prune` can tell whether
    its owner still runs (jobs.lease)."""
    tmp = final.with_name(f".{final.name}.tmp-{lease.HOST}-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    return tmp


@contextlib.contextmanager
def cleaned_on_error(tmp: Path):
    """A failed attempt leaves no folder behind; one whose folder was removed under it (a
    prune that took it for a dead build's) raises Lost, and its caller redoes the unit."""
    try:
        yield tmp
    except FileNotFoundError as e:
        gone = not tmp.is_dir()
        shutil.rmtree(tmp, ignore_errors=True)
        if gone:
            raise Lost(f"{tmp}: temporary folder removed while written; the unit is "
                       "redone") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Lost(RuntimeError):
    """The attempt's temporary folder vanished while it was written (removed by someone
    else): the unit is redone, never published without its data."""


def publish_unit(cfg, tmp: Path, final: Path, key: str, marker: dict) -> dict:
    """Seal the marker (with `files`, the checksums of what `tmp` holds), check that every
    file is still there, write the marker into `tmp`, then rename it to `final`. If another
    build got there first, keep theirs (the same bytes) and drop ours; if theirs is damaged,
    set it aside and publish ours."""
    marker = seal({"cache_key": key, "finished_at": time.time(), **marker})
    try:
        check_present(tmp, marker)
    except Damaged as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Lost(f"{tmp}: {e.why}; the unit is redone") from e
    if not tmp.is_dir():
        raise Lost(f"{tmp}: temporary folder removed while written; the unit is redone")
    atomic_write_json(tmp / "done.json", marker, mkdir=False)
    for _ in range(2):
        try:
            os.rename(tmp, final)
            return marker
        except OSError:
            if not tmp.is_dir():
                raise Lost(f"{tmp}: temporary folder removed before its rename; the unit is "
                           "redone") from None
            theirs = lookup(cfg, final, key)
            if theirs is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                return theirs
    raise ValueError(f"{final}: cannot publish the cache unit (its place stays taken)")


def hold(cfg, *entries: Path) -> None:
    """List these entries in this process's lease before it reads or writes them."""
    lease.hold(cfg.cache_dir, *(Path(e).name for e in entries))


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
    try:
        os.rename(path, lease.aside_name(path, "damaged"))
    except FileNotFoundError:
        pass
    note_damage(cfg, path, why, "moved aside and rebuilt")


def note_damage(cfg, path: Path, why: str, done: str) -> None:
    """Damage found, and what was `done` about it, for dataset.json's warnings."""
    note = {"entry": str(path), "why": why, "done": done, "at": time.time()}
    atomic_write_json(cfg.work_dir / DAMAGE_DIR / f"{time.time_ns()}-{os.getpid()}.json", note)


def damage_warnings(cfg) -> list[str]:
    """dataset.json warnings for the damage this build found and repaired, one per entry."""
    seen = {}
    for p in sorted((cfg.work_dir / DAMAGE_DIR).glob("*.json")):
        try:
            note = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        seen.setdefault(note["entry"], (note["why"], note.get("done", "moved aside and rebuilt")))
    return [f"cache entry {entry} was damaged ({why}): {done}"
            for entry, (why, done) in seen.items()]


def touch(entry: Path) -> None:
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "used").touch()


# ---- list and prune (python build_patient_files.py cache list|prune) ----

BUILDS = "_builds"  # CACHE_DIR/_builds/: where every build that used this cache writes to


def register(cfg) -> None:
    """Note this build's version and work folders in CACHE_DIR, so that a prune run with
    another OUT_DIR (another host, another project sharing the cache) or between the job
    arrays of a SLURM build (no process holds a lease then) still sees what they use."""
    name = hashlib.blake2b(str(cfg.work_dir).encode(), digest_size=8).hexdigest()
    path = cfg.cache_dir / BUILDS / f"{name}.json"
    if not path.exists():
        atomic_write_json(path, {"version_dir": str(cfg.version_dir),
                                 "work_dir": str(cfg.work_dir)})


def _plans(out_dir: Path, cache_dir: Path) -> dict[str, Path]:
    """Version label -> its dataset.json, or the plan.json of a work folder without its
    published version (a build that may be resumed): in OUT_DIR, and every registered one."""
    plans = {p.parent.name: p for p in out_dir.glob("*/dataset.json")}
    plans.update({f"{p.parent.name} (work folder)": p for p in out_dir.glob("_work/*/plan.json")
                  if p.parent.name not in plans})
    for reg in (cache_dir / BUILDS).glob("*.json"):
        try:
            r = json.loads(reg.read_text())
            vdir, wdir = Path(r["version_dir"]), Path(r["work_dir"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue
        if (vdir / "dataset.json").exists():
            plans.setdefault(str(vdir), vdir / "dataset.json")
        elif (wdir / "plan.json").exists():
            plans.setdefault(f"{vdir} (work folder)", wdir / "plan.json")
        elif not vdir.exists() and not wdir.exists():
            try:  # both gone: nothing of that build is left to keep
                reg.unlink()
            except OSError:
                pass
    return plans


def keep_sorted(cfg, plan) -> bool:
    """Whether this shard keeps its sorted events (KEEP_SORTED): "auto" keeps them when
    another version, finished or in a work folder, was made from the same stage-1 entries, so
    a user who rebuilds has them from the second version on and a single build does not pay
    for them (a glob of OUT_DIR and the registered builds: milliseconds a shard)."""
    if cfg.keep_sorted != "auto":
        return cfg.keep_sorted == "always"
    own = (cfg.work_dir / "plan.json").resolve()
    for path in _plans(cfg.out_dir, cfg.cache_dir).values():
        if path.resolve() == own:
            continue
        try:
            if json.loads(path.read_text()).get("cache_keys") == plan.cache_keys:
                return True
        except (OSError, json.JSONDecodeError):
            continue
    return False


def _referenced(out_dir: Path, cache_dir: Path) -> dict[str, list[str]]:
    """Entry name -> versions (finished, or with a plan in a work folder) that use it."""
    refs: dict[str, list[str]] = {}
    seen = set()
    for version, path in _plans(out_dir, cache_dir).items():
        if path.resolve() in seen:  # a version of OUT_DIR that is registered too
            continue
        seen.add(path.resolve())
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        names = [f"{table}-{key}" for table, key in (meta.get("cache_keys") or {}).items()]
        names += meta.get("sorted_cache") or []
        for marker in (path.parent / "done" / "build").glob("*.json"):  # a work folder's
            try:
                name = json.loads(marker.read_text())["sorted"]
            except (OSError, json.JSONDecodeError, KeyError):
                continue
            if name:  # None: that shard's sorted events were not kept (KEEP_SORTED)
                names.append(name)
        for name in names:
            refs.setdefault(name, []).append(version)
    return refs


def entries(cfg) -> list[dict]:
    if not cfg.cache_dir.is_dir():
        return []
    refs = _referenced(cfg.out_dir, cfg.cache_dir)
    out = []
    for d in sorted(p for p in cfg.cache_dir.iterdir()
                    if p.is_dir() and not p.name.startswith((".", "_"))):
        stamp = d / "used"
        try:
            used = stamp.stat().st_mtime if stamp.exists() else d.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile (another prune)
            continue
        out.append({"entry": d.name, "bytes": lease.size(d), "last_used": used,
                    "units": sum(1 for p in d.glob("[0-9]*/done.json")),
                    "versions": sorted(refs.get(d.name, []))})
    return out


def leftovers(cfg, everywhere: bool = False) -> list[dict]:
    """Temporary files and folders of killed builds and index passes, and entries set aside
    as damaged, in CACHE_DIR, INDEX_DIR, this version and its work folder (`everywhere`:
    every version and work folder of OUT_DIR); nothing a live process owns (jobs.lease).
    Depths: where temporary names occur (a cache unit's folder inside its entry, a shard's
    folder in patients/, a done-marker in done/<stage>/), not the records' own folders."""
    roots = [(cfg.cache_dir, 2), (cfg.index_dir, 2), (cfg.version_dir, 2), (cfg.work_dir, 3)]
    if everywhere and cfg.out_dir.is_dir():
        roots += [(p, 2) for p in cfg.out_dir.iterdir() if p.is_dir()
                  and not p.name.startswith(("_", "."))]
        roots += [(p, 3) for p in (cfg.out_dir / "_work").glob("*") if p.is_dir()]
    found, seen = [], set()
    for root, depth in roots:
        for f in lease.leftovers(root, cfg.cache_dir, depth):
            if f["path"] not in seen:
                seen.add(f["path"])
                found.append(f)
    return found


def sweep(cfg, everywhere: bool = False) -> list[dict]:
    """Remove the leftovers (`leftovers`): at the start of every build (this version's) and
    by prune (everywhere)."""
    found = leftovers(cfg, everywhere)
    lease.remove(f["path"] for f in found)
    return found


def prune(cfg, older_than_hours: float = 24.0, dry_run: bool = False) -> list[dict]:
    """Remove the entries no version in OUT_DIR refers to, no live build holds (jobs.lease)
    and no build used in the last `older_than_hours`; and every leftover of a dead process.
    An entry is first renamed to a `.trash-` name, then the leases are read again: one that a
    build took up meanwhile is put back. A build that still finds an entry gone redoes it."""
    cutoff = time.time() - older_than_hours * 3600
    held = lease.held(cfg.cache_dir)
    gone = [e for e in entries(cfg) if not e["versions"] and e["last_used"] < cutoff
            and e["entry"] not in held]
    if not dry_run:
        for e in gone:
            final = cfg.cache_dir / e["entry"]
            trash = lease.aside_name(final, "trash")
            try:
                os.rename(final, trash)
            except OSError:
                continue
            if e["entry"] in lease.held(cfg.cache_dir):
                try:
                    os.rename(trash, final)
                    continue
                except OSError:  # a build already made it again: ours goes
                    pass
            shutil.rmtree(trash, ignore_errors=True)
        sweep(cfg, everywhere=True)
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


def describe_leftovers(rows: list[dict], verb: str = "") -> str:
    if not rows:
        return f"{verb + ' ' if verb else ''}leftovers: none"
    lines = [f"{verb + ' ' if verb else ''}leftovers of killed builds and damaged entries:"]
    lines += [f"  {r['path']}  {r['bytes'] / 2**20:.1f} MB  ({r['why']}; owner {r['owner']})"
              for r in rows]
    return "\n".join(lines)
