"""PyTorch datasets over a built trajectory version (optional: needs `pip install torch`).

    from trajectory.torch import TrajectoryDataset, collate_trajectories
    ds = TrajectoryDataset("trajectories/v1", split="train", max_events=4096)
    dl = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=4,
                                     collate_fn=collate_trajectories)

Conventions
-----------
* An item is one patient: a dict with ``subject_id`` (int), ``length`` (int) and 1-D tensors
  ``time`` int64 (epoch seconds), ``code`` int64 (row of codes.parquet), ``value`` float32
  (NaN when none), ``source`` uint8, ``flags`` uint8, ``concept`` int64 (-1 when none),
  ``concept_value`` float32 (NaN when none), ``known_time`` int64 (epoch seconds the event
  became known: a lab's result, a note's signature; >= ``time``); ``text`` (list of str | None, one per event) when
  ``with_text``; ``windows`` (list of dicts: ``data`` float32 tensor [T, F, S], ``start``,
  ``step``, ``features``, ``stats``, ``kind``, ``id``) when ``with_windows``.
  Tensors own writable memory (one copy out of the decoded record).
* Cropping, applied in this order: ``stay=stay_id`` keeps that ICU stay's events (and only
  that stay's windows); ``time_range=(t0, t1)`` keeps events with t0 <= time < t1 (windows are
  not cropped); ``max_events=N`` keeps the LAST N remaining events.
* Task-cut samples: with ``task=NAME`` (``VERSION_DIR/tasks/NAME.parquet``, written by
  ``python build_patient_files.py tasks VERSION_DIR``) or ``labels=PATH`` (any parquet in the
  MEDS label schema: ``subject_id`` integer, ``prediction_time`` datetime, and exactly one of
  ``boolean_value`` / ``integer_value`` / ``float_value`` / ``categorical_value`` holding
  values, e.g. ACES' output over a MEDS export) an item is one LABEL ROW, not one patient. It
  holds the patient's events KNOWN at the prediction time, ``known_time <= prediction_time``
  (inclusive: an event known at the prediction time is usable then; ``prediction_time`` is
  floored to whole seconds, the events' resolution), only the window rows that END at or
  before it (row ``w`` of a block is kept when ``start + (w+1)*step <= prediction_time``; a
  block whose first window ends later is dropped whole), each row counting only the values
  known at the prediction time, so the rows aggregate the item's own events
  (grids.rows_known_at: a block is recounted only when a value of it was charted before the
  prediction time and known after), ``label`` (0-d tensor: bool, int64, float32, or int64 index into
  ``dataset.label_classes`` for categorical labels) and ``prediction_time`` (int, epoch
  seconds), plus ``hadm_id``/``stay_id`` (int, -1 when null) when the labels file, or its
  ``<name>.ids.parquet`` sidecar from the tasks command, has those columns. The cut comes first, then ``stay``, ``time_range`` and ``max_events`` (the LAST N
  events before the cut). ``cut_rule="charttime"`` cuts as MEDS, ACES and the benchmarks
  do instead, to compare with them: events with ``time <= prediction_time`` (a lab drawn
  before it and resulted after it is in) and window rows counting every value charted in
  them; README "What was known when" measures the difference. ``split`` still goes by subject: a row is in the split of its
  ``subject_id``, so no patient's rows straddle train and test.
* Splits come from :func:`trajectory.splits.split_of` (a stable hash of subject_id and
  ``split_seed``), so they never depend on the process or on which other subjects exist.
* The version is opened lazily, once per process (DataLoader workers re-open it after a
  fork or spawn); datasets pickle without open file state.
* :class:`TrajectoryIterableDataset` streams subjects sorted by (shard, subject_id) and splits
  them over DDP ranks and DataLoader workers by striding over the global worker index
  ``rank * num_workers + worker_id``: every subject is yielded exactly once per epoch across
  all ranks and workers, none dropped or repeated. Ranks therefore may get different numbers
  of samples (by at most ``num_workers``, by one when num_workers <= 1); use
  ``drop_last``/join logic in DDP if equal step counts matter. With labels the same holds
  for label rows, sorted by (shard, subject_id, prediction_time).
* :func:`collate_trajectories` pads with 0 (``value`` and ``concept_value`` too, although
  real events may hold NaN there); ``attention_mask`` (True = real event) is what tells
  padding apart. ``max_len`` keeps each patient's last ``max_len`` events. Both collates
  stack ``label`` [B] and ``prediction_time`` [B] int64 (and ``hadm_id``/``stay_id``) when
  the items have them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

try:
    import torch
    from torch.utils.data import Dataset, IterableDataset, get_worker_info
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("trajectory.torch needs PyTorch, which is not installed: "
                      "pip install torch (see https://pytorch.org)") from e

import numpy as np
import polars as pl
import zstandard

from . import record
from .windows.grids import rows_known_at
from .splits import SPLIT_NAMES, split_of
from .use.store import RecordReader

__all__ = ["TrajectoryDataset", "TrajectoryIterableDataset", "collate_trajectories",
           "collate_packed", "read_labels", "EVENT_FIELDS", "LABEL_COLUMNS"]

# item field -> output numpy dtype (torch.from_numpy keeps it)
EVENT_FIELDS = {
    "time": np.int64,
    "code": np.int64,
    "value": np.float32,
    "source": np.uint8,
    "flags": np.uint8,
    "concept": np.int64,
    "concept_value": np.float32,
    "known_time": np.int64,
}
_TORCH_DTYPES = {np.int64: torch.int64, np.float32: torch.float32, np.uint8: torch.uint8}
# MEDS label value columns -> the polars dtypes they may have
LABEL_COLUMNS = {"boolean_value": "boolean", "integer_value": "integer",
                 "float_value": "float", "categorical_value": "string"}
LABEL_IDS = ("hadm_id", "stay_id")  # optional id columns carried into items


def read_labels(path) -> dict:
    """A MEDS label parquet, validated, as numpy arrays: ``subject_id`` int64,
    ``prediction_time`` int64 epoch seconds (floored), ``value`` (bool / int64 / float32 /
    int64 category index), ``column`` (the value column used), ``classes`` (categories, or
    None), and ``hadm_id``/``stay_id`` int64 (-1 when null) when present. Every error names
    the file and the column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labels file {path} does not exist")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # not parquet, truncated, ...
        raise ValueError(f"labels file {path}: not a readable parquet file ({e})") from e
    for col in ("subject_id", "prediction_time"):
        if col not in df.columns:
            raise ValueError(f"labels file {path}: no column {col!r} (MEDS label schema: "
                             f"subject_id, prediction_time, one of {list(LABEL_COLUMNS)}); "
                             f"it has {df.columns}")
        if df[col].null_count():
            raise ValueError(f"labels file {path}: column {col!r} has "
                             f"{df[col].null_count()} null(s)")
    if not df["subject_id"].dtype.is_integer():
        raise ValueError(f"labels file {path}: column 'subject_id' must be an integer, "
                         f"got {df['subject_id'].dtype}")
    if not isinstance(df["prediction_time"].dtype, pl.Datetime):
        raise ValueError(f"labels file {path}: column 'prediction_time' must be a datetime "
                         f"(timestamp[us] in MEDS), got {df['prediction_time'].dtype}")
    present = [c for c in LABEL_COLUMNS if c in df.columns and df[c].null_count() < df.height]
    if df.height and len(present) != 1:
        have = [c for c in LABEL_COLUMNS if c in df.columns]
        raise ValueError(f"labels file {path}: expected exactly one label column with values "
                         f"among {list(LABEL_COLUMNS)}, found {present or have or 'none'}")
    if not df.height:
        present = [next((c for c in LABEL_COLUMNS if c in df.columns), "boolean_value")]
    col = present[0]
    values = df[col] if col in df.columns else pl.Series(col, [], dtype=pl.Boolean)
    if values.null_count():
        raise ValueError(f"labels file {path}: column {col!r} has {values.null_count()} "
                         "null(s) among its values")
    kind, dt = LABEL_COLUMNS[col], values.dtype
    ok = {"boolean": dt == pl.Boolean, "integer": dt.is_integer(), "float": dt.is_float(),
          "string": dt in (pl.String, pl.Categorical) or isinstance(dt, pl.Enum)}[kind]
    if not ok:
        raise ValueError(f"labels file {path}: column {col!r} must be {kind}, got {dt}")
    classes = None
    if kind == "boolean":
        value = values.to_numpy().astype(bool)
    elif kind == "integer":
        value = values.to_numpy().astype(np.int64)
    elif kind == "float":
        value = values.to_numpy().astype(np.float32)
    else:
        strings = values.cast(pl.String)
        classes = sorted(strings.unique().to_list())
        value = np.searchsorted(np.asarray(classes, dtype=object), strings.to_numpy()
                                ).astype(np.int64)
    # epoch seconds, floored: events are whole seconds, so time <= floor(t) <=> time <= t
    secs = df["prediction_time"].dt.epoch("us").to_numpy().astype(np.int64) // 1_000_000
    out = {"subject_id": df["subject_id"].to_numpy().astype(np.int64), "prediction_time": secs,
           "value": value, "column": col, "classes": classes}
    ids = path.with_name(path.name.replace(".parquet", ".ids.parquet"))
    if ids.exists() and not any(c in df.columns for c in LABEL_IDS):
        # the tasks command's sidecar: same rows, same order (a MEDS label file has no room)
        side = pl.read_parquet(ids)
        if (side.height != df.height or not side["subject_id"].equals(df["subject_id"])
                or not side["prediction_time"].equals(df["prediction_time"])):
            raise ValueError(f"{ids}: its rows do not match {path} (rerun the tasks command)")
        df = df.with_columns(side.select([c for c in LABEL_IDS if c in side.columns]))
    for c in LABEL_IDS:
        if c in df.columns:
            if not df[c].dtype.is_integer() and df[c].dtype != pl.Null:
                raise ValueError(f"labels file {path}: column {c!r} must be an integer, "
                                 f"got {df[c].dtype}")
            out[c] = df[c].cast(pl.Int64).fill_null(-1).to_numpy().astype(np.int64)
    return out


