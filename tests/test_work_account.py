"""benchmarks/bench_build.work_account: the unit-seconds behind the rehearsal's "why not
1.5x the floor" (README, Full size) add up to what the markers of a real build say."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_build import scaling_model, work_account  # noqa: E402
from jobs import partition  # noqa: E402
from trajectory.events.plan import load_plan, unit_name  # noqa: E402


def test_the_work_account_adds_up_to_the_markers(demo_build):
    cfg, _ = demo_build
    model = scaling_model(cfg)
    floor_s, cpus = 3.0, 2
    a = work_account(cfg, floor_s, cpus, model)

    plan = load_plan(cfg)
    units = sum(partition.read(cfg, plan, unit_name(t, k))["seconds"]
                for t in plan.tables for k in range(plan.parts[t]))
    shards = [json.loads(p.read_text()) for p in (cfg.work_dir / "done" / "build").glob("*.json")]
    assert shards
    phases = {}
    for m in shards:
        for name, s in m["phase_seconds"].items():
            phases[name] = phases.get(name, 0.0) + s

    assert a["floor_process_s"] == pytest.approx(floor_s * cpus, abs=0.05)
    assert a["stage1"]["partition_units"] == pytest.approx(units, abs=0.05)
    assert a["stage1"]["beyond_parse"] == pytest.approx(units - floor_s * cpus, abs=0.05)
    build = a["build"]
    assert build["total"] == pytest.approx(sum(m["seconds"] for m in shards), abs=0.05)
    for name, s in phases.items():
        assert build[name] == pytest.approx(s, abs=0.05), name
    assert sum(v for k, v in build.items() if k != "total") == pytest.approx(build["total"],
                                                                               abs=0.5)
    assert build["outside_phases"] >= 0
    whole = (a["stage1"]["partition_units"] + a["stage1"]["scans"]
             + a["stage1"]["dictionaries"] + build["total"] + a["serial_x_workers"])
    assert a["total"] == pytest.approx(whole, abs=0.5)
    assert a["beyond_parse"] == pytest.approx(a["total"] - floor_s * cpus, abs=0.05)
    assert a["beyond_parse_allowed_at_1_5x"] == pytest.approx(0.5 * floor_s * cpus, abs=0.05)
    assert a["beyond_parse_over_allowed"] == pytest.approx(  # both rounded: 0.1 s, 0.01
        a["beyond_parse"] / (0.5 * floor_s * cpus), abs=0.03)
