"""place_events on a tiny inline fixture: admission-timed rows get their dischtime, rows that
cannot be placed are dropped and counted by reason, everything else keeps its position; rows
known at discharge (billing procedure codes) get their known_delta from it."""
import datetime as dt

import polars as pl

from trajectory.assembly.assemble import place_events
from trajectory.events.map_rows import EVENT_SCHEMA
from trajectory.events.tables import SOURCE_ID


def test_place_events_times_and_drops():
    dx = SOURCE_ID["diagnoses_icd"]
    lab = SOURCE_ID["labevents"]
    ev = pl.DataFrame({
        "subject_id": [1, 1, 2, 3, 1],
        "time": [100, None, 50, 70, None],
        "code": ["LAB//1//x", "DX//ICD//10//I10", "LAB//1//x", "LAB//1//x", "DX//ICD//10//E11"],
        "value": [1.0, 1.0, 2.0, 3.0, 2.0], "text": [None] * 5,
        "hadm_id": [10, 10, 20, None, 99], "stay_id": [None] * 5,
        "source": [lab, dx, lab, lab, dx], "kind": [0] * 5, "ref": [None] * 5,
        "known_delta": [30, 0, 0, 0, 0],
    }, schema=EVENT_SCHEMA)
    patients = pl.DataFrame({"subject_id": [1, 2]})
    admissions = pl.DataFrame({"hadm_id": [10, 20], "dischtime": [
        dt.datetime(1970, 1, 1, 0, 16, 40), dt.datetime(1970, 1, 1)]})
    counts = {}
    out = place_events(ev, patients, admissions, counts)
    assert out["subject_id"].to_list() == [1, 1, 2]
    assert out["time"].to_list() == [100, 1000, 50]  # the diagnosis at its dischtime
    assert counts == {"labevents": {"lab": {"dropped": {"subject_not_in_patients": 1}}},
                      "diagnoses_icd": {"diagnosis": {"dropped": {"no_admission_time": 1}}}}


def test_known_at_discharge():
    """Billing procedure codes (known_delta null from the partition stage) are known at their
    admission's dischtime: never before their own time, at it when the admission is unknown."""
    px = SOURCE_ID["procedures_icd"]
    ev = pl.DataFrame({
        "subject_id": [1, 1, 1, 1], "time": [100, 2000, 100, 100],
        "code": ["PX//ICD//10//X"] * 4, "value": [1.0] * 4, "text": [None] * 4,
        "hadm_id": [10, 10, 99, None], "stay_id": [None] * 4, "source": [px] * 4,
        "kind": [0] * 4, "ref": [None] * 4, "known_delta": [None, None, None, None],
    }, schema=EVENT_SCHEMA)
    admissions = pl.DataFrame({"hadm_id": [10], "dischtime": [dt.datetime(1970, 1, 1, 0, 16, 40)]})
    out = place_events(ev, pl.DataFrame({"subject_id": [1]}), admissions, {})
    assert out["time"].to_list() == [100, 2000, 100, 100]
    assert out["known_delta"].to_list() == [900, 0, 0, 0]
