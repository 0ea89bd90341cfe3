"""Dask workers start with the runner's environment already set (polars reads it at import)."""
import os

import pytest

import config
from jobs.runners import ALLOCATOR_ENV, open_runner, spawn_environ


def test_spawn_environ_sets_and_restores():
    os.environ["TRAJ_TEST_KEEP"] = "old"
    os.environ.pop("TRAJ_TEST_NEW", None)
    with spawn_environ({"TRAJ_TEST_KEEP": "new", "TRAJ_TEST_NEW": "1"}):
        assert os.environ["TRAJ_TEST_KEEP"] == "new" and os.environ["TRAJ_TEST_NEW"] == "1"
    assert os.environ["TRAJ_TEST_KEEP"] == "old" and "TRAJ_TEST_NEW" not in os.environ
    del os.environ["TRAJ_TEST_KEEP"]


def _worker_state():
    import polars
    with open("/proc/self/environ", "rb") as f:  # the environment the process was exec'd with
        at_exec = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
    return polars.thread_pool_size(), at_exec.get(b"_RJEM_MALLOC_CONF", b"").decode()


def test_local_cluster_workers_start_with_one_polars_thread_and_slow_decay(tmp_path):
    import polars  # noqa: F401  (as in the driver: importing it rewrites _RJEM_MALLOC_CONF)
    cfg = config.load({"DATA_DIR": str(tmp_path), "OUT_DIR": str(tmp_path / "out"),
                       "MAX_CPUS": 1}, environ={})
    with open_runner(cfg) as runner:
        states = list(runner.client.run(_worker_state).values())
    assert states
    for threads, conf in states:
        assert threads == 1
        # polars prepends its own 500 ms decay; ours must come after it, so it wins
        assert conf.endswith(ALLOCATOR_ENV["_RJEM_MALLOC_CONF"]), conf


def test_a_units_peak_is_its_own():
    """fresh_unit_memory starts the peak-RSS count afresh: a unit that holds 300 MB reports
    it over its start, and the next unit, which holds nothing, does not inherit it."""
    import sys

    import numpy as np

    from jobs.common import fresh_unit_memory, peak_rss_mb

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    start = fresh_unit_memory()
    held = np.ones(300 << 20, dtype=np.uint8)  # touched: resident
    # not all 300: in a long test process, memory other libraries free meanwhile (jemalloc's
    # decay) lowers the RSS under the new pages (CI: 189 MiB of a 200 MiB array from 1.2 GB)
    assert peak_rss_mb() - start >= 250
    del held
    start = fresh_unit_memory()
    assert peak_rss_mb() - start < 50


def _pid_and_env():
    with open("/proc/self/environ", "rb") as f:
        at_exec = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
    return os.getpid(), at_exec.get(b"_RJEM_MALLOC_CONF", b"").decode()


def test_recycle_gives_the_next_stage_fresh_workers_with_the_same_environment(tmp_path):
    """The build stage starts in new worker processes (what stage 1 left resident is gone),
    started with the runner's environment like the first; a user's own scheduler keeps its
    workers."""
    from distributed import Client, LocalCluster

    from jobs.runners import DaskRunner

    cfg = config.load({"DATA_DIR": str(tmp_path), "OUT_DIR": str(tmp_path / "out"),
                       "MAX_CPUS": 1}, environ={})
    with open_runner(cfg) as runner:
        (before, env_before), = runner.client.run(_pid_and_env).values()
        runner.recycle()
        # a unit submitted right away waits for the new worker instead of failing
        after, env_after = runner.client.submit(_pid_and_env, pure=False).result(timeout=60)
    assert after != before
    assert env_after == env_before and env_after.endswith(ALLOCATOR_ENV["_RJEM_MALLOC_CONF"])

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        theirs = DaskRunner(client, owned=False)
        (pid, _), = client.run(_pid_and_env).values()
        theirs.recycle()
        assert client.submit(_pid_and_env, pure=False).result(timeout=60)[0] == pid
    # workers without a nanny (nothing would start them again) are left running
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        ours = DaskRunner(client)
        (pid, _), = client.run(_pid_and_env).values()
        ours.recycle()
        assert client.submit(_pid_and_env, pure=False).result(timeout=60)[0] == pid
        assert len(client.scheduler_info()["workers"]) == 1


def _held_results(unit, cfg):
    """What the worker running this unit still holds of earlier units' results."""
    import time

    from distributed import get_worker

    time.sleep(0.05)
    held = sum(1 for k in get_worker().data if str(k).startswith(("held-", "graph-")))
    return held, b"x" * 1_000_000  # a result as big as a large partition marker


def test_finished_units_results_are_freed_on_the_worker_during_the_stage():
    """A unit's result (its marker) leaves the worker once the driver has it: held until the
    stage's end, every earlier result sat in memory under each later unit, more of them the
    larger the input. 30 units in a row on one worker: the later ones find almost none."""
    from distributed import Client, LocalCluster

    from jobs.runners import DaskRunner

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        runner = DaskRunner(client)
        got = runner.map(_held_results, range(30), None, "held", progress=False)
        assert [len(r[1]) for r in got] == [1_000_000] * 30  # results still reach the driver
        assert max(r[0] for r in got[10:]) <= 3, [r[0] for r in got]
        tasks = [(f"u{i}", _held_results, i, [f"u{i - 1}"] if i else []) for i in range(30)]
        got = runner.graph(tasks, None, "graph", progress=False)
        assert len(got) == 30 and max(got[f"u{i}"][0] for i in range(10, 30)) <= 3