class _Source:
    """Shared state: subject list, item options, the polars-free record reader."""

    def __init__(self, version_dir, split=None, subjects=None, transform=None,
                 max_events=None, time_range=None, stay=None, with_text=False,
                 with_windows=True, split_seed=0, split_fractions=(0.8, 0.1, 0.1),
                 task=None, labels=None, cut_rule="known"):
        self.version_dir = Path(version_dir)
        if cut_rule not in record.CUT_RULES:
            raise ValueError(f"cut_rule must be one of {record.CUT_RULES}, got {cut_rule!r}")
        self.cut_rule = cut_rule
        if not (self.version_dir / "dataset.json").exists():
            raise ValueError(f"{self.version_dir}: not a finished trajectory version "
                             "(no dataset.json)")
        meta = json.loads((self.version_dir / "dataset.json").read_text())
        # the flags whose events no window counts (WINDOW_EXCLUDE), for recounted rows
        self._window_exclude = sum(1 << meta["flags"][r] for r in set(
            meta["windows"]["exclude"]))
        if task is not None and labels is not None:
            raise ValueError("give task= or labels=, not both")
        if task is not None:
            labels = self.version_dir / "tasks" / f"{task}.parquet"
            if not labels.exists():
                raise FileNotFoundError(
                    f"task {task!r}: no labels at {labels}; make them with "
                    f"`python build_patient_files.py tasks {self.version_dir} --task {task}`")
        m = pl.read_parquet(self.version_dir / "manifest.parquet",
                            columns=["subject_id", "shard", "n_events", "path", "offset",
                                     "bytes"])
        # Built here, in the parent, so workers never run polars (not fork-safe).
        self.reader = RecordReader(self.version_dir, m["subject_id"].to_list(),
                                   m["path"].to_list(), m["offset"].to_list(),
                                   m["bytes"].to_list())
        sids = m["subject_id"].to_numpy().astype(np.int64)
        shards = m["shard"].to_numpy()
        keep = np.ones(len(sids), dtype=bool)
        if subjects is not None:
            wanted = np.asarray(list(subjects), dtype=np.int64)
            missing = wanted[~np.isin(wanted, sids)]
            if len(missing):
                raise KeyError(f"subject_id(s) {missing[:5].tolist()} not in {self.version_dir}")
            keep &= np.isin(sids, wanted)
        if split is not None:
            if split not in SPLIT_NAMES:
                raise ValueError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
            keep &= split_of(sids, split_seed, split_fractions) == split
        if subjects is not None and split is None:
            # explicit subjects keep the caller's order
            self.subject_ids = wanted.copy()
            pos = {int(s): i for i, s in enumerate(sids)}
            self._shards = shards[[pos[int(s)] for s in wanted]]
        else:
            self.subject_ids = sids[keep]
            self._shards = shards[keep]
        self.labels_path = None if labels is None else Path(labels)
        self.labels = None  # label mode: arrays of the kept label rows (read_labels)
        self.label_classes = None
        if labels is not None:
            lab = read_labels(labels)
            lsid = lab["subject_id"]
            known = np.isin(lsid, sids)
            if not known.all():
                bad = np.unique(lsid[~known])
                raise ValueError(f"labels file {self.labels_path}: subject_id {int(bad[0])} "
                                 f"({len(bad)} subject(s) in all, first "
                                 f"{bad[:5].tolist()}) not in the version {self.version_dir}")
            rows = np.isin(lsid, self.subject_ids)  # the subjects/split chosen above
            self.labels = {k: (v[rows] if isinstance(v, np.ndarray) else v)
                           for k, v in lab.items()}
            self.label_classes = lab["classes"]
            shard_of = dict(zip(sids.tolist(), shards.tolist()))
            self._label_shards = np.array([shard_of[int(s)] for s in self.labels["subject_id"]],
                                          dtype=np.int64)
        self.transform = transform
        if max_events is not None and max_events < 0:
            raise ValueError("max_events must be >= 0")
        self.max_events = max_events
        self.time_range = None if time_range is None else (int(time_range[0]),
                                                           int(time_range[1]))
        self.stay = None if stay is None else int(stay)
        self.with_text = with_text
        self.with_windows = with_windows

    @property
    def version(self) -> RecordReader:
        return self.reader

    def __getstate__(self):
        return {**self.__dict__, "_dctx": None, "_last": None}

    def _record(self, subject_id: int) -> dict:
        """What this process keeps of the record it read last: its outer map (frames still
        compressed), inflated chunks, and texts/windows once asked for. Consecutive label
        rows of one patient (file order) then read and inflate each part once; a record of
        another patient replaces it, so memory stays one record's worth of small frames."""
        last = getattr(self, "_last", None)
        if last is not None and last["sid"] == subject_id:
            return last
        if getattr(self, "_dctx", None) is None:
            self._dctx = zstandard.ZstdDecompressor()
        try:
            outer = record.parse(self.reader.read_bytes(subject_id))
        except ValueError as e:
            raise ValueError(f"record of subject {subject_id} in {self.version_dir}: {e}") from e
        self._last = {"sid": subject_id, "outer": outer, "chunks": {}}
        return self._last

    def _events(self, rec: dict, cut: int | None) -> dict:
        """Event columns up to the cut, inflating only the chunks the item needs: without
        a stay or time range the item is the LAST max_events of them, so only those."""
        plain = self.stay is None and self.time_range is None
        columns = [*EVENT_FIELDS, *(("text",) if self.with_text else ()),
                   *(("stay_id",) if self.stay is not None else ())]
        return record.read_events(rec["outer"], cut, self.max_events if plain else None,
                                  self._dctx, rec["chunks"], columns, self.cut_rule)

    def _rows_known_at(self, rec: dict, w: dict, cut: int, keep: int, data: np.ndarray):
        """The first `keep` rows of grid `w` as they stood at `cut`: counting only the values
        known by then, as the item's events. The stored rows count every value charted in
        them; they differ only when a value of the grid charted before the cut was known
        after it (a lab drawn at 23:10 and resulted at 24:40, for a cut at 24:00). Such values
        lie only in chunks whose `known_max` passes the cut, so only those are searched, and
        only a grid that has one is recounted, from the record's events up to the cut."""
        late = rec.get("late")
        if late is None or late[0] != cut:
            chunks = rec["outer"]["chunks"]
            cols = ["time", "known_time", "concept", "concept_value", "flags"]
            parts = [record.read_chunk(rec["outer"], k, cols, self._dctx, rec["chunks"])
                     for k, (t, m) in enumerate(zip(chunks["t_first"], chunks["known_max"]))
                     if t <= cut and m is not None and m > cut]
            concepts, times = [], []
            for ev in parts:
                after = ((ev["concept"] >= 0) & ~np.isnan(ev["concept_value"])
                         & ((ev["flags"] & np.uint8(self._window_exclude)) == 0)
                         & (ev["time"] <= cut) & (ev["known_time"] > cut))
                concepts.append(ev["concept"][after])
                times.append(ev["time"][after])
            late = rec["late"] = (cut, np.concatenate(concepts) if parts else np.empty(0),
                                  np.concatenate(times) if parts else np.empty(0))
        _, concepts, times = late
        end = int(w["start"]) + keep * int(w["step"])
        if not len(concepts) or not np.isin(concepts[times < end], w["features"]).any():
            return data
        ev = record.read_events(rec["outer"], cut, None, self._dctx, rec["chunks"],
                                ["time", "known_delta", "concept", "concept_value", "flags"],
                                "charttime")
        return rows_known_at(w, ev, cut, self._window_exclude, keep)

    def _part(self, rec: dict, key: str):
        if key not in rec:
            read = record.read_texts if key == "texts" else record.read_windows
            rec[key] = read(rec["outer"], self._dctx)
        return rec[key]

    # -- one item ------------------------------------------------------------------------
    def _n_items(self) -> int:
        return len(self.subject_ids) if self.labels is None else len(self.labels["subject_id"])

    def _selection(self, ev: dict):
        """A slice (contiguous crop) or an index array into the event columns (already cut
        at the prediction time by `_events`)."""
        n = len(ev["time"])
        mask = None
        if self.stay is not None:
            mask = ev["stay_id"] == self.stay
        if self.time_range is not None:
            t = ev["time"]
            m2 = (t >= self.time_range[0]) & (t < self.time_range[1])
            mask = m2 if mask is None else (mask & m2)
        if mask is None:
            start = 0 if self.max_events is None else max(0, n - self.max_events)
            return slice(start, n)
        idx = np.flatnonzero(mask)
        if self.max_events is not None and len(idx) > self.max_events:
            idx = idx[len(idx) - self.max_events:]
        return idx

    def load_row(self, row: int) -> dict:
        """Label mode: the item of label row `row` (of the kept rows)."""
        lab = self.labels
        # np.array: a 0-d copy; torch.tensor on a numpy scalar costs ~0.1 ms
        extra = {"label": torch.from_numpy(np.array(lab["value"][row])),
                 "prediction_time": int(lab["prediction_time"][row])}
        for c in LABEL_IDS:
            if c in lab:
                extra[c] = int(lab[c][row])
        return self.load(int(lab["subject_id"][row]), cut=extra["prediction_time"],
                         extra=extra)

    def load(self, subject_id: int, cut: int | None = None, extra: dict | None = None) -> dict:
        subject_id = int(subject_id)  # the manifest's id, written from the record's own
        rec = self._record(subject_id)
        ev = self._events(rec, cut)
        sel = self._selection(ev)
        item = {"subject_id": subject_id}
        for name, dt in EVENT_FIELDS.items():
            col = ev[name]
            if isinstance(sel, slice):
                arr = col[sel].astype(dt, copy=True)  # views are read-only: copy once
            else:
                arr = col.take(sel).astype(dt, copy=False)  # take already copied
            item[name] = torch.from_numpy(arr)
        item["length"] = int(item["time"].shape[0])
        if self.with_text:
            tidx = ev["text"][sel]
            texts = self._part(rec, "texts")
            lookup = np.empty(len(texts) + 1, dtype=object)
            lookup[:-1] = texts
            lookup[-1] = None
            item["text"] = lookup[np.where(tidx < 0, len(lookup) - 1, tidx)].tolist()
        if self.with_windows:
            wins = []
            for w in self._part(rec, "windows"):
                if self.stay is not None and not (w.get("kind") == "stay"
                                                  and int(w.get("id")) == self.stay):
                    continue
                data = w["data"]
                if cut is not None:
                    # rows that end at or before the cut: start + (w+1)*step <= cut
                    keep = min(len(data), max(0, (cut - int(w["start"])) // int(w["step"])))
                    if keep == 0:
                        continue
                    data = data[:keep]
                    if self.cut_rule == "known":
                        data = self._rows_known_at(rec, w, cut, keep, data)
                wins.append({"data": torch.from_numpy(data.copy()),
                             "start": w["start"], "step": w["step"],
                             "features": list(w["features"]), "stats": list(w["stats"]),
                             "kind": w.get("kind"), "id": w.get("id")})
            item["windows"] = wins
        if extra:
            item.update(extra)
        if self.transform is not None:
            item = self.transform(item)
        return item


class TrajectoryDataset(_Source, Dataset):
    """Map-style dataset: ``dataset[i]`` is the i-th selected patient (manifest order, i.e.
    by subject_id, unless explicit ``subjects`` give an order); with ``task``/``labels``,
    the i-th kept label row (the file's order), cut at its prediction time."""

    def __init__(self, version_dir, split: str | None = None,
                 subjects: Sequence[int] | None = None, transform: Callable | None = None,
                 max_events: int | None = None, time_range: tuple[int, int] | None = None,
                 stay: int | None = None, with_text: bool = False, with_windows: bool = True,
                 split_seed: int = 0, split_fractions=(0.8, 0.1, 0.1),
                 task: str | None = None, labels: str | Path | None = None,
                 cut_rule: str = "known"):
        _Source.__init__(self, version_dir, split=split, subjects=subjects,
                         transform=transform, max_events=max_events, time_range=time_range,
                         stay=stay, with_text=with_text, with_windows=with_windows,
                         split_seed=split_seed, split_fractions=split_fractions, task=task,
                         labels=labels, cut_rule=cut_rule)

    def __len__(self) -> int:
        return self._n_items()

    def __getitem__(self, i: int) -> dict:
        if self.labels is not None:
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} label rows")
            return self.load_row(int(i) % len(self))
        return self.load(self.subject_ids[i])


class TrajectoryIterableDataset(_Source, IterableDataset):
    """Streams patients sorted by (shard, subject_id), split over DDP ranks and DataLoader
    workers (see the module docstring). With ``shuffle`` (default: on when
    ``shuffle_buffer > 0``) the order is first permuted with
    ``np.random.default_rng((seed, epoch))`` -- the same permutation on every rank and
    worker -- before striding, then passed through a shuffle buffer of ``shuffle_buffer``
    subject ids (ids, not decoded items, so the buffer costs no memory). Deterministic given
    seed and epoch; call :meth:`set_epoch` before each epoch (with non-persistent workers, or
    the workers keep the epoch they were started with).

    Rank/world size: explicit ``rank``/``world_size`` win; else torch.distributed when
    initialised; else 0/1.
    """

    def __init__(self, version_dir, split: str | None = None, shuffle_buffer: int = 0,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool | None = None, **options):
        _Source.__init__(self, version_dir, split=split, **options)
        order = np.lexsort((self.subject_ids, self._shards))
        self.subject_ids = self.subject_ids[order]
        self._shards = self._shards[order]
        if self.labels is None:
            self._keys = self.subject_ids
        else:  # label rows, by (shard, subject_id, prediction_time, file order)
            lab = self.labels
            self._keys = np.lexsort((np.arange(self._n_items()), lab["prediction_time"],
                                     lab["subject_id"], self._label_shards))
        self.shuffle_buffer = int(shuffle_buffer)
        self.shuffle = self.shuffle_buffer > 0 if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            rank, world = (self.rank or 0), (self.world_size or 1)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world_size {world}")
        return rank, world

    def _epoch_order(self) -> np.ndarray:
        if not self.shuffle:
            return self._keys
        rng = np.random.default_rng((self.seed, self.epoch))
        return self._keys[rng.permutation(len(self._keys))]

    def subjects_for(self, rank: int, world_size: int, worker_id: int = 0,
                     num_workers: int = 1) -> np.ndarray:
        """The subject ids one (rank, worker) reads this epoch, before the shuffle buffer
        (label row indices in label mode)."""
        g = rank * num_workers + worker_id
        return self._epoch_order()[g::world_size * num_workers]

    def num_samples(self, num_workers: int = 0) -> int:
        """Samples this rank yields per epoch with a DataLoader of ``num_workers`` (all its
        workers together). Deliberately not ``__len__``: the count depends on num_workers."""
        rank, world = self._rank_world()
        nw = max(1, int(num_workers))
        return sum(len(self.subjects_for(rank, world, w, nw)) for w in range(nw))

    def __iter__(self) -> Iterator[dict]:
        rank, world = self._rank_world()
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        sids = self.subjects_for(rank, world, wid, nw)
        if self.shuffle and self.shuffle_buffer > 1:
            sids = _buffer_shuffle(sids, self.shuffle_buffer,
                                   np.random.default_rng((self.seed, self.epoch,
                                                          rank * nw + wid)))
        load = self.load if self.labels is None else self.load_row
        for key in sids:
            yield load(key)


def _buffer_shuffle(ids: np.ndarray, size: int, rng) -> list:
    """Classic streaming shuffle buffer over ids (deterministic given rng)."""
    out, buf = [], []
    for sid in ids.tolist():
        if len(buf) < size:
            buf.append(sid)
            continue
        j = int(rng.integers(size))
        out.append(buf[j])
        buf[j] = sid
    rng.shuffle(buf)
    out.extend(buf)
    return out


def _arena(specs: dict) -> dict:
    """Uninitialised tensors (name -> (shape, dtype)) carved out of ONE allocation. In a
    DataLoader worker it is shared memory: the batch then crosses to the main process as one
    file descriptor, not one per tensor (~0.5 ms each under the default sharing strategy,
    half a task item's cost on the demo), and is never copied into shared memory again."""
    at, total = {}, 0
    for name, (shape, dt) in specs.items():
        at[name] = total
        total += -(-math.prod(shape) * dt.itemsize // 64) * 64  # aligned for any dtype
    total = max(total, 64)  # an empty batch: no zero-byte shared segment
    if get_worker_info() is not None and hasattr(torch.UntypedStorage, "_new_shared"):
        base = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total))
    elif get_worker_info() is not None:
        base = torch.empty(total, dtype=torch.uint8).share_memory_()
    else:
        base = torch.empty(total, dtype=torch.uint8)
    return {name: base[at[name]:at[name] + math.prod(shape) * dt.itemsize].view(dt)
            .view(shape) for name, (shape, dt) in specs.items()}


