"""Random access into .csv.gz (trajectory.raw.gzindex) and the record-boundary cut finders
(trajectory.raw.csv_ranges), on small inline fixtures checked against plain slicing and slow
references."""
import gzip
import io
import os
import random
import struct
import sys
import zlib

import pytest

from trajectory.raw import csv_ranges, gzindex
from trajectory.raw.csv_ranges import FileRange, line_cuts, record_cuts, targets
from trajectory.raw.gzindex import (GzRange, IndexDamaged, build_index, point_before,
                                    read_points, scan_points)

SPACING = 64 << 10  # small seek-point spacing, so a few MB of text gets many points


def csv_lines(rng: random.Random, n_bytes: int) -> bytes:
    """CSV-like lines (ids, times, numbers, words): compressible like MIMIC's tables."""
    words = ["mg", "mL", "Heart Rate", "NEG", "Arterial Blood Pressure", "Normal", "___"]
    out, size = [], 0
    while size < n_bytes:
        line = (f"{rng.randrange(10_000_000, 20_000_000)},{rng.randrange(20_000_000, 30_000_000)},"
                f"{rng.randrange(220_000, 230_000)},2180-{rng.randrange(1, 13):02d}-"
                f"{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:00,"
                f"{rng.random() * 200:.2f},{rng.choice(words)}\n").encode()
        out.append(line)
        size += len(line)
    return b"".join(out)


