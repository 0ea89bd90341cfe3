"""Record format 3: pack/unpack round trip, partial event reads (both cut rules) against a full
decode, foreign formats refused (format 2 with the rebuild hint), and docs/FORMAT.md's
snippet decoding a record on its own."""
import re
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zstandard

from trajectory import record
from trajectory.record import EVENT_DTYPES

CCTX, DCTX = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
DOC = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"


def make_record(times, texts=("a note",), windows=True) -> dict:
    n = len(times)
    rng = np.random.default_rng(n)
    # known after the time by 0 (half), a few steps, or never
    delta = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 6, n)).astype(np.int64)
    delta[rng.random(n) < 0.05] = record.KNOWN_NEVER
    cols = {"time": np.asarray(times, np.int64), "code": rng.integers(0, 50, n),
            "value": rng.normal(size=n), "text": np.where(rng.random(n) < 0.1, 0, -1),
            "hadm_id": np.full(n, 7), "stay_id": rng.integers(-1, 3, n),
            "source": rng.integers(0, 9, n), "flags": np.zeros(n), "concept": np.full(n, -1),
            "concept_value": np.full(n, np.nan), "known_delta": delta}
    block = np.arange(12, dtype="<f4").reshape(2, 3, 2)
    return {"format": record.FORMAT, "subject_id": 5, "static": {"gender": "F", "dod": None},
            "admissions": {"hadm_id": [7], "admittime": [0]}, "stays": {},
            "events": record.events_to_bytes(cols), "texts": list(texts),
            "notes": {"event": [], "note_id": []},
            "windows": [{"kind": "stay", "id": 1, "start": 0, "step": 3600, "features": [1, 2, 3],
                         "stats": ["count", "mean"], "shape": [2, 3, 2],
                         "data": block.tobytes()}] if windows else []}


def assert_same(rec: dict, back: dict):
    assert set(back) == set(rec)
    for k in rec:
        if k == "events":
            for c, dt in EVENT_DTYPES.items():
                np.testing.assert_array_equal(back[k][c], np.frombuffer(rec[k][c], dt))
                assert back[k][c].dtype == np.dtype(dt)
        elif k == "windows":
            assert [{**w, "data": w["data"].tobytes()} for w in back[k]] == rec[k]
        else:
            assert back[k] == rec[k], k


# equal times spanning chunk boundaries (chunks of 4 below), a single time, gaps
TIMES = [[], [10], [1, 2, 3, 4], [1, 2, 3, 4, 5], [5, 5, 5, 5, 5, 5, 5, 5, 5],
         [0, 1, 2, 3, 3, 3, 3, 3, 3, 4, 9, 9, 9, 20], list(range(0, 60, 3))]


@pytest.mark.parametrize("times", TIMES, ids=lambda t: f"{len(t)}events")
def test_round_trip_and_partial_reads(times, monkeypatch):
    monkeypatch.setattr(record, "CHUNK_EVENTS", 4)
    rec = make_record(times)
    data = record.pack(rec, CCTX)
    assert record.pack(rec, CCTX) == data  # deterministic
    outer = msgpack.unpackb(data, raw=False)
    assert outer["chunks"]["n"] == [min(4, len(times) - s) for s in range(0, len(times), 4)]
    full = record.unpack(data, DCTX)
    assert_same(rec, full)
    t = full["events"]["time"]
    known = t + full["events"]["known_delta"]
    for cut in [None, *range(min(times, default=0) - 1, max(times, default=0) + 7)]:
        for rule in record.CUT_RULES:
            # the reference: every event the rule keeps at the cut, by a plain mask
            keep = np.ones(len(t), bool) if cut is None else (
                (known if rule == "known" else t) <= cut)
            for last in (None, 0, 1, 3, 4, 5, 9, len(t), len(t) + 1):
                rows = np.flatnonzero(keep)
                if last is not None:
                    rows = rows[max(0, len(rows) - last):]
                got = record.read_events(data, cut, last, DCTX, rule=rule,
                                         columns=[*EVENT_DTYPES, "known_time"])
                for c in EVENT_DTYPES:
                    np.testing.assert_array_equal(got[c], full["events"][c][rows],
                                                  err_msg=f"cut={cut} last={last} {rule} {c}")
                    assert got[c].dtype == full["events"][c].dtype
                    assert not got[c].flags.writeable
                np.testing.assert_array_equal(got["known_time"], known[rows])
                assert got["known_time"].dtype == np.int64


