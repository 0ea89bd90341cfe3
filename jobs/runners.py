"""Runners hand units to workers; they know nothing of what a unit computes.

`dask`: a LocalCluster of MAX_CPUS single-threaded worker processes (numba and polars release
the GIL unevenly, so processes, not threads), or an existing scheduler at SCHEDULER.
`serial`: in this process, for debugging and for environments where Dask cannot start.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm


# pyarrow keeps its pool: its CSV parser is the one place a lone big table (chartevents) can
# use cores the other workers left idle at the end of the partition stage.
# polars' jemalloc keeps freed pages 2 s instead of handing them back at once: a shard
# reallocates the same few hundred MB many times, and re-faulting them all cost ~0.5 s of
# system time per demo x20 shard. Not 30 s, as before: a worker runs units back to back, and
# the pages a unit freed in its last 30 s stayed resident under the next unit, which jemalloc
# alone can hand back (no mallctl from Python; jobs.common.fresh_unit_memory releases the
# others). Demo x1 plus a 2,000,000-event patient, that patient's shard in a Dask worker: peak
# 932 MB at 30 s, 779 at 2 s, 769 at 0 (a fresh process: 897 at 30 s). muzzy 0: decayed
# pages are unmapped (MADV_DONTNEED), not lazily freed (MADV_FREE), which Linux keeps counting
# in RSS until memory runs short.
ALLOCATOR_ENV = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:2000,muzzy_decay_ms:0"}
# Dask's nanny exports MALLOC_TRIM_THRESHOLD_=65536 to its workers. Setting that variable at
# all turns off glibc's adaptive mmap threshold, so every large numpy array is a fresh mmap
# that page-faults in and is unmapped on free: a demo x20 shard took 2.2 s in a Dask worker
# against 1.3 s in a plain process. None removes the variable.
# The worker's statistical profiler walks the running task's Python stack every 10 ms on the
# event loop thread, taking the GIL from the records loop; only the dashboard, which these
# clusters do not serve, reads it.
NANNY_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.worker.profile.enabled": False}
WORKER_ENV = {"POLARS_MAX_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              # the same for workers that read their config from the environment (SLURM jobs)
              "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
              **ALLOCATOR_ENV}


REPO = Path(__file__).resolve().parent.parent


def release(pending: dict, fut) -> None:
    """Drop the driver's hold on a finished unit's future, so that its worker can free the
    result (a unit's marker) once the driver has its copy: held until the stage's end,
    demo x800's 273 partition markers (36 MB as JSON) stayed in the workers' memory under
    every later unit, and grew with the input."""
    pending.pop(fut.key, None)


def _after(fn: Callable, unit, cfg, *done):
    """fn(unit, cfg) once the tasks whose results are `done` have finished."""
    return fn(unit, cfg)


class SerialRunner:
    workers = 1

    def recycle(self) -> None:
        """Nothing to recycle in this process."""

    def map(self, fn: Callable, units: Iterable, cfg, desc: str, progress: bool = True) -> list:
        units = list(units)
        return [fn(u, cfg) for u in tqdm(units, desc=desc, disable=not progress, unit="unit")]

    def graph(self, tasks: list, cfg, desc: str, progress: bool = True) -> dict:
        """tasks: (key, fn, unit, keys it waits for), listed after what they wait for."""
        return {key: fn(unit, cfg) for key, fn, unit, _ in
                tqdm(tasks, desc=desc, disable=not progress, unit="unit")}


class DaskRunner:
    def __init__(self, client, owned: bool = True):
        self.client = client
        self.owned = owned  # workers this build started (not a user's SCHEDULER)
        self.workers = len(client.scheduler_info().get("workers", {})) or 1

    def recycle(self) -> None:
        """Fresh worker processes for the next stage, started while the driver goes on (the
        shard map): a worker kept what stage 1 left resident, and the heaviest shard, built
        first, started on it (demo x800: the 2M-event patient's shard started at 828 MB and
        peaked at 1,258; a fresh worker holds ~235 MB). Not on a user's own scheduler, whose
        workers may serve others, nor where a worker has no nanny to start it again (a
        jobqueue configured without): restarted, it would be gone and the build would wait."""
        workers = self.client.scheduler_info().get("workers", {}).values()
        if self.owned and workers and all(w.get("nanny") for w in workers):
            self.client.restart(wait_for_workers=False)

    def map(self, fn: Callable, units: Iterable, cfg, desc: str, progress: bool = True) -> list:
        from distributed import as_completed

        units = list(units)
        futures = self.client.map(fn, units, cfg=cfg, pure=False,
                                  key=[f"{desc}-{u}" for u in units])
        index = {f.key: i for i, f in enumerate(futures)}
        pending = dict(zip(index, futures))
        done = as_completed(futures)
        del futures
        results = [None] * len(units)
        with tqdm(total=len(units), desc=desc, disable=not progress, unit="unit") as bar:
            for fut in done:
                try:
                    results[index[fut.key]] = fut.result()  # re-raises the unit's own error
                except BaseException:
                    self.client.cancel([f for f in pending.values() if f is not fut])
                    raise
                release(pending, fut)
                del fut
                bar.update()
        return results

    def graph(self, tasks: list, cfg, desc: str, progress: bool = True) -> dict:
        """tasks: (key, fn, unit, keys it waits for), in priority order. A task starts as
        soon as what it waits for is done, not at a stage barrier: the other tables' units
        fill the workers while chartevents is being indexed."""
        from distributed import as_completed

        futures = {}
        for i, (key, fn, unit, deps) in enumerate(tasks):
            futures[key] = self.client.submit(_after, fn, unit, cfg,
                                              *[futures[d] for d in deps], key=f"{desc}-{key}",
                                              pure=False, priority=len(tasks) - i)
        by_key = {f.key: k for k, f in futures.items()}
        pending = {f.key: f for f in futures.values()}
        results = {}
        done = as_completed(list(futures.values()))
        futures.clear()  # a task's dependents hold its future until they have run
        with tqdm(total=len(tasks), desc=desc, disable=not progress, unit="unit") as bar:
            for fut in done:
                try:
                    results[by_key[fut.key]] = fut.result()
                except BaseException:
                    self.client.cancel([f for f in pending.values() if f is not fut])
                    raise
                release(pending, fut)
                del fut
                bar.update()
        return results


# Commands over a finished version (tasks, export meds, export share) run a version of fewer
# patients in this process unless a runner is asked for by name: a patient costs ~0.45 ms of
# `tasks` (header read 0.1 ms, five tasks, parts), and starting a local Dask cluster ~3.5 s on
# the 2-core VM (demo x20, 2,000 patients: 4.4 s with the cluster, 0.9 s without), so the
# cluster pays for itself from ~8k patients on 20 workers (~16k on 2). Full MIMIC-IV (~300k
# patients, ~135 s in one process) gets the cluster.
IN_PROCESS_BELOW = 10_000


def version_runner(cfg, n_patients: int, in_process_below: int = IN_PROCESS_BELOW):
    """(runner context, its name) for a command over a finished version of `n_patients`:
    in this process without a config, or for a small version on a local cluster."""
    small = (cfg is not None and cfg.runner == "dask" and not cfg.scheduler
             and cfg.cluster == "local" and n_patients < in_process_below)
    if cfg is None or small:
        return contextlib.nullcontext(SerialRunner()), "serial"
    return open_runner(cfg), cfg.runner


@contextlib.contextmanager
def open_runner(cfg):
    if cfg.runner == "serial":
        yield SerialRunner()
        return
    import dask
    from distributed import Client, LocalCluster

    if cfg.cluster == "slurm" and not cfg.scheduler:
        with dask.config.set(NANNY_CONFIG), slurm_cluster(cfg) as jq, Client(jq) as client:
            yield DaskRunner(client)
        return
    if cfg.scheduler:
        with Client(cfg.scheduler) as client:
            yield DaskRunner(client, owned=False)
        return
    # One worker per core, so each worker's libraries get one thread: polars' default pool (a
    # thread per core in every worker) oversubscribed the cores, 23.4 s -> 21.2 s on demo x20.
    with dask.config.set(NANNY_CONFIG), spawn_environ(WORKER_ENV), LocalCluster(
            n_workers=cfg.max_cpus, threads_per_worker=1, processes=True,
            memory_limit=f"{cfg.worker_memory_gb}GiB", dashboard_address=None,
            # CRITICAL: a worker killed by `recycle` while it sent a heartbeat logged a
            # traceback at ERROR; a unit's own error reaches the driver through its future
            silence_logs=50, env=WORKER_ENV) as cluster, Client(cluster) as client:
        yield DaskRunner(client)


@contextlib.contextmanager
def spawn_environ(env: dict):
    """This process's environment, while workers are spawned, carries `env`. The nanny's own
    `env` reaches a worker only after the spawned interpreter has re-imported the driver's
    main module, and with it polars, which fixes its allocator and thread pool at import;
    worse, importing polars here set _RJEM_MALLOC_CONF to its 500 ms decay, which every
    worker then inherited. With the settings present at exec, a demo x20 shard's minor page
    faults fell from ~80k to ~12k and its system time from ~0.6 s to ~0.2 s."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def slurm_cluster(cfg, partition=None, account=None, walltime="04:00:00",
                  scale: bool = True):
    """A dask-jobqueue SLURMCluster: one single-threaded worker process per SLURM job (the
    same worker shape as the LocalCluster), MAX_CPUS jobs."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as e:
        raise ValueError("--cluster slurm needs dask-jobqueue: pip install -e '.[slurm]'") from e
    log_dir = cfg.work_dir / "slurm" / "dask-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = SLURMCluster(
        cores=1, processes=1, memory=f"{cfg.worker_memory_gb}GiB", walltime=walltime,
        queue=partition, account=account, python=sys.executable,
        job_name=f"traj-{cfg.trajectory_version}-dask", log_directory=str(log_dir),
        job_script_prologue=[f"export {k}={v}" for k, v in WORKER_ENV.items()]
        + [f"cd {REPO}"],
        scheduler_options={"dashboard_address": None},
    )
    if scale:
        cluster.scale(jobs=cfg.max_cpus)
    return cluster
