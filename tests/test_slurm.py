"""The build on a real SLURM cluster: `submit --slurm` job arrays (clean, and killed then
resubmitted) and the dask-jobqueue cluster, each byte-identical to the serial demo build.

Needs a running cluster (CI: `bash slurm/start_cluster.sh` as root); skipped otherwise.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import polars as pl
import pytest

from .conftest import REPO, demo_dir, make_cfg


def _slurm_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "SLURM not installed (no sbatch on PATH); run `bash slurm/start_cluster.sh` as root"
    try:
        r = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo failed ({e}); is the cluster up? `bash slurm/start_cluster.sh`"
    if r.returncode != 0 or not r.stdout.strip():
        return (f"sinfo failed (rc {r.returncode}: {r.stderr.strip()[:200]}); is the cluster "
                "up? `bash slurm/start_cluster.sh`")
    return None


_PROBLEM = _slurm_problem()
needs_slurm = pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")

CLI = [sys.executable, str(REPO / "build_patient_files.py")]
TIMEOUT = 180


def submit(out, *extra) -> dict[str, str]:
    """Run `submit --slurm` as a user would; {stage: job id}."""
    r = subprocess.run(CLI + ["submit", "--slurm", "--data-dir", str(demo_dir()),
                              "--out-dir", str(out), "--time", "00:10:00", *extra],
                       check=True, capture_output=True, text=True)
    return dict(re.findall(r"^(\w+): job (\d+)", r.stdout, re.M))


def wait(ids, timeout=TIMEOUT):
    ids = ",".join(ids)
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["squeue", "-h", "-j", ids, "-o", "%i"], capture_output=True,
                           text=True)
        if not r.stdout.strip():
            return
        time.sleep(0.5)
    subprocess.run(["scancel", *ids.split(",")])
    pytest.fail(f"SLURM jobs {ids} still queued after {timeout}s")


def logs(cfg) -> str:
    out = []
    for p in sorted((cfg.work_dir / "slurm" / "logs").glob("*.out")):
        out.append(f"--- {p.name}\n{p.read_text()[-2000:]}")
    return "\n".join(out)


def checksums(cfg) -> pl.DataFrame:
    return pl.read_parquet(cfg.version_dir / "manifest.parquet").select("subject_id", "checksum")


@needs_slurm
def test_submit_demo_matches_serial_build(demo_build, tmp_path):
    ref_cfg, _ = demo_build
    out = tmp_path / "sub"
    # units cut small: a scan array (cut points, gzip seek points) runs before the partition
    # array, whose tasks then each read one byte range of chartevents, labevents, ...
    jobs = submit(out, "--partition-unit-mb", "0.5", "--index-dir", str(tmp_path / "idx"))
    assert set(jobs) == {"scan", "partition", "build", "finalize"}, jobs
    wait(jobs.values())
    cfg = make_cfg(demo_dir(), out, partition_unit_mb=0.5, index_dir=tmp_path / "idx")
    assert json.loads((cfg.work_dir / "plan.json").read_text())["parts"]["chartevents"] > 1
    assert (cfg.version_dir / "dataset.json").exists(), logs(cfg)
    assert checksums(cfg).equals(checksums(ref_cfg))
    # nothing left to do: a second submit with the same inputs and config submits nothing
    # and says the version is up to date; another config is refused, as build does.
    argv = CLI + ["submit", "--slurm", "--data-dir", str(demo_dir()), "--out-dir", str(out)]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(argv + ["--zstd-level", "5"], capture_output=True, text=True)
    assert r.returncode == 2 and "finished version of other inputs or config" in r.stderr


def _task_state(task: str) -> str:
    r = subprocess.run(["scontrol", "show", "job", task], capture_output=True, text=True)
    m = re.search(r"JobState=(\w+)", r.stdout)
    return m.group(1) if m else "UNKNOWN"


@needs_slurm
def test_killed_array_task_then_resubmit(demo_build, tmp_path):
    ref_cfg, _ = demo_build
    out = tmp_path / "killed"
    cfg = make_cfg(demo_dir(), out, n_shards=8)
    jobs = submit(out, "--n-shards", "8")
    build_job = jobs["build"]
    killed, deadline = None, time.time() + TIMEOUT
    while killed is None and time.time() < deadline:
        running = subprocess.run(["squeue", "-h", "-j", build_job, "-t", "R", "-o", "%i"],
                                 capture_output=True, text=True).stdout.split()
        for task in running:
            subprocess.run(["scancel", "--signal=KILL", task])
            time.sleep(1)
            if _task_state(task) != "COMPLETED":  # not finished before the kill landed
                killed = task
                break
        if not running and not subprocess.run(["squeue", "-h", "-j", build_job, "-o", "%i"],
                                               capture_output=True, text=True).stdout.strip():
            break  # the whole array finished before any kill landed
        time.sleep(0.05)
    assert killed, f"no build task could be killed while running\n{logs(cfg)}"
    # finalize depends afterok on the array: never runs (cancelled by kill_invalid_depend, or
    # left pending on clusters without it, hence the explicit scancel).
    subprocess.run(["scancel", jobs["finalize"]])
    wait(jobs.values())
    assert not (cfg.version_dir / "dataset.json").exists()
    # build markers in the version's work folder, stage-1 ones in the shared cache
    markers = {p: p.stat().st_mtime_ns for d in (cfg.work_dir / "done", cfg.cache_dir)
               for p in d.rglob("*.json")}
    built = [p for p in markers if p.parent.name == "build"]
    assert len(built) < 8, f"killed task {killed} left all shards built"
    assert len([p for p in markers if p.name == "done.json"]) > 0  # partition units

    again = submit(out, "--n-shards", "8")
    assert "partition" not in again and set(again) == {"build", "finalize"}, again
    wait(again.values())
    assert (cfg.version_dir / "dataset.json").exists(), logs(cfg)
    for p, mtime in markers.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    assert checksums(cfg).equals(checksums(ref_cfg))


@needs_slurm
def test_dask_jobqueue_cluster_build(demo_build, tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed (pip install "
                        "-e '.[slurm]')")
    ref_cfg, _ = demo_build
    out = tmp_path / "jq"
    env = {**os.environ, "MAX_CPUS": "2"}
    subprocess.run(CLI + ["--data-dir", str(demo_dir()), "--out-dir", str(out), "--quiet",
                          "--runner", "dask", "--cluster", "slurm"],
                   check=True, env=env, timeout=TIMEOUT)
    cfg = make_cfg(demo_dir(), out)
    assert checksums(cfg).equals(checksums(ref_cfg))
    # the workers really were SLURM jobs
    assert any((cfg.work_dir / "slurm" / "dask-logs").iterdir())


# ---- no cluster needed ----------------------------------------------------------------------

def test_config_json_round_trip(tmp_path):
    import json

    import config

    cfg = make_cfg(tmp_path, tmp_path / "o", drop_rules="duplicate,range", n_shards=3)
    back = config.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg and back.output_hash() == cfg.output_hash()
    assert isinstance(back.drop_rules, tuple) and isinstance(back.work_dir, type(cfg.work_dir))


def test_render_disables_empty_sbatch_lines():
    from jobs.slurm import TEMPLATE, render

    values = {"job_name": "j", "partition": None, "account": "", "time": "01:00:00",
              "mem": "4096M", "cpus_per_task": 1, "log_dir": "/l", "repo": "/r",
              "python": "/py", "stage": "build", "per_task": 3, "config": "/c.json"}
    text = render(TEMPLATE.read_text(), values)
    assert "##SBATCH --partition=\n" in text and "##SBATCH --account=\n" in text
    assert "#SBATCH --time=01:00:00\n" in text and "{{" not in text
    assert '--stage build --task "${SLURM_ARRAY_TASK_ID:-0}"' in text and "--per-task 3" in text


def test_array_task_runs_its_slice(demo_build, tmp_path):
    """jobs.array with a dry-run submit's config.json: task 1 of per-task 2 builds shards 2, 3."""
    from jobs import array
    from jobs.common import done_path
    from trajectory.events.plan import load_plan
    from jobs.slurm import submit as slurm_submit

    ref_cfg, _ = demo_build
    cfg = make_cfg(demo_dir(), tmp_path / "arr", n_shards=4)
    res = slurm_submit(cfg, dry_run=True, progress=False)
    assert res["jobs"] == {} and set(res["commands"]) == {"partition", "build", "finalize"}
    assert "--array=0-3%" in " ".join(res["commands"]["build"])
    n_tables = len(array.stage_units("partition", load_plan(cfg)))
    for task in range(n_tables):
        assert array.main(["--stage", "partition", "--task", str(task), "--per-task", "1",
                           "--config", res["config"]]) == 0
    assert array.main(["--stage", "build", "--task", "1", "--per-task", "2",
                       "--config", res["config"]]) == 0
    built = sorted(p.stem for p in done_path(cfg, "build", "x").parent.glob("*.json"))
    assert built == ["00002", "00003"]
    # finalize refuses with a clear message (shards 0, 1 missing) and exit 1
    assert array.main(["--stage", "finalize", "--task", "0", "--config", res["config"]]) == 1
    assert array.main(["--stage", "build", "--task", "0", "--per-task", "2",
                       "--config", res["config"]]) == 0
    assert array.main(["--stage", "finalize", "--task", "0", "--config", res["config"]]) == 0
    assert checksums(cfg).equals(checksums(ref_cfg))
