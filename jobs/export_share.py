"""`export share`: a de-identified copy of a finished version (docs/SHARE.md).

    python build_patient_files.py export share trajectories/v1 shared/v1 --key-file KEY

Two passes through the build's runners. `count` (one unit per shard of the source) reads the
shard's records and returns, with keyed ids only, the distinct patients of every code, the
(patient, code) pairs of the codes rare in the shard (a code rare overall is rare in every
shard, so the driver has all pairs of every rare code), and the keyed hadm, stay and note ids
for the collision check. The driver then generalises rare codes and places each patient in
the copy's shard `keyed subject_id mod n_shards` (the source's shards follow the original ids).
`write` (one unit per shard of the copy) rewrites its patients' records
(`trajectory.use.deid.rewrite`) in keyed-id order and publishes the shard by renaming. The
driver writes manifest, codes, QC report, deid_report.json, then dataset.json last.

Nothing holding the key or an original id is written: the passes return keyed ids in memory
and the only files under OUT_DIR are the copy's own (a killed run leaves temporary names
holding keyed ids, removed by the next run). No time of the run is written: the same key
gives the same bytes, whatever the runner.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import zstandard

import config as config_module
from trajectory.atomic import atomic_write_json, atomic_write_parquet, checksum_bytes
from trajectory.cleaning.flags import rule_mask
from trajectory.events.tables import TABLES
from trajectory.record import pack
from trajectory.use import deid, deid_codes
from trajectory.use.store import RecordReader
from trajectory.windows.grids import GridSpec
from .runners import IN_PROCESS_BELOW, version_runner

from .build import FileSink, PackSink, shard_name

OWN = {"patients", "manifest.parquet", "codes.parquet", "qc_report.json", "deid_report.json",
       "dataset.json"}
# dataset.json keys copied as they are: the record layout and what ids in records mean; the
# rest (config paths, input and dictionary fingerprints, plan, timings, creation time) is not
DATASET_KEEP = ("record_format", "layout", "sources", "event_dtypes", "flags", "concepts",
                "quarantined", "windows")
PATH_SETTINGS = ("data_dir", "out_dir", "work_dir", "index_dir", "scheduler", "extra_tables")
# what the project itself writes into a version folder besides the copy's own files: named
# in deid_report.json["not_copied"]; any other name (a user's file, which can hold an id or a
# path: issue 24, "export_10000032.csv") is only counted
KNOWN_EXTRA = ("qc_report.html", "tasks", "windows.parquet")
# the built-in tables by the name a "table ... not found" warning gives them
TABLE_NAMES = {f"{t.module}/{t.name}" for t in TABLES}


def _is_path(key: str, value) -> bool:
    """A build setting that names a place (a folder, a file, a host), not a rule: the
    known ones, any `*_dir`, and any absolute path a later setting may hold."""
    return (key in PATH_SETTINGS or key.endswith("_dir")
            or (isinstance(value, str) and value.startswith(("/", "~"))))


def _source_paths(meta: dict) -> list[str]:
    # "." is how an unset path setting (EXTRA_TABLES = "") is written, not a place
    return [str(v) for k, v in meta.get("config", {}).items()
            if v and str(v) != "." and _is_path(k, v)]
# the manifest columns of docs/FORMAT.md, in the order `write` gives them
MANIFEST = ("subject_id", "path", "offset", "shard", "n_events", "first_time", "last_time",
            "bytes", "checksum")
QC_KEEP = ("tables", "cleaning", "failures", "quarantined")
CLEANING_KEEP = ("codes", "concepts", "rules", "settings", "tables", "unit_conversions")


@dataclass(frozen=True)
class ShareJob:
    """What every unit shares (the runners hand it to each unit as `cfg`). Never written."""
    version_dir: Path
    out_dir: Path
    key: bytes = field(repr=False)
    keep_text: bool
    min_patients: int
    zstd_level: int
    layout: str
    n_shards: int
    sources: dict  # source id -> table name
    grid: GridSpec  # the version's window settings: the copy's windows are made again
    codes: deid_codes.CodeMap | None = field(default=None, repr=False)  # by old code id
    out_shard: np.ndarray | None = field(default=None, repr=False)  # manifest row -> shard


def _manifest(job: ShareJob) -> pl.DataFrame:
    return (pl.read_parquet(job.version_dir / "manifest.parquet")
            .with_row_index("row").select("row", "subject_id", "path", "offset", "bytes",
                                          "shard"))


def _reader(job: ShareJob, m: pl.DataFrame) -> RecordReader:
    return RecordReader(job.version_dir, m["subject_id"].to_list(), m["path"].to_list(),
                        m["offset"].to_list(), m["bytes"].to_list())


def count(shard: int, cfg: ShareJob) -> dict:
    """Pass 1 over one source shard: patients per code, the rare pairs, keyed ids."""
    job = cfg
    m = _manifest(job).filter(pl.col("shard") == shard)
    reader = _reader(job, m)
    patients, codes, ids = [], [], {k: set() for k in ("hadm_id", "stay_id", "note_id")}
    concepts = set()  # (code id, concept) pairs as code << 16 | concept + 32768 (an int16)
    for sid in m["subject_id"].to_list():
        rec = reader.raw(sid)
        patients.append(deid.keyed_id(job.key, "subject_id", sid))
        codes.append(deid.patient_codes(rec))
        ev, adm, stays = rec["events"], rec["admissions"], rec["stays"]
        pair = (ev["code"].astype(np.int64) << 16) | (ev["concept"].astype(np.int64) + 32768)
        concepts.update(np.unique(pair).tolist())
        ids["hadm_id"].update(adm.get("hadm_id", []), stays.get("hadm_id", []),
                              np.unique(ev["hadm_id"]).tolist(),
                              (w["id"] for w in rec["windows"] if w["kind"] != "stay"))
        ids["stay_id"].update(stays.get("stay_id", []), np.unique(ev["stay_id"]).tolist(),
                              (w["id"] for w in rec["windows"] if w["kind"] == "stay"))
        ids["note_id"].update(rec["notes"]["note_id"])
    present, n = np.unique(np.concatenate(codes) if codes else np.empty(0, np.int32),
                           return_counts=True)
    rare = present[n < job.min_patients]
    pair_p, pair_c = [], []
    for p, c in zip(patients, codes):
        r = c[np.isin(c, rare)]
        pair_p.append(np.full(len(r), p, np.int64))
        pair_c.append(r.astype(np.int32))
    keyed = {k: np.sort(np.fromiter(deid.hash_ids(job.key, k, v).values(), np.int64))
             for k, v in ids.items()}
    return {"shard": shard, "rows": m["row"].to_numpy(), "subjects": np.array(patients, np.int64),
            "codes": present.astype(np.int32), "patients": n.astype(np.int64),
            "pair_patient": np.concatenate(pair_p) if pair_p else np.empty(0, np.int64),
            "pair_code": np.concatenate(pair_c) if pair_c else np.empty(0, np.int32),
            "concepts": sorted(concepts), "ids": keyed}


def write(shard: int, cfg: ShareJob) -> dict:
    """Pass 2: rewrite the patients of one shard of the copy, in keyed-id order."""
    job = cfg
    m = _manifest(job)
    m = m.filter(pl.Series(job.out_shard[m["row"].to_numpy()] == shard))
    reader = _reader(job, m)
    sids = sorted(m["subject_id"].to_list(), key=lambda s: deid.keyed_id(job.key, "subject_id", s))
    cctx = zstandard.ZstdCompressor(level=job.zstd_level)
    sink = (PackSink if job.layout == "shards" else FileSink)(job.out_dir, shard_name(shard))
    rows, counts = [], Counter()
    text_dropped = Counter()
    for sid in sids:
        rec, c = deid.rewrite(reader.raw(sid), job.key, job.codes, job.keep_text,
                              job.sources, job.grid)
        data = pack(rec, cctx)
        path, offset = sink.add(rec["subject_id"], data)
        t = np.frombuffer(rec["events"]["time"], "<i8")
        rows.append((rec["subject_id"], path, offset, shard, len(t),
                     int(t[0]) if len(t) else None, int(t[-1]) if len(t) else None,
                     len(data), checksum_bytes(data)))
        text_dropped.update(c.pop("text_dropped"))
        counts.update(c)
    sink.publish()
    return {"shard": shard, "rows": rows, "counts": dict(counts),
            "text_dropped": dict(text_dropped)}


def _check_unique(arrays: list[np.ndarray], kind: str) -> np.ndarray:
    """The keyed ids of one kind, sorted; a repeat is an error."""
    a = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    u = np.unique(a)
    if len(u) != len(a):
        raise ValueError(f"keyed hash collision between two {kind}s (or one {kind} in two "
                         "patients' records): choose another key")
    return u


def grid_spec(meta: dict, vdir: Path) -> GridSpec:
    """The version's window settings, from its dataset.json, as the build used them."""
    w = meta.get("windows")
    if not isinstance(w, dict) or not {"step_seconds", "max", "admissions", "exclude"} <= set(w):
        raise ValueError(f"{vdir / 'dataset.json'}: 'windows' must give step_seconds, max, "
                         f"admissions and exclude (the build's window settings), got {w!r}; "
                         "rebuild the version with this code")
    return GridSpec(step=int(w["step_seconds"]), max_windows=int(w["max"]),
                    admissions=bool(w["admissions"]), n_concepts=len(meta.get("concepts", [])),
                    exclude=rule_mask(w["exclude"]))


