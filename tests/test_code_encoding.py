"""Code ids and per-code stats of the partition stage, batch by batch (inline fixtures)."""
import numpy as np
import polars as pl

from trajectory.events.map_rows import CodeBook, map_rows, merge_code_stats
from trajectory.events.tables import TABLES_BY_NAME

CHART = TABLES_BY_NAME["chartevents"]


def _batch(rows):
    schema = {"subject_id": pl.Int64, "hadm_id": pl.Int64, "stay_id": pl.Int64,
              "charttime": pl.String, "itemid": pl.Int64, "value": pl.String,
              "valuenum": pl.String, "valueuom": pl.String}
    df = pl.DataFrame(rows, schema=schema, orient="row")
    return df.with_columns(pl.col("charttime").str.to_datetime(),
                           pl.col("charttime").str.to_datetime().alias("storetime"),
                           pl.col("valuenum").cast(pl.Float64))


def _decode(ev, book):
    return [book.codes[i] for i in ev["code"].to_list()]


def test_codes_stable_across_batches_nulls_and_whitespace():
    t = "2150-01-01 00:00:00"
    b1 = _batch([(1, 10, 100, t, 220045, "80", "80", "bpm"),
                 (1, 10, 100, t, 220210, "20", "20", None),
                 (2, 11, 101, t, 220045, "90", "90", "bpm")])
    b2 = _batch([(3, 12, 102, t, 220210, "18", "18", None),  # null unit: same combination
                 (3, 12, 102, t, 220045, "70", "70", " bpm"),  # new combination, same code
                 (4, 13, 103, t, 223761, "98", "98", "°F")])
    book = CodeBook()
    ev1, st1, _ = map_rows(CHART, b1, book)
    ev2, st2, _ = map_rows(CHART, b2, book)
    assert _decode(ev1, book) == ["CHART//220045//bpm", "CHART//220210//UNK",
                                  "CHART//220045//bpm"]
    assert _decode(ev2, book) == ["CHART//220210//UNK", "CHART//220045//bpm",
                                  "CHART//223761//°F"]
    # one id per code string, in order of first appearance
    assert book.codes == ["CHART//220045//bpm", "CHART//220210//UNK", "CHART//223761//°F"]
    # stats: one row per combination present, first appearance order, counts per batch
    assert st1["code"].to_list() == ["CHART//220045//bpm", "CHART//220210//UNK"]
    assert st1["count"].to_list() == [2, 1]
    assert st2["code"].to_list() == ["CHART//220210//UNK", "CHART//220045//bpm",
                                     "CHART//223761//°F"]
    assert st2["unit"].to_list() == [None, " bpm", "°F"]
    merged = merge_code_stats([st1, st2])
    assert dict(zip(merged["code"], merged["count"])) == {
        "CHART//220045//bpm": 3, "CHART//220210//UNK": 2, "CHART//223761//°F": 1}
    assert dict(zip(merged["code"], merged["unit"]))["CHART//220045//bpm"] == "bpm"


def test_code_ids_match_a_per_row_reference():
    rng = np.random.default_rng(7)
    t = "2150-01-01 00:00:00"
    book, seen = CodeBook(), []
    for batch in range(4):
        n = int(rng.integers(0, 40))  # an empty batch included for some seeds
        items = rng.choice([220045, 220210, 223761, 220179], n)
        units = rng.choice(["bpm", "mmHg", None, "°F"], n)
        df = _batch([(int(i % 5), 1, 1, t, int(it), "1", "1", u)
                     for i, (it, u) in enumerate(zip(items, units))])
        ev, st, _ = map_rows(CHART, df, book)
        expect = [f"CHART//{it}//{u if u is not None else 'UNK'}" for it, u in zip(items, units)]
        assert _decode(ev, book) == expect
        assert int(st["count"].sum()) == n
        seen += expect
    assert book.codes == list(dict.fromkeys(seen))



def test_code_ids_stay_exact_when_two_combinations_share_a_hash(monkeypatch):
    """The book finds combinations by row hash; a collision must not merge two codes."""
    t = "2150-01-01 00:00:00"
    rows = [(1, 1, 1, t, 220045, "1", "1", "bpm"), (1, 1, 1, t, 220210, "1", "1", None),
            (2, 1, 1, t, 220045, "1", "1", "bpm"), (2, 1, 1, t, 223761, "1", "1", "°F")]
    # every row hashes alike: the check against the combination found must catch it
    monkeypatch.setattr(pl.DataFrame, "hash_rows",
                        lambda self, *a, **k: pl.Series([7] * self.height, dtype=pl.UInt64))
    book = CodeBook()
    map_rows(CHART, _batch(rows[:1]), book)
    assert "chart" in book.hashes  # one combination so far: the hashed lookup is in use
    ev, st, _ = map_rows(CHART, _batch(rows), book)
    assert _decode(ev, book) == ["CHART//220045//bpm", "CHART//220210//UNK",
                                 "CHART//220045//bpm", "CHART//223761//°F"]
    assert st["count"].to_list() == [2, 1, 1]
    assert "chart" not in book.hashes  # that event went on with exact joins
    ev, _, _ = map_rows(CHART, _batch(rows[::-1]), book)
    assert _decode(ev, book) == ["CHART//223761//°F", "CHART//220045//bpm",
                                 "CHART//220210//UNK", "CHART//220045//bpm"]

def test_encode_strings_ids_by_first_appearance_from_polars_or_arrow():
    import pyarrow as pa

    from trajectory.assembly.assemble import encode_strings, merge_string_ids
    from trajectory.record import NONE_ID

    chunked = pa.chunked_array([["b", None, "a"], ["b", "", None, "c"]], pa.large_string())
    for col in (chunked, pl.Series(chunked.to_pylist(), dtype=pl.String)):
        ids, strings = encode_strings(col)
        assert ids.dtype == np.int32
        assert ids.tolist() == [0, NONE_ID, 1, 0, 2, NONE_ID, 3]
        assert strings.to_list() == ["b", "a", "", "c"]  # "" is a value, not a null
    ids, strings = encode_strings(pa.chunked_array([[None, None]], pa.large_string()))
    assert ids.tolist() == [NONE_ID, NONE_ID] and strings.len() == 0
    # two tables' ids into one list: a string both share is one entry
    out, uniq = merge_string_ids([encode_strings(pl.Series(["x", None, "y"])),
                                  encode_strings(pl.Series(["y", "z"]))])
    assert uniq.to_list() == ["x", "y", "z"]
    assert [o.tolist() for o in out] == [[0, NONE_ID, 1], [1, 2]]
