"""Loader throughput: against the format's floor, and task-cut samples against meds-torch-data.

    python benchmarks/bench_loader.py [--version-dir trajectories/v1]
    python benchmarks/bench_loader.py --task readmission_30d [--tools-python .venv-meds/bin/python]
    python benchmarks/bench_loader.py --version-dir A --version-dir B --order random

Random order (`--order random`): every patient once per pass in a seeded random order, bytes
read from the record files inside each case (no warm list in memory), one untimed pass first,
then passes enough for `--min-items` items, for each version given:
the dataset's opening time (manifest and reader), read+inflate (the floor), dataset[i] in one
process and a DataLoader with 2 workers. Items/s of the versions side by side: a version of
80,000 record files and a big manifest should load as fast per item as the demo.

Patient cases (default): records/s and events/s for inflating every zstd frame (the floor),
single-process decode through TrajectoryDataset, and DataLoader with 0, 1 and 2 workers (padded
collate), plus the peak RSS of each loading process.

Task-cut cases (`--task NAME`, repeatable): one item per label row of VERSION_DIR/tasks/NAME.parquet
(train split), the last `--max-events` (2,048) events up to its prediction time, batch 32, no
shuffle, num_workers 0 and 2, padded and packed collate. With the MEDS tools venv
(`--tools-python`, else $MEDS_TOOLS_PYTHON; tests/meds_tools_setup.sh makes it) each case also
runs meds-torch-data 0.9.0 over the MEDS export of the same version (`export meds`, then its
`MTD_preprocess` tensorization, both cached under --work) with the same label file and settings
(`seq_sampling_strategy=to_end`, `max_seq_len` = --max-events, measurement-level `SM` batches,
static rows omitted as our items have none; packed = its items' rows concatenated). Every case
runs in a fresh process (ours in this venv, theirs in the tools venv), one after the other, so
no case inherits another's memory: items/s over --repeat passes after one warm-up pass, and the
peak RSS of a loading process (the main one with 0 workers, else the largest worker), sampled
after every batch. Without --version-dir it builds the real demo first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Everything this module imports at the top must exist in both venvs: a task case of
# meds-torch-data runs this file with the tools venv's python (polars<2, no trajectory deps).


def _rss_mb() -> float:
    # current RSS, sampled per batch: ru_maxrss would include the parent's high-water mark,
    # which Linux copies into a forked worker
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def drain(items) -> None:
    for _ in items:  # nothing kept: memory stays one item (or batch) deep
        pass


# ---- patient cases (the project's venv) ---------------------------------------------------


def collate_with_rss(batch):
    """Runs in the worker: the batch plus that worker process's RSS now."""
    from trajectory.torch import collate_trajectories
    return collate_trajectories(batch), _rss_mb()


def patient_cases(vdir, repeat: int) -> None:
    import torch
    import zstandard
    from torch.utils.data import DataLoader

    from trajectory.record import frames
    from trajectory.use.store import open_version
    from trajectory.torch import TrajectoryDataset

    v = open_version(vdir)
    sids = v.subject_ids
    n_events = int(v.manifest["n_events"].sum())
    blobs = [v.read_bytes(s) for s in sids]  # warm the page cache; the floor excludes I/O too
    rows = []

    def case(name, fn):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        dt = (time.perf_counter() - t) / repeat
        rows.append((name, len(sids) / dt, n_events / dt))

    dctx = zstandard.ZstdDecompressor()

    # the floor: every zstd frame of every record inflated, nothing decoded
    case("zstd inflate (floor)",
         lambda: drain(dctx.decompress(f) for b in blobs for f in frames(b)))
    del blobs  # forked workers would inherit them and count them in their RSS
    ds = TrajectoryDataset(vdir, with_windows=True)
    case("dataset[i], 1 process", lambda: drain(ds[i] for i in range(len(ds))))
    peaks = {}
    for workers in (0, 1, 2):
        dl = DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=collate_with_rss,
                        persistent_workers=workers > 0)
        seen = []
        case(f"DataLoader workers={workers}", lambda dl=dl: seen.extend(r for _, r in dl))
        peaks[workers] = max(seen)
        del dl
    floor = rows[0][1]
    print(f"{len(sids)} records, {n_events:,} events, torch {torch.__version__}")
    print(f"{'case':<28}{'records/s':>12}{'events/s':>16}{'vs floor':>10}")
    for name, rps, eps in rows:
        print(f"{name:<28}{rps:>12,.0f}{eps:>16,.0f}{rps / floor:>10.2f}")
    for workers, mb in peaks.items():
        print(f"peak RSS per loading process, workers={workers}: {mb:,.0f} MB")