def _refuse_ids(docs: dict, key: bytes, keyed: dict) -> None:
    """Stop before anything is published if a string of a report holds an original subject,
    admission or stay id: a number standing alone whose keyed hash is one of the version's
    (the driver holds keyed ids only). Names the place, not the id."""
    for name, doc in docs.items():
        for where, n in deid.numbers_in_strings(doc):
            for kind, ids in keyed.items():
                h = deid.keyed_id(key, kind, n) if n > 0 else -1
                at = np.searchsorted(ids, h)
                if at < len(ids) and ids[at] == h:
                    raise RuntimeError(f"share: {name} would hold an original {kind} in the "
                                       f"string at {where or '/'}; nothing published (rename "
                                       "what carries it, e.g. a user table)")


def _prepare(vdir: Path, out: Path) -> None:
    """OUT_DIR must be new, empty, or what a killed run of this export left."""
    if out == vdir or vdir in out.parents or out in vdir.parents:
        raise ValueError(f"OUT_DIR {out} must lie outside the version {vdir} and not hold it")
    if (out / "dataset.json").exists():
        raise ValueError(f"{out}: already holds a finished version; delete it or choose "
                         "another folder")
    if out.exists():
        extra = sorted(p.name for p in out.iterdir()
                       if p.name not in OWN and ".tmp-" not in p.name)
        if extra:
            raise ValueError(f"{out}: not empty (holds {', '.join(extra[:5])}); choose a new "
                             "or empty folder")
        for p in out.iterdir():  # a killed run's files: keyed ids only
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def export_share(version_dir, out_dir, cfg=None, key_file=None, keep_text: bool = False,
                 progress: bool = True, in_process_below: int = IN_PROCESS_BELOW) -> dict:
    """Write a de-identified copy of `version_dir` to `out_dir` (docs/SHARE.md). `cfg`
    (config.Config) gives DEID_MIN_PATIENTS, ZSTD_LEVEL and the runner (RUNNER, MAX_CPUS,
    ...); None runs in this process with the defaults. Returns counts for `describe`."""
    t0 = time.perf_counter()
    key = deid.read_key(key_file)
    vdir = Path(version_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if not (vdir / "dataset.json").exists():
        raise ValueError(f"{vdir}: not a finished trajectory version (no dataset.json)")
    meta = json.loads((vdir / "dataset.json").read_text())
    _prepare(vdir, out)
    manifest = pl.read_parquet(vdir / "manifest.parquet")
    codes = pl.read_parquet(vdir / "codes.parquet").sort("code_id")
    k = cfg.deid_min_patients if cfg is not None else config_module.DEID_MIN_PATIENTS
    n_shards = max(1, int(meta.get("n_shards") or manifest["shard"].n_unique()))
    job = ShareJob(vdir, out, key, bool(keep_text), int(k),
                   cfg.zstd_level if cfg is not None else config_module.ZSTD_LEVEL,
                   meta.get("layout", "files"), n_shards,
                   {int(i): n for i, n in meta.get("sources", {}).items()},
                   grid_spec(meta, vdir))
    runner, used = version_runner(cfg, manifest.height, in_process_below)
    shards = sorted(manifest["shard"].unique().to_list())
    with runner as r:
        counted = r.map(count, shards, job, "share-count", progress)
        keyed = {"subject_id": _check_unique([c["subjects"] for c in counted], "subject_id")}
        for kind in ("hadm_id", "stay_id", "note_id"):
            keyed[kind] = _check_unique([c["ids"][kind] for c in counted], kind)
        n_ids = {kind: len(ids) for kind, ids in keyed.items()}
        concepts: dict = {}
        for c in counted:
            for pair in c["concepts"]:
                concepts.setdefault(pair >> 16, set()).add((pair & 0xFFFF) - 32768)
        per_code = np.zeros(codes.height, np.int64)
        for c in counted:
            np.add.at(per_code, c["codes"], c["patients"])
        pairs = pl.DataFrame({"patient": np.concatenate([c["pair_patient"] for c in counted]),
                              "code_id": np.concatenate([c["pair_code"] for c in counted])})
        pairs = pairs.filter(pl.col("code_id").is_in(np.flatnonzero(per_code < k).tolist()))
        targets, code_report = deid_codes.generalise(codes["code"].to_list(), per_code, pairs, k)
        new_codes, lut = deid_codes.vocabulary(codes, targets)
        code_rules, concept_report = deid_codes.code_map(codes["code"].to_list(), targets, lut,
                                                         concepts)
        out_shard = np.zeros(manifest.height, np.int32)
        for c in counted:
            out_shard[c["rows"]] = c["subjects"] % n_shards
        del counted, pairs
        job = dataclasses.replace(job, codes=code_rules, out_shard=out_shard)
        written = r.map(write, sorted(set(out_shard.tolist())), job, "share-write", progress)
    rows = [row for w in written for row in w["rows"]]
    copy = pl.DataFrame(rows, schema={c: manifest.schema[c] for c in MANIFEST}, orient="row"
                        ).sort("subject_id")
    if copy.height != manifest.height or copy["n_events"].sum() != manifest["n_events"].sum():
        raise RuntimeError("share: the copy's patients or events differ from the version's")
    if new_codes["count"].sum() != copy["n_events"].sum():
        raise RuntimeError("share: codes.parquet counts disagree with the records")
    atomic_write_parquet(copy, out / "manifest.parquet")
    atomic_write_parquet(new_codes, out / "codes.parquet")
    kept = set(codes.filter(pl.Series(per_code >= k))["code"].to_list())
    qc, qc_removed = deid.qc_for_copy(json.loads((vdir / "qc_report.json").read_text()), kept,
                                      QC_KEEP, CLEANING_KEEP)
    counts, text_dropped = Counter(), Counter()
    for w in written:
        counts.update(w["counts"])
        text_dropped.update(w["text_dropped"])
    report = {
        "ids_replaced": n_ids,
        "times_shifted": {"patients": copy.height, "events": int(counts["events"]),
                          "offset": f"whole weeks, 1 to {deid.MAX_SHIFT_WEEKS} either way",
                          # BIRTH, GENDER, user tables' `static` facts: moved with birth
                          "events_at_birth_moved_with_it": int(counts["events_at_birth"]),
                          "windows": "made again on the copy's events"},
        "ages": {"anchor_age_top_coded": int(counts["anchor_age_top_coded"]),
                 "birth_time_90_years_before_last_time": int(counts["birth_time_capped"])},
        "text": ({"kept": True, "what_is_kept": deid.KEEP_TEXT,
                  "datetime_values_shifted": int(counts["datetime_text_shifted"]),
                  "datetime_values_unparsed_dropped":
                      int(counts["datetime_text_unparsed_dropped"]),
                  # detail fields (ids, authors, times) are dropped even with --keep-text
                  "events_with_text_dropped": dict(sorted(text_dropped.items()))}
                 if keep_text else
                 {"kept": False, "events_with_text_dropped": dict(sorted(text_dropped.items())),
                  "note_bodies_dropped": int(counts["notes"])}),
        "codes": {**code_report, **concept_report, "codes_out": new_codes.height,
                  "events_concept_dropped": int(counts["concept_dropped"]),
                  "events_flags_cleared": int(counts["flags_cleared"]),
                  "events_recoded": int(codes.filter(
                      pl.Series([t is not None and t != s for s, t in
                                 zip(codes["code"].to_list(), targets)]))["count"].sum())},
        "qc_report": qc_removed,
        "dataset_json_keys_removed": sorted(set(meta) - set(DATASET_KEEP) - {
            "version", "n_shards", "n_patients", "n_events", "record_bytes", "n_codes",
            "config", "config_hash", "code_version", "warnings"}),
        "warnings_withheld": deid.public_warnings(meta.get("warnings", []), TABLE_NAMES)[1],
        "not_copied": sorted(p.name + ("/" if p.is_dir() else "") for p in vdir.iterdir()
                             if p.name in KNOWN_EXTRA),
        "not_copied_other": sum(p.name not in OWN and p.name not in KNOWN_EXTRA
                                for p in vdir.iterdir()),
    }
    doc = dataset_document(meta, job, copy, new_codes, key)
    _refuse_ids({"qc_report.json": qc, "deid_report.json": report, "dataset.json": doc,
                 "codes.parquet": new_codes.select("code", "table", "label", "unit").rows()},
                key, {k: keyed[k] for k in ("subject_id", "hadm_id", "stay_id")})
    paths = _source_paths(meta) + [str(vdir)]
    for name, obj in (("qc_report.json", qc), ("deid_report.json", report),
                      ("dataset.json", doc)):
        text = json.dumps(obj)
        if any(p in text for p in paths):  # a key a later build adds, not yet known here
            raise RuntimeError(f"share: {name} would name a source path "
                               f"{[p for p in paths if p in text]}; nothing published")
    atomic_write_json(out / "qc_report.json", qc)
    atomic_write_json(out / "deid_report.json", report)
    atomic_write_json(out / "dataset.json", doc)
    return {"version_dir": str(vdir), "out_dir": str(out), "patients": copy.height,
            "events": int(copy["n_events"].sum()), "report": report, "runner": used,
            "seconds": round(time.perf_counter() - t0, 2)}


def dataset_document(meta: dict, job: ShareJob, manifest: pl.DataFrame, codes: pl.DataFrame,
                     key: bytes) -> dict:
    """The copy's dataset.json: the record layout, no path, input fingerprint or time."""
    from .finalize import _code_version

    deid_doc = {"id_hash": "HMAC-SHA256(key, '<kind>:<id>'), first 8 bytes big-endian, "
                           "top bit cleared",
                "time_shift": f"whole weeks in [-{deid.MAX_SHIFT_WEEKS}, -1] or "
                              f"[1, {deid.MAX_SHIFT_WEEKS}], one per patient",
                "anchor": "anchor_year: the source's distance in calendar years to the "
                          "patient's last time, laid on the shifted last time; birth_time: 1 "
                          "January of anchor_year - anchor_age (age 90: 90 years before the "
                          "last time)",
                "windows": "made again on the copy's events, starts on multiples of the step",
                "age_cap": deid.AGE_CAP, "min_patients": job.min_patients,
                "keep_text": job.keep_text, "key_fingerprint": deid.key_fingerprint(key)}
    source = {"version": meta.get("version"), "config_hash": meta.get("config_hash"),
              "code_version": meta.get("code_version")}
    config_hash = hashlib.sha256(json.dumps({"source": source, "deid": deid_doc},
                                            sort_keys=True).encode()).hexdigest()[:16]
    return {**{k: meta[k] for k in DATASET_KEEP if k in meta},
            # only "table <built-in table> not found in DATA_DIR: skipped"; the others can
            # name a file or an id and are withheld (counted in deid_report.json)
            "warnings": deid.public_warnings(meta.get("warnings", []), TABLE_NAMES)[0],
            # the source's name: the copy's bytes do not depend on the folder it is written to
            "version": meta.get("version"), "n_shards": job.n_shards,
            "n_patients": manifest.height, "n_events": int(manifest["n_events"].sum()),
            "record_bytes": int(manifest["bytes"].sum()), "n_codes": codes.height,
            "config": {k: v for k, v in meta.get("config", {}).items()
                       if not _is_path(k, v)},
            "config_hash": config_hash, "code_version": _code_version(),
            "deid": deid_doc, "source": source}


def describe(result: dict) -> str:
    r = result["report"]
    c, t = r["codes"], r["text"]
    text = (f"kept: {t['what_is_kept']}" if t["kept"] else
            f"dropped from {sum(t['events_with_text_dropped'].values()):,} events "
            f"({t['note_bodies_dropped']:,} note bodies)")
    return "\n".join([
        f"ids: " + ", ".join(f"{k} {n:,}" for k, n in r["ids_replaced"].items()) + " replaced",
        f"times: shifted per patient ({r['times_shifted']['offset']}), birth and anchor year "
        f"laid on the copy's clock, windows made again; ages: "
        f"{r['ages']['anchor_age_top_coded']:,} top-coded at 90",
        f"codes: {c['codes_in']:,} -> {c['codes_out']:,} ({c['codes_generalised']:,} of fewer "
        f"than {c['min_patients']} patients generalised, {c['events_recoded']:,} events; "
        f"concept dropped from {c['events_concept_dropped']:,})",
        f"text: {text}",
        f"wrote {result['out_dir']}: {result['patients']:,} patients, {result['events']:,} "
        f"events, {result['runner']} runner, {result['seconds']:.1f} s (deid_report.json)"])
