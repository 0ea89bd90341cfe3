"""What charttime cutting leaks: per task, the samples a cut on `known_time` changes and the
events per sample it drops (labs, microbiology, notes, the rest), against a cut on `time` as
MEDS, ACES and the benchmarks make it; and the note detail rows that only a note id assigns.

    python benchmarks/known_time_effect.py --data-dir ../shared/data/mimic-iv-demo \
        --data-dir /tmp/demo_notes [--work /tmp/known_effect]
    python benchmarks/known_time_effect.py --version-dir trajectories/v1

A demo with notes: `python -m trajectory.demo_notes ../shared/data/mimic-iv-demo
/tmp/demo_notes` (the shared demo has no note/ module). Each --data-dir is built (serial
runner) under --work unless a finished version is there, and labelled with every built-in task.

Each sample is read twice through `trajectory.torch.TrajectoryDataset(task=...)`, with
`cut_rule="known"` (the default) and `cut_rule="charttime"`, whole (no max_events), windows
included; nothing is recomputed here. A sample *changes* when its events or any of its window
rows differ (a known item's rows count only what was known at its prediction time, a
charttime item's every value charted in them). ms/item: the time of one item under each rule,
in this process, the known one first (so it inflates the record's chunks). Dropped = events in the charttime item and not in the known one (the known cut
keeps a subset: known_time >= time), per sample, averaged over all samples of the task, by
source: labs (labevents), micro (microbiologyevents), notes (discharge, radiology and their
detail rows), icu (chartevents, datetimeevents, inputs, ingredients, outputs, procedure
events), meds (emar and its details, pharmacy), billing (procedures_icd, hcpcsevents: known at
discharge), other. Window rows = rows (of all blocks) whose statistics differ, per sample,
and their share of the sample's window rows.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trajectory.events.tables import SOURCE_ID  # noqa: E402
from trajectory.use.tasks import TASKS  # noqa: E402

# source table -> the column it is counted in
GROUPS = {"labevents": "labs", "microbiologyevents": "micro", "discharge": "notes",
          "radiology": "notes", "discharge_detail": "notes", "radiology_detail": "notes",
          **dict.fromkeys(("chartevents", "datetimeevents", "inputevents", "ingredientevents",
                           "outputevents", "procedureevents"), "icu"),
          **dict.fromkeys(("emar", "emar_detail", "pharmacy"), "meds"),
          **dict.fromkeys(("procedures_icd", "hcpcsevents"), "billing")}
COLUMNS = ("labs", "micro", "notes", "icu", "meds", "billing", "other")


def build(data_dir: Path, work: Path) -> Path:
    """The finished version of `data_dir` under `work` (built once), with its task labels."""
    from jobs.driver import run_build
    from jobs.tasks import run_tasks

    import config

    out = work / data_dir.resolve().name
    cfg = config.load({"DATA_DIR": str(data_dir), "OUT_DIR": str(out), "RUNNER": "serial"},
                      environ={})
    if not (cfg.version_dir / "dataset.json").exists():
        run_build(cfg, progress=False)
    if not all((cfg.version_dir / "tasks" / f"{t}.parquet").exists() for t in TASKS):
        run_tasks(cfg.version_dir, None, progress=False)
    return cfg.version_dir


def group_of(sources: dict) -> np.ndarray:
    """Column index (COLUMNS) of every source id."""
    lut = np.full(256, COLUMNS.index("other"), np.int64)
    for sid, name in sources.items():
        lut[int(sid)] = COLUMNS.index(GROUPS.get(name, "other"))
    return lut


def task_effect(version_dir: Path, task: str, lut: np.ndarray) -> dict:
    """Samples, samples changed, and per sample: events dropped by column, window rows
    changed (and their share of the sample's window rows), for one task."""
    import torch

    from trajectory.torch import TrajectoryDataset

    known = TrajectoryDataset(version_dir, task=task)
    chart = TrajectoryDataset(version_dir, task=task, cut_rule="charttime")
    dropped, rows, changed, all_rows = np.zeros(len(COLUMNS), np.int64), 0, 0, 0
    seconds = {"known": 0.0, "charttime": 0.0}
    if len(known):
        known[0], chart[0]  # the window kernel's first call loads its compiled code
    for i in range(len(known)):
        t0 = time.perf_counter()
        k = known[i]
        t1 = time.perf_counter()
        c = chart[i]
        seconds["known"] += t1 - t0
        seconds["charttime"] += time.perf_counter() - t1
        n = np.bincount(lut[c["source"].numpy()], minlength=len(COLUMNS)) - np.bincount(
            lut[k["source"].numpy()], minlength=len(COLUMNS))
        dropped += n
        diff = sum(int((a["data"].view(torch.int32) != b["data"].view(torch.int32))  # NaN==NaN
                       .reshape(len(a["data"]), -1).any(1).sum())
                   for a, b in zip(k["windows"], c["windows"]))
        rows += diff
        all_rows += sum(len(a["data"]) for a in k["windows"])
        changed += bool(n.any() or diff)
    m = max(len(known), 1)
    return {"samples": len(known), "changed": changed,
            **{col: dropped[j] / m for j, col in enumerate(COLUMNS)},
            "window_rows": rows / m, "window_share": rows / max(all_rows, 1),
            "ms_known": 1000 * seconds["known"] / m, "ms_charttime": 1000 * seconds["charttime"] / m}


def detail_links(version_dir: Path) -> dict:
    """Note detail rows of the version; how many a (subject, time, admission) match leaves
    without exactly one note (how a reader had to link them before format 3), and how many
    have their own note's id now."""
    from trajectory.use.store import open_version

    v = open_version(version_dir)
    details = {SOURCE_ID["discharge_detail"], SOURCE_ID["radiology_detail"]}
    notes = {SOURCE_ID["discharge"], SOURCE_ID["radiology"]}
    total = ambiguous = linked = 0
    for p in v:
        src, t, h = p.events["source"], p.events["time"], p.events["hadm_id"]
        at = {}
        for i in np.flatnonzero(np.isin(src, list(notes))):
            at.setdefault((int(t[i]), int(h[i])), []).append(i)
        own = dict(zip(p.notes["event"], p.notes["note_id"]))
        for i in np.flatnonzero(np.isin(src, list(details))):
            total += 1
            ambiguous += len(at.get((int(t[i]), int(h[i])), [])) != 1
            linked += own.get(int(i)) is not None
    return {"detail_rows": total, "ambiguous_by_time": ambiguous, "with_note_id": linked}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", action="append", default=[], type=Path)
    ap.add_argument("--version-dir", action="append", default=[], type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/known_effect"))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    versions = [build(d, args.work) for d in args.data_dir] + args.version_dir
    if not versions:
        ap.error("give --data-dir or --version-dir")
    out = {}
    print("| data | task | samples | changed | " + " | ".join(COLUMNS)
          + " | window rows (share) | ms/item known, charttime |")
    print("|---|---|---|---|" + "---|" * len(COLUMNS) + "---|---|")
    for vdir in versions:
        meta = json.loads((vdir / "dataset.json").read_text())
        lut = group_of(meta["sources"])
        name = vdir.parent.name  # build() puts each version under the input's name
        t0 = time.perf_counter()
        for task in TASKS:
            r = task_effect(vdir, task, lut)
            out[f"{name}/{task}"] = r
            print(f"| {name} | {task} | {r['samples']} | {r['changed']} "
                  f"({100 * r['changed'] / max(r['samples'], 1):.0f}%) | "
                  + " | ".join(f"{r[c]:.1f}" for c in COLUMNS)
                  + f" | {r['window_rows']:.1f} ({100 * r['window_share']:.1f}%) | "
                  f"{r['ms_known']:.2f}, {r['ms_charttime']:.2f} |")
        links = detail_links(vdir)
        out[f"{name}/detail_links"] = links
        print(f"<!-- {name}: {time.perf_counter() - t0:.1f} s; note detail rows "
              f"{links['detail_rows']:,}, {links['ambiguous_by_time']:,} without exactly one "
              f"note of their (time, admission), {links['with_note_id']:,} with their note's "
              "id -->")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
