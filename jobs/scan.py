"""Stage 1a, one unit per CSV table cut into several partition units: where the cuts fall.

For a .csv.gz, first the seek-point index (trajectory.raw.gzindex), kept in INDEX_DIR by the
file's fingerprint so that every later build of the same input, of any version, reuses it.
Then the cut points: record starts near equal steps of the text (trajectory.raw.csv_ranges). The
marker, CACHE_DIR/<table>-<key>/scan.json (jobs.cache), lists them; partition unit k of the
table reads [cuts[k], cuts[k+1]).

A damaged index (a changed byte, truncated, an older format) is found by its checksums, moved
aside with a warning in dataset.json (jobs.cache.set_aside) and rebuilt, by the scan or by the
first partition unit that needs it; a missing one (removed by a prune) is simply rebuilt.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from trajectory.events.extra_tables import table_of
from trajectory.events.plan import load_plan
from trajectory.raw.csv_ranges import FileRange, header_end, line_cuts, record_cuts, targets
from trajectory.raw.gzindex import (GzRange, IndexDamaged, Point, build_index, point_before,
                                    verify_table)

from trajectory.atomic import atomic_write_json

from . import cache
from .common import fresh_unit_memory, peak_rss_mb

STAGE = "scan"
REBUILDS = 3  # passes a unit makes over a missing index before it gives up
# Fewest threads the parallel seek-point pass is worth starting with: it costs ~3.5x the CPU
# of the one zlib-ng pass (rapidgzip's speculative decode, then zlib-ng again per segment;
# benchmarks/bench_gzindex.py), so below ~8 threads it saves little wall and takes cores
# from the units; and a file of fewer than 2 rapidgzip chunks has nothing to share out.
PARALLEL_FROM = 8
PARALLEL_MIN_BYTES = 8 << 20


def index_threads(cfg, plan, table_name: str, cores: int | None = None) -> int:
    """Threads for the seek-point pass over this table's .csv.gz: GZINDEX_THREADS, or auto.

    Auto: the scans run first, and every unit of a cut table waits for its scan, so at the
    start of stage 1 most of the MAX_CPUS workers are idle; each scan gets its table's share
    of them by compressed size (chartevents most), capped by the cores this process may run
    on (`cores`, default its CPU affinity: a SLURM task or a dask-jobqueue worker is bound
    to the CPUs it was granted, so one granted core means one thread). Below PARALLEL_FROM,
    or for a small file, the sequential pass (1)."""
    if cfg.gzindex_threads:
        return cfg.gzindex_threads
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    sizes = {t: plan.tables[t]["bytes"] for t in plan.scan_tables()
             if plan.tables[t]["path"].endswith(".gz")}
    size = sizes.get(table_name, 0)
    if size < PARALLEL_MIN_BYTES:
        return 1
    share = min(cores, round(cfg.max_cpus * size / sum(sizes.values())))
    return share if share >= PARALLEL_FROM else 1


def index_path(cfg, table: str, fp: dict) -> Path:
    return cfg.index_dir / f"{table}-{fp['bytes']}-{fp['xxh3_128'][:16]}.gzidx"


def read(cfg, plan, table_name: str) -> dict | None:
    """The table's cut points if scanned (by any version of the same input); a damaged
    marker is set aside and None returned, so the scan is redone."""
    path = cache.scan_marker_path(cfg, plan, table_name)
    try:
        return cache.read_marker(path, plan.cache_keys[table_name])
    except cache.Damaged as e:
        cache.set_aside(cfg, path, e.why)
        return None


def cached_size(cfg, index: Path) -> int | None:
    """The uncompressed size of the input if a usable index is at `index` (its header and
    tables pass their checks; the windows are checked as they are read), else None. A damaged
    one is moved aside, for a rebuild."""
    try:
        return verify_table(index)
    except FileNotFoundError:
        return None
    except IndexDamaged as e:
        cache.set_aside(cfg, index, e.why)
        return None


def seek_point(cfg, table_name: str, fp: dict, offset: int) -> Point:
    """The last seek point at or before `offset` in the table's index, verified. An index found
    damaged is moved aside (named in dataset.json's warnings) and rebuilt, a missing one (a
    prune removed it) rebuilt, then read again. Units that find it damaged at once each
    rebuild it and rename the same bytes into place; one of them may move aside another's
    fresh copy, so a file missing after our rebuild is rebuilt again, up to REBUILDS times.
    Damage found in our own rebuild is not the input's fault: an error that says so."""
    index, rebuilt = index_path(cfg, table_name, fp), 0
    while True:
        try:
            return point_before(index, offset)[1]
        except FileNotFoundError as e:
            if rebuilt >= REBUILDS:
                raise _damaged_again(index, fp, "missing: removed again each time") from e
        except IndexDamaged as e:
            if rebuilt:
                raise _damaged_again(index, fp, e.why) from e
            cache.set_aside(cfg, index, e.why)
        build_index(Path(fp["path"]), index)
        rebuilt += 1


def _damaged_again(index: Path, fp: dict, why: str) -> ValueError:
    return ValueError(f"{index}: the gzip seek-point index of {fp['path']} failed its check "
                      f"again right after it was rebuilt ({why}): the index file or its disk "
                      "is at fault, not the input; check INDEX_DIR's file system")


def run(table_name: str, cfg) -> dict:
    t0, cpu0 = time.perf_counter(), time.process_time()
    start_rss = fresh_unit_memory()
    plan = load_plan(cfg)
    cache.hold(cfg, cache.entry_dir(cfg, plan, table_name))
    cache.touch(cache.entry_dir(cfg, plan, table_name))
    done = read(cfg, plan, table_name)
    if done is not None:
        return done
    fp = plan.tables[table_name]
    path, n = Path(fp["path"]), plan.parts[table_name]
    index, cached, threads = None, None, None
    if path.name.endswith(".gz"):
        index = index_path(cfg, table_name, fp)
        size = cached_size(cfg, index)
        cached = size is not None
        threads = index_threads(cfg, plan, table_name)
        if not cached:
            size = build_index(path, index, threads=threads)

        def open_at(a, b):  # one seek point's window read per opening, not the whole index
            return GzRange(path, [seek_point(cfg, table_name, fp, a)], a, b)
    else:
        size = path.stat().st_size

        def open_at(a, b):
            return FileRange(path, a, b)
    t_index = time.perf_counter() - t0
    with open_at(0, min(size, 1 << 20)) as f:
        start = header_end(f.read(), path)
    wanted = targets(start, size, n)
    if table_of(plan, table_name).multiline:
        with open_at(start, size) as f:
            cuts = record_cuts(f, start, size, wanted)
    else:
        cuts = line_cuts(open_at, size, wanted)
    # Two builds scanning at once write the same cuts: the last rename wins, either is right.
    marker = cache.seal({
        "cache_key": plan.cache_keys[table_name], "stage": STAGE, "unit": table_name,
        "finished_at": time.time(), "table": table_name, "input": fp, "size": size,
        "cuts": [start, *cuts, size], "index": str(index) if index else None,
        "index_cached": cached, "index_seconds": round(t_index, 3), "index_threads": threads,
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(time.process_time() - cpu0, 3),
        "peak_rss_mb": peak_rss_mb(), "start_rss_mb": start_rss,
    })
    atomic_write_json(cache.scan_marker_path(cfg, plan, table_name), marker)
    return marker