def gzip_with_flushes(text: bytes, rng: random.Random) -> bytes:
    """One gzip member from zlib's deflate with Z_SYNC_FLUSH / Z_FULL_FLUSH every few hundred
    KB (each leaves an empty stored block, a byte-aligned boundary) and a stretch of random
    bytes in the middle (incompressible: deflate writes it as stored blocks)."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    out, pos, k = [], 0, 0
    while pos < len(text):
        step = rng.randrange(150_000, 400_000)
        out.append(z.compress(text[pos:pos + step]))
        out.append(z.flush(zlib.Z_SYNC_FLUSH if k % 2 else zlib.Z_FULL_FLUSH))
        pos, k = pos + step, k + 1
    out.append(z.flush())
    return b"".join(out)


@pytest.fixture(scope="module")
def gz_files(tmp_path_factory):
    """(path, text) for: gzip.compress of CSV lines; deflate with flushes over CSV lines with
    random bytes in the middle; level 0 (stored blocks only)."""
    rng = random.Random(20240611)
    root = tmp_path_factory.mktemp("gz")
    plain = csv_lines(rng, 3_000_000)
    mixed = csv_lines(rng, 1_200_000) + rng.randbytes(300_000) + csv_lines(rng, 1_200_000)
    stored = csv_lines(rng, 600_000)
    files = []
    for name, text, data in (
            ("plain", plain, gzip.compress(plain, compresslevel=6, mtime=0)),
            ("flushed", mixed, gzip_with_flushes(mixed, rng)),
            ("stored", stored, gzip.compress(stored, compresslevel=0, mtime=0))):
        path = root / f"{name}.csv.gz"
        path.write_bytes(data)
        assert gzip.decompress(data) == text
        files.append((path, text))
    return files


def read_range(path, points, a, b, how: str) -> bytes:
    with GzRange(path, points, a, b, **({"chunk": 4099} if how == "small" else {})) as f:
        if how == "all":
            return f.read()
        parts = []
        while True:  # odd read sizes: output is split across calls and kept as `pending`
            got = f.read(7777)
            if not got:
                return b"".join(parts)
            parts.append(got)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["gzip", "flushed", "stored"])
def test_gzrange_returns_exact_slices(gz_files, which, tmp_path, monkeypatch):
    path, text = gz_files[which]
    size, points = scan_points(path, spacing=SPACING)
    assert size == len(text)
    assert len(points) > 2, [p.out for p in points]
    assert points[0].out == 0 and points[0].cmp == 0 and points[0].window == b""
    for prev, p in zip(points, points[1:]):
        assert p.out // SPACING > prev.out // SPACING and p.cmp > prev.cmp
        assert p.window == text[p.out - gzindex.WINDOW:p.out]  # the 32 KiB before the point
    # The rule (gzindex.next_target): for each multiple of SPACING, the first byte-aligned
    # block boundary at or after it; spacing 1 lists every aligned boundary past the window.
    every = [p.out for p in scan_points(path, spacing=1)[1][1:]]
    want = sorted({min(b for b in every if b >= max(k * SPACING, gzindex.WINDOW))
                   for k in range(1, len(text) // SPACING + 1)
                   if any(b >= k * SPACING for b in every)})
    assert [p.out for p in points[1:]] == want

    # build_index + read_points round-trip the same points (at this spacing).
    real = gzindex.scan_points
    monkeypatch.setattr(gzindex, "scan_points",
                        lambda p, spacing=None: real(p, spacing=SPACING))
    index = tmp_path / "sub" / "x.gzidx"
    assert build_index(path, index) == len(text)
    assert read_points(index) == (size, points)
    points = read_points(index)[1]

    rng = random.Random(which)
    edges = {0, 1, len(text) - 1, len(text)}
    for p in points:
        edges |= {p.out - 1, p.out, p.out + 1}
    edges = sorted(e for e in edges if 0 <= e <= len(text))
    pairs = set()
    for i, a in enumerate(edges):
        pairs |= {(a, a), (a, min(a + 1, len(text))), (a, len(text)),
                  (a, min(a + rng.randrange(1, 200_000), len(text)))}
        pairs |= {(a, b) for b in edges[i:i + 4]}  # up to and across the next seek points
    pairs |= {tuple(sorted(rng.sample(range(len(text) + 1), 2))) for _ in range(20)}
    for k, (a, b) in enumerate(sorted(pairs)):
        how = ("all", "chunks", "small")[k % 3]
        got = read_range(path, points, a, b, how)
        assert got == text[a:b], (path.name, a, b, how, len(got))


def test_scan_points_default_spacing_and_small_file(tmp_path):
    path = tmp_path / "small.csv.gz"
    text = b"a,b\n" + b"1,2\n" * 1000
    path.write_bytes(gzip.compress(text, mtime=0))
    size, points = scan_points(path)
    assert size == len(text) and [(p.cmp, p.out) for p in points] == [(0, 0)]
    assert read_range(path, points, 4, len(text), "all") == text[4:]


def test_multi_member_gzip_is_refused(tmp_path):
    rng = random.Random(5)
    a, b = csv_lines(rng, 200_000), csv_lines(rng, 200_000)
    path = tmp_path / "two.csv.gz"
    path.write_bytes(gzip.compress(a, mtime=0) + gzip.compress(b, mtime=0))
    assert gzip.decompress(path.read_bytes()) == a + b  # a valid gzip file, just two members
    with pytest.raises(ValueError, match="member") as e:
        build_index(path, tmp_path / "two.gzidx")
    assert str(path) in str(e.value)
    assert not (tmp_path / "two.gzidx").exists()
    # Read by range from the first member's start, the second member is not silently dropped.
    with pytest.raises(ValueError, match="members"):
        with GzRange(path, [gzindex.Point(0, 0, b"")], 0, len(a) + len(b)) as f:
            f.read()


# ---- damage: every region of the index checked -----------------------------------------------

@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """(index bytes, points, uncompressed size) of a file with several seek points."""
    rng = random.Random(3)
    root = tmp_path_factory.mktemp("idx")
    text = b"".join(b"%d,%d,%d\n" % (i, rng.getrandbits(40), rng.getrandbits(20))
                    for i in range(120_000))
    path, index = root / "t.csv.gz", root / "t.gzidx"
    path.write_bytes(gzip.compress(text, mtime=0))
    size = build_index(path, index, spacing=1 << 18)
    points = read_points(index)[1]
    assert len(points) >= 4
    return index.read_bytes(), points, size


def layout(data: bytes) -> dict[str, tuple[int, int]]:
    """The regions of a TRJGZIX2 index (build_index's docstring), as [start, end) byte ranges;
    `window k` is seek point k's window."""
    n = int.from_bytes(data[16:24], "little")
    tables = 24 + 24 * n + 8
    regions = {"magic": (0, 8), "size": (8, 16), "count": (16, 24),
               "offsets": (24, 24 + 16 * n), "sums": (24 + 16 * n, 24 + 24 * n),
               "table sum": (24 + 24 * n, tables)}
    for k in range(1, n):
        regions[f"window {k}"] = (tables + (k - 1) * gzindex.WINDOW, tables + k * gzindex.WINDOW)
    assert tables + (n - 1) * gzindex.WINDOW == len(data)
    return regions


def flipped(data: bytes, at: int) -> bytes:
    """One byte changed as issue 23 found it: a digit into another digit (inflating from such
    a window gives wrong text that still parses), any other byte with one bit flipped."""
    c = data[at]
    new = ord("0") + (c - ord("0") + 1) % 10 if chr(c).isdigit() else c ^ 0x01
    return data[:at] + bytes([new]) + data[at + 1:]


def offsets_served(points, size: int, k: int) -> list[int]:
    """Offsets whose point_before is seek point k: its start, its end - 1, one in between."""
    end = points[k + 1].out if k + 1 < len(points) else size + 1
    return [points[k].out, (points[k].out + end) // 2, end - 1]


@pytest.mark.parametrize("region", ["magic", "size", "count", "offsets", "sums", "table sum"])
def test_damaged_tables_are_refused_everywhere(indexed, tmp_path, region):
    data, points, size = indexed
    a, b = layout(data)[region]
    index = tmp_path / "x.gzidx"
    for at in (a, (a + b) // 2, b - 1):
        index.write_bytes(flipped(data, at))
        for read in (gzindex.verify_table, read_points, lambda p: point_before(p, 0),
                     lambda p: point_before(p, size - 1)):
            with pytest.raises(IndexDamaged) as e:
                read(index)
            assert e.value.path == index and str(index) in str(e.value), (region, at)
            assert "not the input" in str(e.value)


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_damaged_window_is_refused_only_where_it_is_used(indexed, tmp_path, which):
    """A changed byte in window k fails point_before for the offsets seek point k serves, and
    only those: a unit reads and checks its own window, never the others (full MIMIC-IV's
    chartevents has 240 MB of them)."""
    data, points, size = indexed
    n = len(points)
    k = {"first": 1, "middle": n // 2, "last": n - 1}[which]
    a, b = layout(data)[f"window {k}"]
    index = tmp_path / "x.gzidx"
    for at in (a, (a + b) // 2, b - 1):
        index.write_bytes(flipped(data, at))
        assert gzindex.verify_table(index) == size  # the tables are intact
        with pytest.raises(IndexDamaged, match=f"window of seek point {k} "):
            read_points(index)
        for offset in offsets_served(points, size, k):
            with pytest.raises(IndexDamaged, match=f"window of seek point {k} "):
                point_before(index, offset)
        for j in set(range(n)) - {k}:
            for offset in offsets_served(points, size, j):
                assert point_before(index, offset) == (size, points[j]), (k, j, offset)


def test_every_other_window_damaged_still_serves_the_intact_one(indexed, tmp_path):
    """point_before reads only the window it returns: with all windows but one scrambled, the
    offsets of the intact one are still served."""
    data, points, size = indexed
    regions = layout(data)
    k = len(points) // 2
    damaged = bytearray(data)
    for j in range(1, len(points)):
        if j != k:
            a, b = regions[f"window {j}"]
            damaged[a:b] = bytes(b - a)
    index = tmp_path / "x.gzidx"
    index.write_bytes(bytes(damaged))
    for offset in offsets_served(points, size, k):
        assert point_before(index, offset) == (size, points[k])


@pytest.mark.parametrize("how", ["empty", "in the header", "in the tables", "one byte short",
                                 "one byte more", "a window more"])
def test_truncated_or_extended_index_is_refused(indexed, tmp_path, how):
    data, _, size = indexed
    got = {"empty": b"", "in the header": data[:10], "in the tables": data[:100],
           "one byte short": data[:-1], "one byte more": data + b"\0",
           "a window more": data + data[-gzindex.WINDOW:]}[how]
    index = tmp_path / "x.gzidx"
    index.write_bytes(got)
    for read in (gzindex.verify_table, read_points, lambda p: point_before(p, 0)):
        with pytest.raises(IndexDamaged, match="shorter than its|bytes, expected"):
            read(index)


def test_old_format_and_foreign_files_are_refused(indexed, tmp_path):
    """TRJGZIX1 (no checksums: header, offsets, windows) counts as damaged, so it is rebuilt."""
    data, points, size = indexed
    old = b"".join([struct.pack("<8sQQ", b"TRJGZIX1", size, len(points)),
                    *(struct.pack("<QQ", p.cmp, p.out) for p in points),
                    *(p.window for p in points[1:])])
    index = tmp_path / "x.gzidx"
    for content, match in ((old, "older format TRJGZIX1"), (b"XXXXXXXX" + data[8:], "magic"),
                           (b"\x1f\x8b" + data[2:], "magic")):
        index.write_bytes(content)
        for read in (gzindex.verify_table, read_points, lambda p: point_before(p, 0)):
            with pytest.raises(IndexDamaged, match=match):
                read(index)


def test_missing_index_is_not_damage_unreadable_is(tmp_path):
    with pytest.raises(FileNotFoundError):
        point_before(tmp_path / "gone.gzidx", 0)
    (tmp_path / "dir.gzidx").mkdir()  # root reads any file: a folder is what it cannot read
    with pytest.raises(IndexDamaged, match="unreadable"):
        point_before(tmp_path / "dir.gzidx", 0)


def test_build_index_writes_a_hidden_tmp_with_host_and_pid(indexed, tmp_path, monkeypatch):
    """The temporary name `.<name>.tmp-<host>-<pid>` (what `cache prune` may look for after a
    killed pass); a write that fails leaves none behind."""
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 100, mtime=0))
    index = tmp_path / "sub" / "t.gzidx"
    seen = []
    real = os.replace
    monkeypatch.setattr(gzindex.os, "replace", lambda a, b: (seen.append(a), real(a, b)))
    build_index(path, index)
    assert [p.name for p in seen] == [f".t.gzidx.tmp-{os.uname().nodename}-{os.getpid()}"]
    assert sorted(p.name for p in index.parent.iterdir()) == ["t.gzidx"]

    def fail(a, b):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(gzindex.os, "replace", fail)
    index.unlink()
    with pytest.raises(OSError, match="No space"):
        build_index(path, index)
    assert list(index.parent.iterdir()) == []


# ---- cut points -------------------------------------------------------------------------------

def random_field(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:  # quoted, with newlines, commas and doubled quotes
        body = "".join(rng.choice(['a', 'b', ' ', ',', '\n', '""', 'x\n\n', '"",""', '\r\n'])
                       for _ in range(rng.randrange(0, 40)))
        return f'"{body}"'
    if kind < 0.45:
        return ""
    if kind < 0.5:
        return '""'  # an empty quoted string
    return str(rng.randrange(10 ** rng.randrange(1, 9)))


def random_csv(rng: random.Random, n_records: int) -> bytes:
    header = "note_id,subject_id,text,extra\n"
    recs = [",".join(random_field(rng) for _ in range(4)) + "\n" for _ in range(n_records)]
    return (header + "".join(recs)).encode()


def record_starts(text: bytes) -> list[int]:
    """Slow reference: every record start after the header, by walking the characters and
    tracking whether we are inside a quoted field; len(text) closes the list."""
    starts, inside = [], False
    for i, ch in enumerate(text):
        if ch == ord('"'):
            inside = not inside
        elif ch == ord("\n") and not inside:
            starts.append(i + 1)
    assert not inside
    return starts  # starts[0] is the header's end; starts[-1] == len(text)


def first_at_or_after(starts: list[int], t: int) -> int:
    return next(s for s in starts if s >= t)


@pytest.mark.parametrize("chunk", [61, 997, csv_ranges.SCAN_CHUNK])
def test_record_cuts_match_slow_reference(chunk, monkeypatch):
    """Each cut is the first record start at or after its target (targets that fall in
    distinct records: see test_record_cuts_two_targets_in_one_record), whatever the read
    size: quote parity must carry across chunk ends."""
    monkeypatch.setattr(csv_ranges, "SCAN_CHUNK", chunk)
    checked = 0
    for seed in range(12):
        rng = random.Random(seed)
        text = random_csv(rng, rng.randrange(5, 400))
        starts = record_starts(text)
        start, size = starts[0], len(text)
        assert starts[-1] == size
        # random targets, every record start except the first, a byte before each, the end
        cands = {rng.randrange(start + 1, size + 1) for _ in range(60)}
        cands |= set(starts[1:]) | {s - 1 for s in starts[2:]} | {size - 1, size}
        wanted, expect = [], []
        for t in sorted(cands):
            e = first_at_or_after(starts, t)
            if not expect or e > expect[-1]:
                wanted.append(t)
                expect.append(e)
        got = record_cuts(io.BytesIO(text[start:]), start, size, wanted)
        assert got == expect, seed
        # a subset (every third target) and the plan's own equal steps
        sub = wanted[::3]
        assert record_cuts(io.BytesIO(text[start:]), start, size, sub) == expect[::3], seed
        for n in (2, 3, 5):
            pts = targets(start, size, n)
            ref = [first_at_or_after(starts, t) for t in pts]
            if all(a < b for a, b in zip(ref, ref[1:])):
                assert record_cuts(io.BytesIO(text[start:]), start, size, pts) == ref, seed
        checked += len(wanted)
    assert checked > 500


def test_record_cuts_differ_from_line_cuts_on_quoted_newlines():
    text = b'id,text\n1,"a\nb"\n2,"c\n""d""\n"\n3,x\n'
    starts = record_starts(text)
    assert starts == [8, 16, 29, 33]
    start, size = starts[0], len(text)
    pts = [start + 3, starts[1] + 2]  # both inside quoted newlines' records
    got = record_cuts(io.BytesIO(text[start:]), start, size, pts)
    assert got == [starts[1], starts[2]]
    # a newline-only scan would have cut inside the quoted text
    naive = line_cuts(lambda a, b: io.BytesIO(text[a:b]), size, pts)
    assert naive != got


@pytest.mark.parametrize("pts, want", [([3, 4], [10, 10]), ([2], [2])],
                         ids=["same-record", "first-record"])
def test_record_cuts_two_targets_in_one_record(pts, want):
    text = b'h\na,"x\ny"\nb,c\nd,e\n'
    start, size = 2, len(text)
    assert record_starts(text) == [2, 10, 14, 18]
    assert record_cuts(io.BytesIO(text[start:]), start, size, pts) == want


def plain_lines(rng: random.Random, n: int) -> bytes:
    lines = ["subject_id,value\n"]
    for _ in range(n):
        lines.append(",".join("z" * rng.choice([0, 1, 5, 30, 300]) for _ in range(2)) + "\n")
    return "".join(lines).encode()


def test_line_cuts_match_reference_plain_and_gzip(tmp_path):
    for seed in range(6):
        rng = random.Random(100 + seed)
        text = plain_lines(rng, rng.randrange(1, 3000))
        starts = [0] + [i + 1 for i, c in enumerate(text) if c == ord("\n")]
        start, size = starts[1], len(text)
        path = tmp_path / f"t{seed}.csv"
        path.write_bytes(text)
        gz = tmp_path / f"t{seed}.csv.gz"
        gz.write_bytes(gzip.compress(text, mtime=0))
        points = scan_points(gz, spacing=1)[1]
        some = rng.sample(starts[1:], min(len(starts) - 1, 40))
        pts = sorted({rng.randrange(start, size + 1) for _ in range(40)}
                     | set(some) | {s - 1 for s in some} | {start, size - 1, size})
        pts = [t for t in pts if start <= t <= size]
        expect = [first_at_or_after(starts, t) for t in pts]
        got_file = line_cuts(lambda a, b: FileRange(path, a, b), size, pts)
        got_gz = line_cuts(lambda a, b: GzRange(gz, points, a, b), size, pts)
        assert got_file == expect, seed
        assert got_gz == expect, seed
        for n in (2, 4, 7):
            pts = targets(start, size, n)
            assert len(pts) == n - 1 and all(start <= t < size for t in pts)
            expect = [first_at_or_after(starts, t) for t in pts]
            assert line_cuts(lambda a, b: FileRange(path, a, b), size, pts) == expect


def test_system_zlib_finds_the_same_points(tmp_path, monkeypatch):
    """Without zlib-ng the pass falls back to the system zlib, with the same seek points."""
    from trajectory.raw import gzindex

    rng = random.Random(7)
    text = b"".join(b"%d,%d,%s\n" % (i, rng.randint(0, 10**6), b"x" * rng.randint(0, 40))
                    for i in range(60_000))
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(text))
    fast = gzindex.scan_points(path, spacing=1 << 18)
    monkeypatch.setitem(sys.modules, "zlib_ng", None)  # import fails -> system zlib
    slow = gzindex.scan_points(path, spacing=1 << 18)
    assert fast == slow and fast[0] == len(text) and len(fast[1]) > 2


def test_point_before_reads_one_window(tmp_path):
    """A unit loads only the seek point it starts from; it is the one read_points gives."""
    rng = random.Random(3)
    text = b"".join(b"%d,%d,%d\n" % (i, rng.getrandbits(40), rng.getrandbits(20))
                    for i in range(120_000))
    path, index = tmp_path / "t.csv.gz", tmp_path / "t.idx"
    path.write_bytes(gzip.compress(text))
    size = build_index(path, index, spacing=1 << 18)
    _, points = read_points(index)
    assert len(points) > 3
    for offset in [0, 1, size - 1, size] + [max(0, p.out + d) for p in points for d in (-1, 0, 1)]:
        want = max((p for p in points if p.out <= offset), key=lambda p: p.out)
        assert point_before(index, offset) == (size, want), offset
    with GzRange(path, [point_before(index, 500_000)[1]], 500_000, 600_000) as f:
        assert f.read() == text[500_000:600_000]
