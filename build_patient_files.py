#!/usr/bin/env python
"""Build per-patient MIMIC-IV trajectories: raw hosp/icu/note tables in, one compressed record
per patient plus a manifest out.

    python build_patient_files.py --demo                      # synthetic data, zero set-up
    DATA_DIR=/data/mimiciv/3.1 MAX_CPUS=8 python build_patient_files.py
    python build_patient_files.py inspect trajectories/v1 --subject 10000032
    python build_patient_files.py status
    python build_patient_files.py submit --slurm --partition cpu --time 02:00:00  # job arrays
    python build_patient_files.py export windows trajectories/v1   # one row per stay-hour
    python build_patient_files.py export meds trajectories/v1 meds/v1   # a MEDS dataset
    python build_patient_files.py export share trajectories/v1 shared/v1 --key-file KEY
    python build_patient_files.py tasks trajectories/v1 [--task NAME ...]   # task labels
    python build_patient_files.py cache list|prune   # stage-1 outputs shared by versions

Settings come from config.py, then environment variables of the same name, then these flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import config

# flag -> config key; help text is the config field's meaning
SETTINGS = {
    "--data-dir": ("DATA_DIR", "raw MIMIC-IV root holding hosp/, icu/, note/"),
    "--version": ("TRAJECTORY_VERSION", "output version name (OUT_DIR/<version>)"),
    "--max-cpus": ("MAX_CPUS", "Dask workers; never changes the output"),
    "--out-dir": ("OUT_DIR", "where versions are published"),
    "--work-dir": ("WORK_DIR", "intermediate files (default OUT_DIR/_work/<version>)"),
    "--n-shards": ("N_SHARDS", "patient shards, 0 = auto from input size"),
    "--partition-unit-mb": ("PARTITION_UNIT_MB", "gzip-equivalent input per partition unit "
                                                 "(big tables are cut), 0 = auto"),
    "--plan-workers": ("PLAN_WORKERS", "workers the plan's units and shards are cut for, "
                                       "0 = MAX_CPUS; never changes the output"),
    "--index-dir": ("INDEX_DIR", "gzip seek-point index cache (default OUT_DIR/_index)"),
    "--gzindex-threads": ("GZINDEX_THREADS", "threads a scan finds a .csv.gz's seek points "
                                             "with (1: one zlib-ng pass), 0 = auto"),
    "--cache-dir": ("CACHE_DIR", "stage-1 outputs shared by versions of the same inputs "
                                 "(default OUT_DIR/_cache)"),
    "--partition-buffer-mb": ("PARTITION_BUFFER_MB", "events held per partition unit before "
                                                     "a flush"),
    "--worker-memory-gb": ("WORKER_MEMORY_GB", "Dask memory limit per worker"),
    "--zstd-level": ("ZSTD_LEVEL", "record compression level (1-22)"),
    "--layout": ("LAYOUT", "'files' (one per patient) or 'shards' (packed, with offsets)"),
    "--scheduler": ("SCHEDULER", "address of an existing Dask scheduler"),
    "--runner": ("RUNNER", "'dask' or 'serial' (in-process)"),
    "--cluster": ("CLUSTER", "Dask workers: 'local' (LocalCluster) or 'slurm' (MAX_CPUS "
                             "single-core SLURM jobs via dask-jobqueue)"),
    "--window-exclude": ("WINDOW_EXCLUDE", "comma-separated flag rules whose events window "
                                           "statistics leave out, e.g. 'range,duplicate,"
                                           "outlier'; 'none' keeps every event"),
    "--deid-min-patients": ("DEID_MIN_PATIENTS", "export share: codes of fewer patients are "
                                                 "replaced by their prefix"),
    "--meds-shard-subjects": ("MEDS_SHARD_SUBJECTS", "export meds: subjects per data file, "
                                                     "0 = no limit"),
    "--meds-shard-mb": ("MEDS_SHARD_MB", "export meds: MB of records per data file, "
                                         "0 = no limit"),
    "--keep-sorted": ("KEEP_SORTED", "keep each shard's sorted events in CACHE_DIR for later "
                                     "versions: auto (from the second version of the same "
                                     "inputs on), always or never"),
    "--extra-tables": ("EXTRA_TABLES", "TOML spec of your own tables to add "
                                       "(docs/EXTRA_TABLES.md); --demo: its generated one "
                                       "unless given ('' for none)"),
}
COMMANDS = ("build", "inspect", "status", "export", "submit", "tasks", "cache")


def _settings_parser(parser: argparse.ArgumentParser) -> None:
    defaults = config.defaults()
    for flag, (key, text) in SETTINGS.items():
        parser.add_argument(flag, dest=key, default=None,
                            help=f"{text} [{key}; config.py: {defaults[key]!r}]")


def _load(args) -> "config.Config":
    overrides = {k: getattr(args, k) for _, (k, _) in SETTINGS.items()}
    overrides["OVERWRITE"] = getattr(args, "overwrite", False)
    return config.load(overrides)


def cmd_build(args) -> int:
    from jobs.driver import describe, run_build

    if args.demo:
        from trajectory import synth
        from trajectory.events import extra_tables

        demo_dir = Path(args.demo_dir or Path(args.OUT_DIR or config.OUT_DIR) / "_demo_data")
        if not (demo_dir / "hosp" / "patients.csv.gz").exists():
            print(f"generating {args.demo_patients} synthetic patients in {demo_dir}")
            synth.generate(demo_dir, n_patients=args.demo_patients, seed=0)
        args.DATA_DIR = str(demo_dir)
        # The demo's outcome registry (keyed by hadm_id, some rows matching nothing) joins
        # the build unless EXTRA_TABLES is set (--extra-tables '' for none); a demo folder
        # generated before it existed gets it now.
        if args.EXTRA_TABLES is None and not extra_tables.is_set(_load(args).extra_tables):
            if not (demo_dir / synth.EXTRA_SPEC).is_file():
                synth.generate_extra(demo_dir, seed=0)
            args.EXTRA_TABLES = str(demo_dir / synth.EXTRA_SPEC)
    cfg = _load(args)
    if not str(cfg.data_dir):
        raise ValueError("DATA_DIR is not set: set it in config.py, as an environment "
                         "variable or with --data-dir, or use --demo")
    summary = run_build(cfg, progress=not args.quiet)
    print(describe(summary, cfg))
    return 0


def cmd_inspect(args) -> int:
    from trajectory.use.timeline import timeline

    print(timeline(args.version_dir, args.subject, limit=args.limit))
    return 0


def cmd_export(args) -> int:
    if args.what == "windows":
        from trajectory.use.windows_table import export_windows

        result = export_windows(args.version_dir, args.out or args.out_dir,
                                rule=args.window_rule)
        print(f"wrote {result['rows']:,} windows x {result['columns']} columns to "
              f"{result['path']}; {result['rule_text']}")
        return 0
    if not args.out_dir:
        raise ValueError(f"export {args.what} needs an output folder: "
                         f"export {args.what} VERSION_DIR OUT_DIR")
    if args.what == "meds":
        from jobs.export_meds import IN_PROCESS_BELOW, describe, export_meds

        # as `tasks`: a small version runs in-process unless --runner names a runner
        result = export_meds(args.version_dir, args.out_dir, _load(args), codes=args.codes,
                             progress=not args.quiet,
                             in_process_below=0 if args.RUNNER else IN_PROCESS_BELOW)
    else:
        from jobs.export_share import IN_PROCESS_BELOW, describe, export_share

        result = export_share(args.version_dir, args.out_dir, _load(args), key_file=args.key_file,
                              keep_text=args.keep_text, progress=not args.quiet,
                              in_process_below=0 if args.RUNNER else IN_PROCESS_BELOW)
    print(describe(result))
    return 0


def cmd_tasks(args) -> int:
    from jobs.tasks import IN_PROCESS_BELOW, describe, run_tasks

    # a small version is labelled in-process (a cluster's start costs more) unless --runner
    # names a runner
    result = run_tasks(args.version_dir, args.task, _load(args), progress=not args.quiet,
                       in_process_below=0 if args.RUNNER else IN_PROCESS_BELOW)
    print(describe(result))
    return 0


def cmd_submit(args) -> int:
    from jobs.slurm import submit

    if not args.slurm:
        raise ValueError("submit needs a scheduler: pass --slurm (the only one supported)")
    cfg = _load(args)
    if not str(cfg.data_dir):
        raise ValueError("DATA_DIR is not set: set it in config.py, as an environment "
                         "variable or with --data-dir")
    submit(cfg, partition=args.partition, account=args.account, time=args.time, mem=args.mem,
           cpus_per_task=args.cpus_per_task, array_parallelism=args.array_parallelism,
           dry_run=args.dry_run)
    return 0


def cmd_cache(args) -> int:
    from jobs import cache

    cfg = _load(args)
    left = cache.leftovers(cfg, everywhere=True)
    if args.action == "list":
        print(cache.describe(cache.entries(cfg)))
        print(cache.describe_leftovers(left))
    else:
        verb = "would remove" if args.dry_run else "removed"
        gone = cache.prune(cfg, older_than_hours=args.older_than_hours, dry_run=args.dry_run)
        print(cache.describe(gone, verb))
        print(cache.describe_leftovers(left, verb))
    return 0


def cmd_status(args) -> int:
    import json

    from jobs.driver import status

    print(json.dumps(status(_load(args)), indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "build"
    parser = argparse.ArgumentParser(prog="build_patient_files.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "build":
        _settings_parser(parser)
        parser.add_argument("--demo", action="store_true",
                            help="build the embedded synthetic dataset (generated on first use)")
        parser.add_argument("--demo-patients", type=int, default=300,
                            help="synthetic patients for --demo [300]")
        parser.add_argument("--demo-dir", default=None,
                            help="where --demo data is generated [OUT_DIR/_demo_data]")
        parser.add_argument("--overwrite", action="store_true",
                            help="rebuild over a finished version or a stale work directory")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
    elif command == "submit":
        _settings_parser(parser)
        parser.add_argument("--slurm", action="store_true",
                            help="submit the stages as dependent SLURM job arrays")
        parser.add_argument("--partition", default=None, help="sbatch --partition")
        parser.add_argument("--account", default=None, help="sbatch --account")
        parser.add_argument("--time", default=None, help="sbatch --time per array task")
        parser.add_argument("--mem", default=None,
                            help="sbatch --mem per array task [WORKER_MEMORY_GB]")
        parser.add_argument("--cpus-per-task", type=int, default=None,
                            help="sbatch --cpus-per-task [1]")
        parser.add_argument("--array-parallelism", type=int, default=None,
                            help="most array tasks running at once (%%K) [MAX_CPUS]")
        parser.add_argument("--dry-run", action="store_true",
                            help="write the sbatch scripts and print the commands only")
        parser.add_argument("--overwrite", action="store_true",
                            help="rebuild over a finished version or a stale work directory")
    elif command == "inspect":
        parser.add_argument("version_dir", help="a finished version, e.g. trajectories/v1")
        parser.add_argument("--subject", type=int, required=True, help="subject_id to print")
        parser.add_argument("--limit", type=int, default=200, help="events to print [200]")
    elif command == "status":
        _settings_parser(parser)
    elif command == "cache":
        parser.add_argument("action", choices=["list", "prune"],
                            help="list: entries of CACHE_DIR with their size, last use and the "
                                 "versions using them; prune: remove the entries no version in "
                                 "OUT_DIR uses")
        parser.add_argument("--older-than-hours", type=float, default=24.0,
                            help="prune: only entries no build touched for this long [24]")
        parser.add_argument("--dry-run", action="store_true", help="prune: only list")
        _settings_parser(parser)
    elif command == "export":
        parser.add_argument("what", choices=["windows", "meds", "share"],
                            help="windows: one parquet row per stay window; meds: a MEDS "
                                 "dataset; share: a de-identified copy of the version")
        parser.add_argument("version_dir", help="a finished version, e.g. trajectories/v1")
        parser.add_argument("out_dir", nargs="?", default=None,
                            help="meds, share: the output folder; windows: the output parquet "
                                 "[VERSION_DIR/windows.parquet]")
        parser.add_argument("--out", default=None, help="windows: the output parquet")
        parser.add_argument("--window-rule", choices=["charttime", "known"],
                            default="charttime",
                            help="windows: what a window counts: charttime, every value "
                                 "charted in it, whenever resulted, as MEDS tools aggregate; "
                                 "known, only the values known by its end [charttime]")
        from trajectory.use.meds import CODES

        parser.add_argument("--codes", choices=CODES, default=CODES[0],
                            help="meds: project, the project's codes with the families "
                                 "published tasks use renamed as the community's MIMIC-IV "
                                 "conversion names them; community, every family that "
                                 "conversion has with its code strings (docs/MEDS.md) "
                                 f"[{CODES[0]}]")
        parser.add_argument("--key-file", default=None,
                            help="share: a file holding the secret key for ids and time shifts")
        from trajectory.use.deid import KEEP_TEXT

        parser.add_argument("--keep-text", action="store_true",
                            help=f"share: keep {KEEP_TEXT} (docs/SHARE.md)")
        _settings_parser(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
    elif command == "tasks":
        from trajectory.use.tasks import TASKS

        parser.add_argument("version_dir", help="a finished version, e.g. trajectories/v1")
        parser.add_argument("--task", action="append", default=None, metavar="NAME",
                            help="a task to label (repeatable) [all: "
                                 f"{', '.join(TASKS)}]")
        _settings_parser(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        return {"build": cmd_build, "inspect": cmd_inspect, "status": cmd_status,
                "export": cmd_export, "submit": cmd_submit,
                "tasks": cmd_tasks, "cache": cmd_cache}[command](args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
