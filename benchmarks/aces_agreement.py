"""ACES, run with MEDS-DEV's published MIMIC-IV configs on a MEDS export, against the project's
own built-in tasks on the version it came from.

    python build_patient_files.py tasks VERSION_DIR
    python build_patient_files.py export meds VERSION_DIR MEDS_DIR
    bash tests/meds_tools_setup.sh        # the tools venv (polars<2): prints its python
    python benchmarks/aces_agreement.py VERSION_DIR MEDS_DIR [--tools-python .venv-meds/bin/python]
        [--community ../shared/data/mimic-iv-demo-meds/mimic_iv_demo_meds_events.parquet]

For each task, ACES (`aces-cli` of the tools venv) runs MEDS-DEV's task config with the
MIMIC-IV dataset predicates as its `predicates_path` override, exactly as `meds-dev-task` does
(the task configs leave `???` where a dataset's predicates go); both files are read from the
installed `meds-dev` package, unchanged. Samples are matched on (subject_id, prediction_time);
agreement = samples in both with the same label / samples on either side. Every sample in only
one side, and every label disagreement, is listed with the patient's task times around it.
`--community` also runs ACES on the community's own MIMIC-IV demo conversion (one parquet of
MEDS events) and compares those labels with ours the same way.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trajectory.use.store import open_version  # noqa: E402
from trajectory.use.tasks import HOUR, timeline  # noqa: E402

# our task -> MEDS-DEV's task config (relative to the installed MEDS_DEV package)
TASK_CONFIGS = {
    "mortality_in_icu_first_24h": "tasks/mortality/in_icu/first_24h.yaml",
    "readmission_30d": "tasks/readmission/general_hospital/30d.yaml",
}
PREDICATES = "datasets/MIMIC-IV/predicates.yaml"
KEY = ["subject_id", "prediction_time"]


def tools_python(given: str | None = None) -> Path:
    """The tools venv's python: `given`, else $MEDS_TOOLS_PYTHON (set by .ci/run)."""
    py = given or os.environ.get("MEDS_TOOLS_PYTHON")
    if not py or not Path(py).exists():
        raise FileNotFoundError("no MEDS tools venv: run `bash tests/meds_tools_setup.sh` and "
                                "pass --tools-python or set MEDS_TOOLS_PYTHON to the python it "
                                f"prints (got {py!r})")
    return Path(py).absolute()  # not resolve(): a venv python is a link to the base one