def random_cases(vdir, min_items: int, seed: int, limit: int | None) -> dict:
    """Items/s in a seeded random order over all patients (or `limit` of them): as many
    passes as make `min_items` items (a 100-patient demo is timed over as many items as a
    big version), after one untimed warm-up pass of each case."""
    import numpy as np
    import zstandard
    from torch.utils.data import DataLoader, Subset

    from trajectory.record import frames
    from trajectory import open_version
    from trajectory.torch import TrajectoryDataset

    t = time.perf_counter()
    ds = TrajectoryDataset(vdir, with_windows=True)
    opened = time.perf_counter() - t
    v = open_version(vdir)
    order = np.random.default_rng(seed).permutation(len(ds))[:limit]
    sids = ds.subject_ids
    dctx = zstandard.ZstdDecompressor()
    passes = max(1, -(-min_items // len(order)))
    out = {"version": str(vdir), "patients": len(ds), "items": len(order) * passes,
           "open_seconds": round(opened, 3)}

    def case(name, fn):
        fn()
        fn_t = time.perf_counter()
        for _ in range(passes):
            fn()
        out[name] = len(order) * passes / (time.perf_counter() - fn_t)

    case("read+inflate (floor)", lambda: drain(
        dctx.decompress(f) for i in order for f in frames(v.read_bytes(int(sids[i])))))
    case("dataset[i], 1 process", lambda: drain(ds[int(i)] for i in order))
    dl = DataLoader(Subset(ds, order.tolist()), batch_size=16, num_workers=2,
                    collate_fn=collate_with_rss, persistent_workers=True)
    seen = []
    case("DataLoader workers=2", lambda: seen.extend(r for _, r in dl))
    out["peak_worker_mb"] = round(max(seen), 1)
    return out


def print_random(results: list[dict]) -> None:
    cases = ("read+inflate (floor)", "dataset[i], 1 process", "DataLoader workers=2")
    print(f"{'random order, items/s':<28}" + "".join(f"{Path(r['version']).parent.name + '/' + Path(r['version']).name:>22}"
                                            for r in results)
          + ("  last/first" if len(results) > 1 else ""))
    for key in ("patients", "items", "open_seconds", *cases, "peak_worker_mb"):
        vals = [r[key] for r in results]
        line = f"{key:<28}" + "".join(f"{x:>22,.3f}" if isinstance(x, float) else f"{x:>22,}"
                                      for x in vals)
        if len(results) > 1 and key in cases:
            line += f"  {vals[-1] / vals[0]:>9.2f}"
        print(line)


# ---- one task-cut case, in its own process -------------------------------------------------


class _Collate:
    """Picklable collate wrapper: (batch, RSS of the process that collated, events in it,
    its pid and CPU seconds so far)."""

    def __init__(self, fn, count):
        self.fn, self.count = fn, count

    def __call__(self, items):
        return self.fn(items), _rss_mb(), self.count(items), os.getpid(), time.process_time()


def _mtd_packed(items):
    """meds-torch-data's items concatenated (its own collate only pads): code,
    numeric_value, time_delta_days 1-D, offsets [B+1], boolean_value [B]."""
    import torch
    dense = [it["dynamic"].to_dense() for it in items]
    lengths = torch.tensor([len(d["code"]) for d in dense], dtype=torch.int64)
    out = {k: torch.cat([torch.from_numpy(d[k]) for d in dense])
           for k in ("code", "numeric_value", "time_delta_days")}
    out["offsets"] = torch.zeros(len(items) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=out["offsets"][1:])
    out["boolean_value"] = torch.tensor([bool(it["boolean_value"]) for it in items])
    return out


def _mtd_count(items) -> int:
    return sum(len(it["dynamic"].to_dense()["code"]) for it in items)


def _ours_count(items) -> int:
    return sum(it["length"] for it in items)


def run_case(spec: dict) -> dict:
    """One loader, one setting: items/s over spec['repeat'] passes after a warm-up pass, peak
    RSS of a loading process, and the items' mean number of events."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)  # both loaders alike; DataLoader workers use one thread anyway
    t0 = time.perf_counter()
    if spec["loader"] == "ours":
        from trajectory.torch import TrajectoryDataset, collate_packed, collate_trajectories
        ds = TrajectoryDataset(spec["version_dir"], task=spec["task"], split="train",
                               max_events=spec["max_events"], with_windows=False)
        fn = collate_trajectories if spec["collate"] == "padded" else collate_packed
        collate = _Collate(fn, _ours_count)
    else:
        from meds_torchdata import MEDSPytorchDataset, MEDSTorchDataConfig
        cfg = MEDSTorchDataConfig(tensorized_cohort_dir=spec["mtd_dir"],
                                  max_seq_len=spec["max_events"],
                                  task_labels_dir=spec["labels_dir"],
                                  seq_sampling_strategy="to_end", static_inclusion_mode="omit",
                                  batch_mode="SM")
        ds = MEDSPytorchDataset(cfg, split="train")
        fn = ds.collate if spec["collate"] == "padded" else _mtd_packed
        collate = _Collate(fn, _mtd_count)
    init_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0) if spec["shuffle"] else None
    dl = DataLoader(ds, batch_size=spec["batch_size"], num_workers=spec["workers"],
                    collate_fn=collate, shuffle=spec["shuffle"], generator=gen,
                    persistent_workers=spec["workers"] > 0)
    # CPU seconds as well as wall: on a shared machine the wall clock also counts the others
    me = os.getpid()
    warm = {pid: cpu for _, _, _, pid, cpu in dl}  # warm-up: starts workers, fills page cache
    rss, events, last = [], 0, {}
    t, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(spec["repeat"]):
        for _, r, n, pid, cpu in dl:
            rss.append(r)
            events += n
            last[pid] = cpu
    dt = time.perf_counter() - t
    cpu = time.process_time() - cpu0 + sum(c - warm[p] for p, c in last.items() if p != me)
    items = len(ds) * spec["repeat"]
    return {"items": len(ds), "items_per_s": items / dt, "events_per_item": events / items,
            "cpu_ms_per_item": 1000 * cpu / items, "peak_rss_mb": max(rss), "init_s": init_s}


def _spawn(python, spec: dict) -> dict:
    r = subprocess.run([str(python), str(Path(__file__).resolve()), "--case", json.dumps(spec)],
                       capture_output=True, text=True, env={**os.environ,
                                                            "PYTHONPATH": str(REPO)})
    if r.returncode:
        raise RuntimeError(f"{spec['loader']} case failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- the MEDS side's inputs -----------------------------------------------------------------


def _tools_python(given):
    py = given or os.environ.get("MEDS_TOOLS_PYTHON")
    return Path(py).absolute() if py and Path(py).exists() else None


def prepare_mtd(vdir: Path, tasks: list[str], tools: Path, work: Path, meds_dir) -> Path:
    """The MEDS export of `vdir` tensorized by MTD_preprocess, with each task's labels in
    task_labels/<task>/; reused when already there (keyed by the version's config hash)."""
    meta = json.loads((vdir / "dataset.json").read_text())
    key = f"{vdir.name}-{meta.get('config_hash', 'nohash')}"
    mtd = work / f"mtd-{key}"
    if meds_dir is None:
        meds_dir = work / f"meds-{key}"
        if not (meds_dir / "metadata" / "dataset.json").exists():
            shutil.rmtree(meds_dir, ignore_errors=True)
            subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "export",
                            "meds", str(vdir), str(meds_dir)], check=True, capture_output=True)
    if not (mtd / ".done").exists():
        shutil.rmtree(mtd, ignore_errors=True)
        t = time.perf_counter()
        env = {**os.environ, "PATH": f"{tools.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        r = subprocess.run([str(tools.parent / "MTD_preprocess"), f"MEDS_dataset_dir={meds_dir}",
                            f"output_dir={mtd}"], capture_output=True, text=True, env=env)
        if r.returncode:
            raise RuntimeError(f"MTD_preprocess failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        print(f"MTD_preprocess of the MEDS export: {time.perf_counter() - t:.1f} s")
        (mtd / ".done").touch()
    for task in tasks:
        dst = mtd / "task_labels" / task
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vdir / "tasks" / f"{task}.parquet", dst / "0.parquet")
    return mtd


