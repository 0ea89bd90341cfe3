"""The parallel seek-point builder (trajectory.raw.gzindex_parallel) against the sequential one and
against gzip.decompress: the same points, the same index bytes, the same text by range; and a
damaged or multi-member input refused with the sequential pass's errors."""
import gzip
import random
import zlib

import pytest

from trajectory.raw import gzindex
from trajectory.raw import gzindex_parallel as par
from trajectory.raw.gzindex import GzRange, build_index, read_points, scan_points

from .test_gzindex import csv_lines, gzip_with_flushes

pytestmark = pytest.mark.skipif(not par.available(), reason="rapidgzip or zlib-ng missing")

SPACING = 64 << 10
CHUNK = 32 << 10  # rapidgzip chunks of 32 KiB: dozens of segments in a few MB


def zlib_gzip(text: bytes, level: int) -> bytes:
    """A gzip member from zlib at `level` (gzip.compress uses zlib too; spelled out so the
    fixture does not depend on Python's choice of mtime or header)."""
    z = zlib.compressobj(level, zlib.DEFLATED, 31)
    return z.compress(text) + z.flush()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = random.Random(20261204)
    root = tmp_path_factory.mktemp("gzpar")
    text = csv_lines(rng, 2_500_000)
    mixed = csv_lines(rng, 800_000) + rng.randbytes(200_000) + csv_lines(rng, 800_000)
    cases = {
        "level1": zlib_gzip(text, 1),
        "level6": zlib_gzip(text, 6),
        "level9": zlib_gzip(text, 9),
        "stored": gzip.compress(text[:900_000], compresslevel=0, mtime=0),
        "flushed": gzip_with_flushes(mixed, rng),
        "under_one_chunk": gzip.compress(text[:60_000], mtime=0),  # < CHUNK compressed
        "tiny": gzip.compress(b"a,b\n1,2\n", mtime=0),
        "empty": gzip.compress(b"", mtime=0),
    }
    out = {}
    for name, data in cases.items():
        path = root / f"{name}.csv.gz"
        path.write_bytes(data)
        out[name] = (path, gzip.decompress(data))
    return out


CASES = ["level1", "level6", "level9", "stored", "flushed", "under_one_chunk", "tiny", "empty"]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("name", CASES)
def test_parallel_points_equal_sequential(inputs, name, threads):
    path, text = inputs[name]
    timings = {}
    if not text:  # no deflate block to start a segment at: build_index's sequential pass
        with pytest.raises(par.Fallback, match="does not start"):
            par.scan_points_parallel(path, threads, SPACING, chunk=CHUNK)
        return
    size, points = par.scan_points_parallel(path, threads, SPACING, chunk=CHUNK,
                                            timings=timings, per_thread=0)
    assert size == len(text)
    assert (size, points) == scan_points(path, SPACING)
    for p in points:
        assert p.window == text[max(0, p.out - gzindex.WINDOW):p.out]
    if name in ("level1", "level6", "level9", "stored", "flushed"):  # really cut in segments
        assert len(timings["segment_seconds"]) > 10
    if name in ("stored", "flushed"):  # zlib's own deflate has few byte-aligned boundaries
        assert len(points) > 5


@pytest.mark.parametrize("name", CASES)
def test_index_bytes_identical_and_ranges_exact(inputs, name, tmp_path):
    path, text = inputs[name]
    seq, fast = tmp_path / "seq.gzidx", tmp_path / "par.gzidx"
    assert build_index(path, seq, spacing=SPACING) == len(text)
    assert build_index(path, fast, spacing=SPACING, threads=3) == len(text)
    assert fast.read_bytes() == seq.read_bytes()
    size, points = read_points(fast)
    rng = random.Random(len(text))
    spans = [(0, len(text))] + [tuple(sorted(rng.randrange(len(text) + 1) for _ in range(2)))
                                for _ in range(25)]
    for a, b in spans:
        with GzRange(path, points, a, b) as f:
            assert f.read() == text[a:b], (name, a, b)


