"""The real CLI on the synthetic set: --demo builds, notes keep their text byte for byte,
inspect prints a timeline."""
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from trajectory import open_version
from trajectory.events.tables import SOURCE_ID

from .conftest import REPO


@pytest.fixture(scope="module")
def synth_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "--demo",
                    "--demo-patients", "40", "--out-dir", str(out), "--max-cpus", "2",
                    "--quiet"], check=True, cwd=out)
    return out


def test_demo_cli_builds_every_patient(synth_build):
    v = open_version(synth_build / "v1")
    raw = pl.read_csv(synth_build / "_demo_data" / "hosp" / "patients.csv.gz")
    assert sorted(v.subject_ids) == sorted(raw["subject_id"].to_list())
    assert len(v) == 40


@pytest.mark.parametrize("table", ["discharge", "radiology"])
def test_notes_text_intact(synth_build, table):
    notes = pl.read_csv(synth_build / "_demo_data" / "note" / f"{table}.csv.gz",
                        infer_schema=False)
    assert notes.height > 0
    v = open_version(synth_build / "v1")
    for sid, group in notes.group_by("subject_id"):
        p = v.patient(int(sid[0]))
        is_note = p.events["source"] == SOURCE_ID[table]
        got = {p.note_id(i): p.text(i) for i in np.flatnonzero(is_note)}
        want = dict(zip(group["note_id"], group["text"]))
        assert got == want
        assert any("\n" in t for t in want.values())


def test_inspect_prints_timeline(synth_build):
    sid = open_version(synth_build / "v1").subject_ids[0]
    out = subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "inspect",
                          str(synth_build / "v1"), "--subject", str(sid)],
                         check=True, capture_output=True, text=True).stdout
    assert out.startswith(f"subject {sid}:") and "BIRTH" in out


def test_inspect_unknown_subject_is_a_clear_error(synth_build):
    r = subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "inspect",
                        str(synth_build / "v1"), "--subject", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "subject_id 1 is not in" in r.stderr