def task_cases(vdir: Path, args) -> None:
    for task in args.task:
        if not (vdir / "tasks" / f"{task}.parquet").exists():
            subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "tasks",
                            str(vdir), "--task", task], check=True, capture_output=True)
    tools = _tools_python(args.tools_python)
    mtd = None
    if tools is None:
        print("meds-torch-data: no tools venv (--tools-python / MEDS_TOOLS_PYTHON); "
              "the project's loader only")
    else:
        mtd = prepare_mtd(vdir, args.task, tools, Path(args.work), args.meds_dir)
    # the four cases in file order, then two shuffled ones (where no two consecutive
    # items share a subject, so no loader reuses a decoded record)
    cases = [(w, c, False) for w in (0, 2) for c in ("padded", "packed")]
    cases += [(0, "packed", True), (2, "padded", True)]
    print(f"task-cut cases: train split, batch {args.batch_size}, last {args.max_events} events "
          f"up to the prediction time, {args.task_repeat} passes after a warm-up, one process "
          f"per case; best of {args.rounds} interleaved rounds (peak RSS: the largest)")
    best: dict = {}
    for _ in range(args.rounds):
        for task in args.task:
            for workers, collate, shuffle in cases:
                spec = {"task": task, "workers": workers, "collate": collate,
                        "shuffle": shuffle, "batch_size": args.batch_size,
                        "max_events": args.max_events, "repeat": args.task_repeat}
                runs = [("trajectory", sys.executable, {**spec, "loader": "ours",
                                                        "version_dir": str(vdir)})]
                if mtd is not None:
                    runs.append(("meds-torch-data", tools,
                                 {**spec, "loader": "mtd", "mtd_dir": str(mtd),
                                  "labels_dir": str(mtd / "task_labels" / task)}))
                for name, py, s in runs:
                    r, key = _spawn(py, s), (task, workers, collate, shuffle, name)
                    b = best.setdefault(key, r)
                    b.update(items_per_s=max(b["items_per_s"], r["items_per_s"]),
                             cpu_ms_per_item=min(b["cpu_ms_per_item"], r["cpu_ms_per_item"]),
                             peak_rss_mb=max(b["peak_rss_mb"], r["peak_rss_mb"]),
                             init_s=min(b["init_s"], r["init_s"]))
    print(f"| task | workers | collate | order | loader | items | events/item | items/s "
          "| CPU ms/item | peak RSS MB | init s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for (task, workers, collate, shuffle, name), r in best.items():
        print(f"| {task} | {workers} | {collate} | {'shuffled' if shuffle else 'file'} | {name} "
              f"| {r['items']} | {r['events_per_item']:,.0f} | {r['items_per_s']:,.0f} "
              f"| {r['cpu_ms_per_item']:.2f} | {r['peak_rss_mb']:,.0f} | {r['init_s']:.2f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version-dir", action="append", default=None,
                   help="a built version (repeatable with --order random)")
    p.add_argument("--order", choices=("file", "random"), default="file",
                   help="patient cases: manifest order (warm bytes) or a seeded random order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="random order: this many patients")
    p.add_argument("--min-items", type=int, default=20_000,
                   help="random order: passes enough to time at least this many items")
    p.add_argument("--repeat", type=int, default=3, help="passes over the version per case")
    p.add_argument("--task", action="append", default=[],
                   help="task-cut cases for this task (repeatable) instead of patient cases")
    p.add_argument("--task-repeat", type=int, default=10, help="timed passes per task case")
    p.add_argument("--rounds", type=int, default=3, help="task cases: best of this many runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-events", type=int, default=2048)
    p.add_argument("--tools-python", default=None, help="the MEDS tools venv's python")
    p.add_argument("--meds-dir", default=None, help="an existing MEDS export of the version")
    p.add_argument("--work", default="/tmp/bench_loader", help="cached export and tensorization")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    if args.order == "random":
        results = [random_cases(Path(v).absolute(), args.min_items, args.seed, args.limit)
                   for v in args.version_dir or p.error("--order random needs --version-dir")]
        print_random(results)
        print(json.dumps(results))
        return 0
    vdir = args.version_dir[-1] if args.version_dir else None
    if vdir is None:
        out = Path(args.work)
        demo = os.environ.get("MIMIC_DEMO_DIR", REPO.parent / "shared/data/mimic-iv-demo")
        if not (out / "v1" / "dataset.json").exists():
            subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "--data-dir",
                            str(demo), "--out-dir", str(out), "--quiet"], check=True)
        vdir = out / "v1"
    vdir = Path(vdir).absolute()
    if args.task:
        task_cases(vdir, args)
    else:
        patient_cases(vdir, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