def meds_dev_dir(py: Path) -> Path:
    """Where the tools venv installed the MEDS_DEV package (found, not imported: its
    __init__ wants dependencies that were deliberately not installed)."""
    code = ("import importlib.util as u; "
            "print(u.find_spec('MEDS_DEV').submodule_search_locations[0])")
    return Path(subprocess.run([str(py), "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip())


def run_aces(py: Path, meds_dir: Path, task_config: Path, predicates: Path,
             out_dir: Path) -> pl.DataFrame:
    """ACES over every data shard of `meds_dir` (as `meds-dev-task` calls it); the labels of
    all shards, sorted by (subject_id, prediction_time)."""
    data = Path(meds_dir) / "data"
    bin_dir = py.parent
    shards = subprocess.run([str(bin_dir / "expand_shards"), str(data)], check=True,
                            capture_output=True, text=True).stdout.strip()
    out_dir = Path(out_dir)
    cmd = [str(bin_dir / "aces-cli"), "--multirun", "data=sharded", "data.standard=meds",
           f"data.root={data}", f"data.shard={shards}", f"config_path={task_config}",
           f"predicates_path={predicates}",
           f"output_filepath={out_dir / 'labels'}/${{data._prefix}}.parquet",
           f"log_dir={out_dir / 'logs'}"]
    shutil.rmtree(out_dir / "labels", ignore_errors=True)  # no stale shard from another run
    out_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=out_dir.parent)
    if r.returncode:
        raise RuntimeError(f"aces-cli failed ({r.returncode}) on {task_config}:\n"
                           f"{r.stderr[-4000:]}")
    files = sorted((out_dir / "labels").rglob("*.parquet"))
    if not files:
        raise RuntimeError(f"aces-cli wrote no labels under {out_dir / 'labels'}")
    return (pl.concat([pl.read_parquet(f, columns=KEY + ["boolean_value"]) for f in files])
            .sort(KEY))


def community_as_meds(events_parquet: Path, out_dir: Path) -> Path:
    """The shared community demo (one parquet: subject_id, time, code, table, value) as a
    one-shard MEDS data folder ACES can read."""
    df = (pl.read_parquet(events_parquet)
          .select("subject_id", "time", "code", pl.col("value").alias("numeric_value"))
          .sort("subject_id", "time", nulls_last=False, maintain_order=True))
    (Path(out_dir) / "data" / "train").mkdir(parents=True, exist_ok=True)
    df.write_parquet(Path(out_dir) / "data" / "train" / "0.parquet")
    return Path(out_dir)


def compare(aces: pl.DataFrame, ours: pl.DataFrame) -> tuple[dict, pl.DataFrame]:
    """Figures and the disagreeing rows (`kind`: only_aces, only_ours, label)."""
    a = aces.select(KEY + [pl.col("boolean_value").alias("aces")])
    o = ours.select(pl.col("subject_id").cast(pl.Int64),
                    pl.col("prediction_time").cast(pl.Datetime("us")),
                    pl.col("boolean_value").alias("ours"))
    j = a.join(o, on=KEY, how="full", coalesce=True).sort(KEY)
    kind = (pl.when(pl.col("ours").is_null()).then(pl.lit("only_aces"))
            .when(pl.col("aces").is_null()).then(pl.lit("only_ours"))
            .when(pl.col("aces") != pl.col("ours")).then(pl.lit("label"))
            .otherwise(pl.lit("agree")))
    j = j.with_columns(kind.alias("kind"))
    counts = dict(zip(*j["kind"].value_counts().select("kind", "count")
                      .to_dict(as_series=False).values()))
    figures = {"aces": a.height, "ours": o.height,
               "aces_positive": int(a["aces"].sum()), "ours_positive": int(o["ours"].sum()),
               "both": j.height - counts.get("only_aces", 0) - counts.get("only_ours", 0),
               "agree": counts.get("agree", 0), "only_aces": counts.get("only_aces", 0),
               "only_ours": counts.get("only_ours", 0), "label": counts.get("label", 0),
               "union": j.height}
    figures["agreement"] = figures["agree"] / j.height if j.height else 1.0
    return figures, j.filter(pl.col("kind") != "agree")


def _fmt(t: int | None, ref: int) -> str:
    if t is None:
        return "-"
    return (f"{datetime.fromtimestamp(t, timezone.utc):%Y-%m-%d %H:%M} "
            f"({(t - ref) / HOUR:+.1f} h)")


def explain(version_dir, task: str, row: dict) -> str:
    """The patient's task times relative to the disagreeing prediction time, and the known
    definition difference it matches (README "Tasks": where we depart from ACES), if any."""
    v = open_version(version_dir)
    sid = int(row["subject_id"])
    pred = int(row["prediction_time"].replace(tzinfo=timezone.utc).timestamp())
    last = v.manifest.filter(pl.col("subject_id") == sid)["last_time"].to_list()
    tl = timeline(v.raw(sid), last[0] if last else None)
    lines = [f"{row['kind']}: subject {sid} at {_fmt(pred, pred)}, ACES {row['aces']}, "
             f"ours {row['ours']}",
             f"  death {_fmt(tl.death, pred)}; last event {_fmt(tl.last_time, pred)}"]
    lines += [f"  admission {a.hadm_id}: {_fmt(a.admittime, pred)} -> {_fmt(a.dischtime, pred)}"
              f", deathtime {_fmt(a.deathtime, pred)}" for a in tl.admissions]
    lines += [f"  ICU stay {s.stay_id}: {_fmt(s.intime, pred)} -> {_fmt(s.outtime, pred)}"
              for s in tl.stays]
    why = "no known definition difference matches: compare the times above"
    if task == "mortality_in_icu_first_24h" and row["kind"] == "only_aces":
        stay = next((s for s in tl.stays if s.intime is not None
                     and s.intime + 24 * HOUR == pred), None)
        if stay is not None and tl.death is not None and tl.death <= stay.intime:
            why = ("death_at_or_before_icu_admission: we exclude a stay whose death (a "
                   "date-only dod) is at or before its intime; ACES labels it negative")
    if task == "readmission_30d" and row["kind"] == "only_aces":
        adm = next((a for a in tl.admissions if a.dischtime == pred), None)
        if adm is not None and (adm.deathtime is not None
                                or (tl.death is not None and tl.death <= pred)):
            why = ("died_in_admission: we exclude a discharge of an admission that ended in "
                   "death; ACES keeps it when events follow more than 30 d later")
    return "\n".join(lines + [f"  reason: {why}"])


def agreement(version_dir, meds_dir, py: Path, work: Path,
              community: Path | None = None) -> dict:
    """{source: {task: (figures, disagreements)}} for the export (and the community demo)."""
    md = meds_dev_dir(py)
    sources = {"export": Path(meds_dir)}
    if community is not None:
        sources["community"] = community_as_meds(community, work / "community_meds")
    out = {}
    for source, mdir in sources.items():
        out[source] = {}
        for task, cfg in TASK_CONFIGS.items():
            labels = run_aces(py, mdir, md / cfg, md / PREDICATES, work / source / task)
            ours = pl.read_parquet(Path(version_dir) / "tasks" / f"{task}.parquet")
            out[source][task] = compare(labels, ours)
    return out


def report(version_dir, results: dict) -> str:
    lines = []
    for source, tasks in results.items():
        for task, (f, dis) in tasks.items():
            lines.append(f"{task} (ACES on {source} vs built-in): ACES {f['aces']} samples "
                         f"({f['aces_positive']} positive), ours {f['ours']} "
                         f"({f['ours_positive']} positive); in both {f['both']}, same label "
                         f"{f['agree']}; only ACES {f['only_aces']}, only ours "
                         f"{f['only_ours']}, label differs {f['label']}; agreement "
                         f"{f['agree']}/{f['union']} = {f['agreement']:.1%}")
            lines += [explain(version_dir, task, r) for r in dis.iter_rows(named=True)]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("version_dir")
    p.add_argument("meds_dir")
    p.add_argument("--tools-python", default=None)
    p.add_argument("--community", default=None, help="the community's MEDS demo events parquet")
    p.add_argument("--work", default="/tmp/aces_agreement", help="ACES outputs and logs")
    p.add_argument("--min-agreement", type=float, default=0.95)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = agreement(args.version_dir, args.meds_dir, tools_python(args.tools_python), work,
                        Path(args.community) if args.community else None)
    print(report(args.version_dir, results))
    worst = min(f["agreement"] for tasks in results.values() for f, _ in tasks.values())
    return 0 if worst >= args.min_agreement else 1


if __name__ == "__main__":
    raise SystemExit(main())