def test_default_chunk_and_spacing_on_a_bigger_file(tmp_path):
    """rapidgzip's own chunk (4 MiB) and SPACING: a level-6 file of ~40 MB of text."""
    rng = random.Random(7)
    text = csv_lines(rng, 40_000_000)
    path = tmp_path / "big.csv.gz"
    path.write_bytes(zlib_gzip(text, 6))
    timings = {}
    got = par.scan_points_parallel(path, 2, gzindex.SPACING, timings=timings)
    assert got == scan_points(path)
    assert len(timings["segment_seconds"]) >= 2 and len(got[1]) > 5


def _broken(inputs, tmp_path, how):
    path, text = inputs["level6"]
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:len(data) * 2 // 3]
    elif how == "corrupt":
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0x5A
    elif how == "multi_member":
        data += gzip.compress(b"x,y\n3,4\n", mtime=0)
    elif how == "bad_crc":
        data[-8] ^= 1
    bad = tmp_path / f"{how}.csv.gz"
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("how,says", [("truncated", "truncated gzip stream"),
                                      ("corrupt", "corrupt gzip data"),
                                      ("multi_member", "data after the end of the first gzip"),
                                      ("bad_crc", "corrupt gzip data")])
def test_damaged_input_gives_the_sequential_error_naming_the_file(inputs, tmp_path, how, says):
    bad = _broken(inputs, tmp_path, how)
    with pytest.raises(par.Fallback):
        par.scan_points_parallel(bad, 3, SPACING, chunk=CHUNK, per_thread=0)
    index = tmp_path / "bad.gzidx"
    with pytest.raises(ValueError, match=says) as e:
        build_index(bad, index, spacing=SPACING, threads=3)
    assert str(bad) in str(e.value)
    assert not index.exists() and not list(tmp_path.glob(".bad.gzidx*"))


def test_missing_rapidgzip_falls_back_to_the_sequential_pass(inputs, tmp_path, monkeypatch):
    path, text = inputs["level6"]
    monkeypatch.setattr(par, "available", lambda: False)
    index = tmp_path / "x.gzidx"
    assert build_index(path, index, spacing=SPACING, threads=4) == len(text)
    assert read_points(index) == scan_points(path, SPACING)


def test_index_threads_setting_and_auto_share():
    """GZINDEX_THREADS: a given count is used as is; auto gives each scanned .csv.gz its share
    of MAX_CPUS by compressed size, capped by the cores, and one pass below PARALLEL_FROM
    threads or for a small file; a negative count is refused at load."""
    import types

    import config
    from jobs.scan import PARALLEL_FROM, index_threads

    plan = types.SimpleNamespace(
        tables={"big": {"bytes": 3 << 30, "path": "/d/icu/big.csv.gz"},
                "mid": {"bytes": 1 << 30, "path": "/d/hosp/mid.csv.gz"},
                "small": {"bytes": 1 << 20, "path": "/d/hosp/small.csv.gz"}},
        scan_tables=lambda: ["big", "mid", "small"])
    cfg = config.load({"MAX_CPUS": 64}, environ={})
    assert index_threads(cfg, plan, "big", cores=64) == 48
    assert index_threads(cfg, plan, "mid", cores=64) == 16
    assert index_threads(cfg, plan, "big", cores=1) == 1  # one granted CPU: one pass
    assert index_threads(cfg, plan, "small", cores=64) == 1
    assert index_threads(config.load({"MAX_CPUS": 8}, environ={}), plan, "big", cores=8) == 1
    assert PARALLEL_FROM > 2
    assert index_threads(config.load({"GZINDEX_THREADS": 3}, environ={}), plan, "small") == 3
    with pytest.raises(ValueError, match="GZINDEX_THREADS"):
        config.load({"GZINDEX_THREADS": -1}, environ={})
