"""Read a published version: open it, get a patient, iterate patients.

    v = open_version("trajectories/v1")
    p = v.patient(10000032)          # Patient: numpy event columns, decoded code strings
    for p in v: ...                  # manifest order (subject_id)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import zstandard

from ..record import unpack


@dataclass
class Patient:
    subject_id: int
    static: dict
    admissions: dict  # column -> list, one entry per admission (times in epoch seconds)
    stays: dict  # column -> list, one entry per ICU stay
    events: dict  # column -> numpy array (see record.EVENT_DTYPES)
    texts: list  # event["text"] indexes this list
    notes: dict  # {"event": [event index], "note_id": [str]}: notes and their detail rows
    windows: list
    codes: np.ndarray = field(repr=False)  # code string of every event

    def __len__(self) -> int:
        return len(self.events["time"])

    @property
    def known_time(self) -> np.ndarray:
        """When each event became known (int64 epoch seconds): time + known_delta."""
        return self.events["time"] + self.events["known_delta"]

    def text(self, i: int) -> str | None:
        t = int(self.events["text"][i])
        return None if t < 0 else self.texts[t]

    def note_id(self, i: int) -> str | None:
        """MIMIC-IV note_id of event i (a note, or a detail row of one), None otherwise."""
        try:
            return self.notes["note_id"][self.notes["event"].index(int(i))]
        except ValueError:
            return None


class RecordReader:
    """Record bytes and decoded records of a version, from plain lists: no polars, no open
    files, so it pickles into DataLoader workers. Polars is not fork-safe: a forked worker
    that ran a polars query after the parent had started polars' thread pool hung (seen in
    the test suite), so workers touch only this, the filesystem, zstd and numpy."""

    def __init__(self, path: Path, subject_ids, paths, offsets, sizes):
        self.path = Path(path)
        self._where = {int(s): (p, int(o), int(n))
                       for s, p, o, n in zip(subject_ids, paths, offsets, sizes)}
        self._dctx = None

    def __getstate__(self):
        return {**self.__dict__, "_dctx": None}

    def read_bytes(self, subject_id: int) -> bytes:
        """The record's compressed bytes, from its own file or its packed shard (one place
        knows the layouts)."""
        try:
            rel, offset, size = self._where[int(subject_id)]
        except KeyError as e:
            raise KeyError(f"subject_id {subject_id} is not in {self.path}") from e
        # os.open + pread: a third of open()'s cost, which a loader item pays per record
        fd = os.open(os.path.join(self.path, rel), os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise ValueError(f"{self.path / rel}: {len(data)} bytes at offset {offset}, the "
                             f"manifest says {size} (a truncated or replaced file?)")
        return data

    def raw(self, subject_id: int) -> dict:
        """The record as stored (events as numpy arrays, code ids not decoded)."""
        if self._dctx is None:
            self._dctx = zstandard.ZstdDecompressor()
        return unpack(self.read_bytes(subject_id), self._dctx)


class Version:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = self.path / "dataset.json"
        if not meta.exists():
            raise ValueError(f"{self.path}: not a finished trajectory version (no dataset.json)")
        self.meta = json.loads(meta.read_text())
        self.manifest = pl.read_parquet(self.path / "manifest.parquet")
        self.codes = pl.read_parquet(self.path / "codes.parquet")
        self._code_strings = self.codes["code"].to_numpy()
        m = self.manifest
        self.reader = RecordReader(self.path, m["subject_id"].to_list(), m["path"].to_list(),
                                   m["offset"].to_list(), m["bytes"].to_list())

    def __len__(self) -> int:
        return self.manifest.height

    @property
    def subject_ids(self) -> list[int]:
        return self.manifest["subject_id"].to_list()

    def read_bytes(self, subject_id: int) -> bytes:
        return self.reader.read_bytes(subject_id)

    def raw(self, subject_id: int) -> dict:
        """The record as stored (events as numpy arrays, code ids not decoded)."""
        return self.reader.raw(subject_id)

    def patient(self, subject_id: int) -> Patient:
        r = self.raw(subject_id)
        return Patient(subject_id=r["subject_id"], static=r["static"],
                       admissions=r["admissions"], stays=r["stays"], events=r["events"],
                       texts=r["texts"], notes=r["notes"], windows=r["windows"],
                       codes=self._code_strings[r["events"]["code"]])

    def __iter__(self) -> Iterator[Patient]:
        for sid in self.subject_ids:
            yield self.patient(sid)


def open_version(path: str | Path) -> Version:
    return Version(path)