def _batch_specs(batch: list[dict], fields: dict) -> dict:
    """The arena specs of a collate's fields, plus the [B] label and id fields items have."""
    B, first = len(batch), (batch[0] if batch else {})
    specs = {"subject_id": ((B,), torch.int64), "lengths": ((B,), torch.int64), **fields}
    if "label" in first:
        specs["label"] = ((B,), torch.as_tensor(first["label"]).dtype)
    for key in ("prediction_time",) + LABEL_IDS:
        if key in first:
            specs[key] = ((B,), torch.int64)
    return specs


def _fill_small(out: dict, batch: list[dict]) -> None:
    """subject_id and the label fields, written into the arena's [B] tensors."""
    for key in ("subject_id", "prediction_time") + LABEL_IDS:
        if key in out:
            out[key].numpy()[:] = [it[key] for it in batch]
    if "label" in out and batch:
        torch.stack([torch.as_tensor(it["label"]) for it in batch], out=out["label"])


def collate_trajectories(batch: list[dict], max_len: int | None = None) -> dict:
    """Pad a list of items to [B, L] tensors (L = longest length, capped at ``max_len``,
    keeping each patient's LAST events). Padding is 0 in every field; ``attention_mask``
    (bool, True = real event) and ``lengths`` mark the real events. ``subject_id`` is [B]
    int64. ``text``/``windows`` pass through as lists when present. The batch's tensors share
    one allocation (see ``_arena``): keeping any of them keeps the whole batch's memory."""
    B = len(batch)
    lengths = np.array([it["length"] for it in batch], dtype=np.int64)
    if max_len is not None:
        lengths = np.minimum(lengths, int(max_len))
    L = int(lengths.max()) if B else 0
    fields = {name: ((B, L), _TORCH_DTYPES[dt]) for name, dt in EVENT_FIELDS.items()}
    out = _arena(_batch_specs(batch, {**fields, "attention_mask": ((B, L), torch.bool)}))
    out["lengths"].numpy()[:] = lengths
    _fill_small(out, batch)
    for name in EVENT_FIELDS:
        t = out[name].numpy()  # numpy slicing: a tenth of torch's per-call overhead
        for b, it in enumerate(batch):
            n = int(lengths[b])
            src = it[name].numpy()
            t[b, :n] = src[len(src) - n:]
            t[b, n:] = 0
    np.less(np.arange(L), lengths[:, None], out=out["attention_mask"].numpy())
    for key in ("text", "windows"):
        if batch and key in batch[0]:
            if key == "text" and max_len is not None:
                out[key] = [it[key][len(it[key]) - int(n):] if n else []
                            for it, n in zip(batch, lengths.tolist())]
            else:
                out[key] = [it[key] for it in batch]
    return out


def collate_packed(batch: list[dict]) -> dict:
    """Concatenate a batch into 1-D tensors (no padding): patient b's events are
    ``[offsets[b], offsets[b+1])``. Also ``lengths`` [B] and ``subject_id`` [B]. The batch's
    tensors share one allocation (see ``_arena``)."""
    lengths = np.array([it["length"] for it in batch], dtype=np.int64)
    total = int(lengths.sum())
    fields = {name: ((total,), _TORCH_DTYPES[dt]) for name, dt in EVENT_FIELDS.items()}
    out = _arena(_batch_specs(batch, {"offsets": ((len(batch) + 1,), torch.int64), **fields}))
    out["lengths"].numpy()[:] = lengths
    out["offsets"].numpy()[0] = 0
    np.cumsum(lengths, out=out["offsets"].numpy()[1:])
    _fill_small(out, batch)
    for name in EVENT_FIELDS:
        if batch:
            np.concatenate([it[name].numpy() for it in batch], out=out[name].numpy())
    for key in ("text", "windows"):
        if batch and key in batch[0]:
            out[key] = [it[key] for it in batch]
    return out
