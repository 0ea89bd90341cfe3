"""ACES, with MEDS-DEV's published MIMIC-IV predicates and task configs (unchanged, read from the
installed meds-dev package), on the MEDS export of the real demo, against the built-in tasks.

ACES and MEDS-DEV need polars<2, so they run from their own venv (tests/meds_tools_setup.sh);
the tests that need it skip unless MEDS_TOOLS_PYTHON names that venv's python (.ci/run sets it).
"""
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from jobs.tasks import run_tasks
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import aces_agreement as agr  # noqa: E402

COMMUNITY = REPO.parent / "shared/data/mimic-iv-demo-meds/mimic_iv_demo_meds_events.parquet"


def frame(rows):
    return pl.DataFrame(rows, schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"),
                                      "boolean_value": pl.Boolean}, orient="row")


def test_compare_counts_every_kind_of_difference():
    t = datetime(2150, 1, 1)
    aces = frame([(1, t, True), (2, t, False), (3, t, True), (5, t, False)])
    ours = frame([(1, t, True), (2, t, True), (4, t, False), (5, t, False)])
    f, dis = agr.compare(aces, ours)
    assert (f["both"], f["agree"], f["only_aces"], f["only_ours"], f["label"], f["union"]) == \
        (3, 2, 1, 1, 1, 5)
    assert f["agreement"] == pytest.approx(2 / 5)
    assert dict(zip(dis["subject_id"], dis["kind"])) == {2: "label", 3: "only_aces",
                                                         4: "only_ours"}


@pytest.fixture(scope="module")
def tools():
    py = os.environ.get("MEDS_TOOLS_PYTHON")
    if not py:
        pytest.skip("MEDS_TOOLS_PYTHON not set: make the tools venv with "
                    "`bash tests/meds_tools_setup.sh` and set it to the python it prints")
    return agr.tools_python(py)


@pytest.fixture(scope="module")
def exported(demo_build, tmp_path_factory):
    cfg, _ = demo_build
    vdir = cfg.version_dir
    run_tasks(vdir, list(agr.TASK_CONFIGS), progress=False)
    out = tmp_path_factory.mktemp("meds_export") / "meds"
    subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "export", "meds",
                    str(vdir), str(out)], check=True, capture_output=True)
    return vdir, out


def test_aces_agrees_with_builtin_tasks(tools, exported, tmp_path):
    vdir, meds_dir = exported
    md = agr.meds_dev_dir(tools)
    assert "site-packages" in md.parts, md  # the published configs as installed, not a copy
    community = COMMUNITY if COMMUNITY.exists() else None
    results = agr.agreement(vdir, meds_dir, tools, tmp_path, community)
    print("\n" + agr.report(vdir, results))
    for source, tasks in results.items():
        for task, (f, _) in tasks.items():
            assert f["ours"] > 0 and f["aces"] > 0, (source, task, f)
            assert f["agreement"] >= 0.95, (source, task, f)
    # the labels are not trivially agreeing: both classes are present
    f, _ = results["export"]["mortality_in_icu_first_24h"]
    assert 0 < f["aces_positive"] < f["aces"]


def test_explain_lists_the_patients_times(exported):
    vdir, _ = exported
    ours = pl.read_parquet(Path(vdir) / "tasks" / "mortality_in_icu_first_24h.parquet")
    row = ours.row(0, named=True)
    text = agr.explain(vdir, "mortality_in_icu_first_24h",
                       {**row, "kind": "label", "aces": not row["boolean_value"],
                        "ours": row["boolean_value"]})
    assert text.startswith(f"label: subject {row['subject_id']}")
    # the stay whose intime + 24 h is the prediction time is listed 24 h before it
    assert "(-24.0 h) ->" in text