def test_only_needed_chunks_are_inflated(monkeypatch):
    monkeypatch.setattr(record, "CHUNK_EVENTS", 4)
    data = record.pack(make_record(list(range(20))), CCTX)  # chunks of times 0-3, 4-7, ...
    cache = {}
    got = record.read_events(data, cut=9, last=2, chunk_cache=cache, rule="charttime")
    assert got["time"].tolist() == [8, 9] and set(cache) == {2}
    got = record.read_events(data, cut=9, last=3, chunk_cache=cache, rule="charttime")
    assert got["time"].tolist() == [7, 8, 9] and set(cache) == {1, 2}
    cache.clear()
    assert record.read_events(data, cut=-1, chunk_cache=cache)["time"].tolist() == []
    assert cache == {}


def test_known_rule_walks_back_only_as_far_as_needed(monkeypatch):
    """Events 8-11 known late: the last 2 known at 11 are 6 and 7 (chunk 1), and chunks 0 and
    3 stay compressed."""
    monkeypatch.setattr(record, "CHUNK_EVENTS", 4)
    rec = make_record(list(range(16)))
    delta = np.zeros(16, np.int64)
    delta[8:12] = 100
    rec["events"]["known_delta"] = delta.astype("<u4").tobytes()
    data = record.pack(rec, CCTX)
    cache = {}
    got = record.read_events(data, cut=11, last=2, chunk_cache=cache)
    assert got["time"].tolist() == [6, 7] and set(cache) == {1, 2}
    got = record.read_events(data, cut=11, last=2, chunk_cache=cache, rule="charttime")
    assert got["time"].tolist() == [10, 11]
    assert record.read_events(data, cut=111, last=5)["time"].tolist() == [11, 12, 13, 14, 15]
    with pytest.raises(ValueError, match="rule must be one of"):
        record.read_events(data, cut=3, rule="storetime")
    with pytest.raises(ValueError, match="no event column.*known_time"):
        record.read_events(data, columns=["knowntime"])


def test_known_max_bounds_the_chunks_a_cut_searches(monkeypatch):
    """known_max: the latest known_time of a chunk's events with a concept value, nil when
    it has none; read_chunk reads one chunk's columns."""
    monkeypatch.setattr(record, "CHUNK_EVENTS", 4)
    rec = make_record(list(range(12)))
    concept = np.array([-1, 3, 3, -1, -1, -1, -1, -1, 2, 2, 2, 2], "<i2")
    value = np.where(np.arange(12) == 9, np.nan, 1.0).astype("<f4")
    delta = np.array([900, 5, 7, 0, 0, 0, 0, 0, 1, 50, 2, 3], "<u4")
    rec["events"].update(concept=concept.tobytes(), concept_value=value.tobytes(),
                         known_delta=delta.tobytes())
    data = record.pack(rec, CCTX)
    assert msgpack.unpackb(data, raw=False)["chunks"]["known_max"] == [2 + 7, None, 11 + 3]
    got = record.read_chunk(data, 2, ["time", "known_time", "concept"])
    assert got["time"].tolist() == [8, 9, 10, 11]
    assert got["known_time"].tolist() == [9, 59, 12, 14] and got["concept"].tolist() == [2] * 4


def test_other_formats_refused():
    old = CCTX.compress(msgpack.packb({"format": 1, "subject_id": 5}))
    with pytest.raises(ValueError, match="record format 1.*rebuild"):
        record.unpack(old)
    # format 2 (no known_delta): refused with the rebuild hint, never read as format 3
    two = msgpack.packb({"format": 2, "head": CCTX.compress(msgpack.packb({})), "texts": None,
                         "windows": None, "chunks": {"n": [], "t_first": [], "data": []}})
    for read in (record.unpack, record.read_head, record.read_events, record.read_windows):
        with pytest.raises(ValueError, match="record format 2, this reader knows 3: rebuild "
                                             "the version"):
            read(two)
    with pytest.raises(ValueError, match="record format 4, this reader knows 3$"):
        record.read_events(msgpack.packb({"format": 4, "chunks": {}}))
    with pytest.raises(ValueError, match="record format None"):
        record.read_head(msgpack.packb([1, 2]))


def test_the_documented_decoder(tmp_path):
    """docs/FORMAT.md's first snippet, run as written, decodes what unpack decodes."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    rec = make_record([1, 2, 2, 3] * 700)
    path = tmp_path / "1.msgpack.zst"
    path.write_bytes(record.pack(rec, CCTX))
    scope = {"path": path}
    exec(code, scope)
    full = record.unpack(path.read_bytes())
    for c in EVENT_DTYPES:
        np.testing.assert_array_equal(scope["events"][c], full["events"][c])
    assert scope["head"]["subject_id"] == 5 and scope["texts"] == ["a note"]
    assert scope["windows"][0]["features"] == [1, 2, 3]
