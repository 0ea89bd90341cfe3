"""One item out of a record: the subject's events (cut at a prediction time, cropped to a stay,
a time range, the last N), its text and window blocks, as tensors. Shared by both datasets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
import zstandard

from .. import record
from ..splits import SPLIT_NAMES, split_of
from ..use.store import RecordReader
from ..windows.grids import rows_known_at
from .labels import LABEL_IDS, read_labels


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
TORCH_DTYPES = {np.int64: torch.int64, np.float32: torch.float32, np.uint8: torch.uint8}


class ItemSource:
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
