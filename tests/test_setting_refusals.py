"""A rerun with changed settings is refused with the settings named in the user's spelling
(`OUTLIER_K 3.0 -> 2.5`), not only the config hash: for a finished version (from its
dataset.json), an unfinished work directory (from its plan.json) and a unit's done-marker;
through run_build and through the CLI. Where the old settings were not kept (an older plan),
the hashes are named as before."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.common import read_done, write_done
from jobs.driver import prepare, run_build
from trajectory import synth
from trajectory.atomic import atomic_write_json

from .conftest import make_cfg

ROOT = Path(__file__).resolve().parent.parent
FINISHED = "is a finished version of other inputs or config"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    synth.generate(d, n_patients=24, seed=3)
    return d


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    """One finished version "a", with the default settings."""
    out = tmp_path_factory.mktemp("out")
    run_build(make_cfg(data, out, trajectory_version="a"), progress=False)
    return out


def named(message: str) -> str:
    """The parenthesis after "... of other inputs or config": what the refusal names."""
    return re.search(r"inputs or config \((.*)\); ", message).group(1)


@pytest.mark.parametrize("setting,expected", [
    ({"outlier_k": 2.5}, "OUTLIER_K 3.0 -> 2.5"),
    ({"window_exclude": "none"}, "WINDOW_EXCLUDE range,duplicate -> none"),
    ({"outlier_k": 2.5, "clip_to_range": True},
     "OUTLIER_K 3.0 -> 2.5; CLIP_TO_RANGE false -> true"),
])
def test_finished_version_refusal_names_the_settings(data, built, setting, expected):
    cfg = make_cfg(data, built, trajectory_version="a", **setting)
    with pytest.raises(ValueError, match=FINISHED) as e:
        run_build(cfg, progress=False)
    assert named(str(e.value)) == expected


@pytest.mark.parametrize("env,flags,expected", [
    ({"OUTLIER_K": "2.5"}, [], "OUTLIER_K 3.0 -> 2.5"),
    ({}, ["--window-exclude", "none"], "WINDOW_EXCLUDE range,duplicate -> none"),
])
def test_cli_refusal_names_the_settings(data, built, env, flags, expected):
    run = subprocess.run([sys.executable, str(ROOT / "build_patient_files.py"), "--data-dir",
                          str(data), "--out-dir", str(built), "--version", "a", "--runner",
                          "serial", "--quiet", *flags],
                         env={**os.environ, **env}, capture_output=True, text=True,
                         cwd=built)
    assert run.returncode == 2, run.stdout + run.stderr
    assert FINISHED in run.stderr
    assert named(run.stderr) == expected


def test_unfinished_work_dir_refusal_names_the_settings(data, tmp_path):
    prepare(make_cfg(data, tmp_path, trajectory_version="a"))  # plan.json, nothing built
    with pytest.raises(ValueError, match="holds an unfinished build") as e:
        prepare(make_cfg(data, tmp_path, trajectory_version="a", window_exclude="range"))
    assert named(str(e.value)) == "WINDOW_EXCLUDE range,duplicate -> range"


def test_plan_without_settings_names_the_hashes(data, tmp_path):
    """A plan.json written before plans kept their settings: the hashes, as before."""
    first = make_cfg(data, tmp_path, trajectory_version="a")
    prepare(first)
    path = first.work_dir / "plan.json"
    plan = json.loads(path.read_text())
    del plan["config"]
    atomic_write_json(path, plan)
    second = make_cfg(data, tmp_path, trajectory_version="a", outlier_k=2.5)
    with pytest.raises(ValueError, match="holds an unfinished build") as e:
        prepare(second)
    assert named(str(e.value)) == (f"config hash {first.output_hash()} -> "
                                   f"{second.output_hash()}")


def test_done_marker_refusal_names_the_settings(data, tmp_path):
    first = make_cfg(data, tmp_path, trajectory_version="a")
    prepare(first)
    write_done(first, "build", "shard-0000", {})
    second = make_cfg(data, tmp_path, trajectory_version="a", outlier_k=2.5)
    with pytest.raises(ValueError, match=r"unit was built with config \w+, this run has "
                                         r"\w+ \(OUTLIER_K 3\.0 -> 2\.5\); use --overwrite"):
        read_done(second, "build", "shard-0000")


def test_done_marker_of_another_plan_names_only_the_hashes(data, tmp_path):
    """The plan was made with neither the marker's config nor this one: its settings say
    nothing of the marker's, so only the hashes are named."""
    first = make_cfg(data, tmp_path, trajectory_version="a")
    prepare(first)
    third = make_cfg(data, tmp_path, trajectory_version="a", outlier_k=1.5)
    write_done(third, "build", "shard-0000", {})
    second = make_cfg(data, tmp_path, trajectory_version="a", outlier_k=2.5)
    with pytest.raises(ValueError) as e:
        read_done(second, "build", "shard-0000")
    assert str(e.value).endswith(f"unit was built with config {third.output_hash()}, this run "
                                 f"has {second.output_hash()}; use --overwrite or another "
                                 "WORK_DIR")


def test_overwrite_starts_an_unfinished_build_again_over_a_foreign_marker(data, tmp_path):
    """A done-marker of other settings in an unfinished build of the same plan (copied in,
    left by hand): refused, naming --overwrite; --overwrite then starts the version again
    (WORK_DIR discarded, stage 1's cache reused) instead of refusing the same way."""
    from jobs import build

    first = make_cfg(data, tmp_path, trajectory_version="a")
    prepare(first)
    other = make_cfg(data, tmp_path, trajectory_version="a", outlier_k=2.5)
    write_done(other, "build", build.shard_name(0), {})
    with pytest.raises(ValueError, match="unit was built with config .*use --overwrite"):
        run_build(first, progress=False)
    summary = run_build(make_cfg(data, tmp_path, trajectory_version="a", overwrite=True),
                        progress=False)
    assert summary["n_events"] > 0
    assert read_done(first, "build", build.shard_name(0))["config_hash"] == first.output_hash()
