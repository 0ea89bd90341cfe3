"""Stage 1a, one unit per CSV table cut into several partition units: where the cuts fall.

For a .csv.gz, first the seek-point index (trajectory.gzindex), kept in INDEX_DIR by the
file's fingerprint so that every later build of the same input, of any version, reuses it.
Then the cut points: record starts near equal steps of the text (trajectory.split). The
marker, CACHE_DIR/<table>-<key>/scan.json (jobs.cache), lists them; partition unit k of the
table reads [cuts[k], cuts[k+1]).
"""
from __future__ import annotations

import time
from pathlib import Path

from trajectory.gzindex import GzRange, build_index, point_before
from trajectory.plan import load_plan
from trajectory.split import FileRange, header_end, line_cuts, record_cuts, targets
from trajectory.extra_tables import table_of

from trajectory.atomic import atomic_write_json

from . import cache

STAGE = "scan"


def index_path(cfg, table: str, fp: dict) -> Path:
    return cfg.index_dir / f"{table}-{fp['bytes']}-{fp['xxh3_128'][:16]}.gzidx"


def read(cfg, plan, table_name: str) -> dict | None:
    return cache.read_marker(cache.scan_marker_path(cfg, plan, table_name),
                             plan.cache_keys[table_name])


def run(table_name: str, cfg) -> dict:
    t0, cpu0 = time.perf_counter(), time.process_time()
    plan = load_plan(cfg)
    cache.touch(cache.entry_dir(cfg, plan, table_name))
    done = read(cfg, plan, table_name)
    if done is not None:
        return done
    fp = plan.tables[table_name]
    path, n = Path(fp["path"]), plan.parts[table_name]
    index, cached = None, None
    if path.name.endswith(".gz"):
        index = index_path(cfg, table_name, fp)
        cached = index.exists()
        if not cached:
            build_index(path, index)
        size = point_before(index, 0)[0]

        def open_at(a, b):  # one seek point's window read per opening, not the whole index
            return GzRange(path, [point_before(index, a)[1]], a, b)
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
    marker = {
        "cache_key": plan.cache_keys[table_name], "stage": STAGE, "unit": table_name,
        "finished_at": time.time(), "table": table_name, "input": fp, "size": size,
        "cuts": [start, *cuts, size], "index": str(index) if index else None,
        "index_cached": cached, "index_seconds": round(t_index, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(time.process_time() - cpu0, 3),
    }
    atomic_write_json(cache.scan_marker_path(cfg, plan, table_name), marker)
    return marker
