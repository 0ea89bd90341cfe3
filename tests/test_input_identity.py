"""An input's identity is a hash of its whole content (trajectory.raw.read.fingerprint): any
same-size in-place edit, plain or gzip, of any size, is a new fingerprint and a new stage-1
cache key for that table alone. The hash is remembered in INDEX_DIR/_hashes by the file's
stat (path, size, mtime, ctime, inode), so a later build reads no input to know it; a damaged
memo is a miss and is rewritten."""
from __future__ import annotations

import gzip
import json
import os
import random
import time
from pathlib import Path

import pytest

from jobs import cache
from trajectory import synth
from trajectory.events.plan import hash_memo_dir, input_differences, make_plan
from trajectory.raw import read

from .conftest import make_cfg

MIB = 1 << 20
SETTLE = 0.05  # RACY_SECONDS in these tests: a memo is written once a file is this old


@pytest.fixture(autouse=True)
def short_racy_window(monkeypatch):
    # The default (2 s) would keep every file these tests just wrote from being remembered.
    monkeypatch.setattr(read, "RACY_SECONDS", SETTLE)


def settle() -> None:
    """Wait until files written so far are old enough to be remembered."""
    time.sleep(2 * SETTLE)


def digits_csv(n_bytes: int, seed: int) -> bytes:
    """CSV text of random numbers: compresses about 2x, so gzip sizes are easy to aim at."""
    rng = random.Random(seed)
    lines = [b"subject_id,itemid,value"]
    size = 0
    while size < n_bytes:
        line = b"%d,%d,%.3f" % (rng.randrange(10**7, 10**8), rng.randrange(220000, 230000),
                                rng.random() * 1000)
        lines.append(line)
        size += len(line) + 1
    return b"\n".join(lines) + b"\n"


def gz(text: bytes) -> bytes:
    return gzip.compress(text, compresslevel=1, mtime=0)


def same_size_gzip_edit(text: bytes, at: float) -> bytes:
    """`text` with one digit changed at or after fraction `at` of it, such that its gzip is
    exactly as long as the original's (a valid gzip file, same size, other bytes)."""
    size = len(gz(text))
    for p in range(int(len(text) * at), len(text)):
        if not text[p:p + 1].isdigit():
            continue
        edited = text[:p] + str((int(text[p:p + 1]) + 1) % 10).encode() + text[p + 1:]
        if len(gz(edited)) == size:
            return edited
    raise AssertionError("no same-size edit found")  # the test's own data, not user input


def write_in_place(path: Path, data: bytes) -> None:
    """Overwrite the file's bytes without a new inode, as an editor saving in place does."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def restore_mtime(path: Path, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def first_difference(a: bytes, b: bytes) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


# ---- same-size in-place edits ------------------------------------------------------------


def test_plain_csv_edited_in_the_middle(tmp_path):
    path, memo = tmp_path / "labevents.csv", tmp_path / "memo"
    text = digits_csv(3_000_000, seed=1)  # over 2 MiB: the old hash read its ends only
    path.write_bytes(text)
    settle()
    before = read.fingerprint(path, memo)
    assert read.memo_path(memo, path).exists()
    middle = len(text) // 2
    edited = text[:middle] + (b"1" if text[middle:middle + 1] != b"1" else b"2") + \
        text[middle + 1:]
    write_in_place(path, edited)
    after = read.fingerprint(path, memo)
    assert after["bytes"] == before["bytes"]
    assert after["xxh3_128"] != before["xxh3_128"]


def test_gzip_of_1_to_2_mib_edited_past_its_first_mib(tmp_path):
    """The case the first-and-last-MiB hash missed: no tail was hashed below 2 MiB, and the
    gzip trailer (the CRC of the whole text) lies past the first MiB."""
    path, memo = tmp_path / "labevents.csv.gz", tmp_path / "memo"
    text = digits_csv(2_600_000, seed=2)
    old = gz(text)
    assert MIB < len(old) < 2 * MIB
    path.write_bytes(old)
    settle()
    before = read.fingerprint(path, memo)
    new = gz(same_size_gzip_edit(text, at=0.9))
    assert len(new) == len(old) and first_difference(old, new) > MIB
    write_in_place(path, new)
    assert gzip.decompress(path.read_bytes())  # still a valid gzip file
    after = read.fingerprint(path, memo)
    assert after["bytes"] == before["bytes"]
    assert after["xxh3_128"] != before["xxh3_128"]


def test_gzip_over_2_mib_with_a_byte_changed_in_the_middle(tmp_path):
    path, memo = tmp_path / "chartevents.csv.gz", tmp_path / "memo"
    data = gz(digits_csv(5_500_000, seed=3))
    assert len(data) > 2 * MIB
    path.write_bytes(data)
    settle()
    before = read.fingerprint(path, memo)
    middle = len(data) // 2
    write_in_place(path, data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:])
    after = read.fingerprint(path, memo)
    assert after["bytes"] == before["bytes"]
    assert after["xxh3_128"] != before["xxh3_128"]


def test_edit_with_mtime_restored(tmp_path):
    """`touch -d` can put the mtime back; the ctime, in the memo's key, it cannot."""
    path, memo = tmp_path / "omr.csv", tmp_path / "memo"
    text = digits_csv(100_000, seed=4)
    path.write_bytes(text)
    settle()
    st = path.stat()
    before = read.fingerprint(path, memo)
    middle = len(text) // 2
    write_in_place(path, text[:middle] + (b"7" if text[middle:middle + 1] != b"7" else b"8")
                   + text[middle + 1:])
    restore_mtime(path, st)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after = read.fingerprint(path, memo)
    assert after["xxh3_128"] != before["xxh3_128"]


def test_same_size_gzip_edit_is_a_new_cache_key_for_that_table_alone(tmp_path):
    data = tmp_path / "data"
    synth.generate(data, n_patients=24, seed=3)
    path = data / "hosp" / "labevents.csv.gz"
    text = gzip.decompress(path.read_bytes())
    path.write_bytes(gz(text))  # so that the edit below can keep the same compressed size
    cfg = make_cfg(data, tmp_path / "out")
    settle()
    keys_a = cache.table_keys(make_plan(cfg))
    assert any(hash_memo_dir(cfg).glob("*.json"))
    st = path.stat()
    write_in_place(path, gz(same_size_gzip_edit(text, at=0.5)))
    restore_mtime(path, st)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    keys_b = cache.table_keys(make_plan(cfg))
    assert sorted(t for t in keys_b if keys_a[t] != keys_b[t]) == ["labevents"]


# ---- the memo ------------------------------------------------------------------------------


def refuse_to_hash(monkeypatch):
    def fail(path):
        raise AssertionError(f"{path} was read: the memo should have answered")
    monkeypatch.setattr(read, "xxh3_file", fail)


def test_memo_answers_without_reading(tmp_path, monkeypatch):
    path, memo = tmp_path / "a.csv", tmp_path / "memo"
    path.write_bytes(digits_csv(50_000, seed=5))
    settle()
    first = read.fingerprint(path, memo)
    refuse_to_hash(monkeypatch)
    assert read.fingerprint(path, memo) == first


def test_make_plan_reads_no_input_once_hashed(tmp_path, monkeypatch):
    data = tmp_path / "data"
    synth.generate(data, n_patients=24, seed=3)
    cfg = make_cfg(data, tmp_path / "out")
    settle()
    first = make_plan(cfg)
    memos = sorted(hash_memo_dir(cfg).glob("*.json"))
    assert len(memos) == len(first.tables) + len(first.dictionaries)
    refuse_to_hash(monkeypatch)
    assert make_plan(cfg) == first


@pytest.mark.parametrize("damage", [b"{not json", b"", b"[1, 2]", b"{}", b"\xff\xfe",
                                    b'{"format": 1, "xxh3_128": "0"}'])
def test_damaged_memo_is_a_miss_and_rewritten(tmp_path, damage):
    path, memo = tmp_path / "a.csv", tmp_path / "memo"
    path.write_bytes(digits_csv(50_000, seed=6))
    settle()
    good = read.fingerprint(path, memo)
    stored = read.memo_path(memo, path)
    stored.write_bytes(damage)
    assert read.fingerprint(path, memo) == good
    assert json.loads(stored.read_text())["xxh3_128"] == good["xxh3_128"]


def test_memo_of_another_stat_is_rehashed(tmp_path):
    path, memo = tmp_path / "a.csv", tmp_path / "memo"
    path.write_bytes(digits_csv(50_000, seed=7))
    settle()
    good = read.fingerprint(path, memo)
    stored = read.memo_path(memo, path)
    doc = json.loads(stored.read_text())
    stored.write_text(json.dumps({**doc, "mtime_ns": doc["mtime_ns"] - 1, "xxh3_128": "0" * 32}))
    assert read.fingerprint(path, memo) == good


def test_replaced_file_of_same_size_and_mtime_is_rehashed(tmp_path):
    """Another file renamed over the input (a new inode) with the old size and mtime."""
    path, memo = tmp_path / "a.csv", tmp_path / "memo"
    text = digits_csv(50_000, seed=8)
    path.write_bytes(text)
    settle()
    st = path.stat()
    before = read.fingerprint(path, memo)
    other = tmp_path / "other.csv"
    other.write_bytes(text[:-2] + (b"9\n" if text[-2:] != b"9\n" else b"8\n"))
    os.replace(other, path)
    restore_mtime(path, st)
    now = path.stat()
    assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert now.st_ino != st.st_ino
    after = read.fingerprint(path, memo)
    assert after["xxh3_128"] != before["xxh3_128"]
    settle()  # the new file is fresh: remembered once it has settled
    assert read.fingerprint(path, memo) == after
    assert json.loads(read.memo_path(memo, path).read_text())["inode"] == now.st_ino


def test_freshly_changed_file_is_not_remembered(tmp_path, monkeypatch):
    """A file changed within RACY_SECONDS could change again within the same timestamp
    tick, leaving its stat as it was: its hash is not remembered until it has settled."""
    monkeypatch.setattr(read, "RACY_SECONDS", 60.0)
    path, memo = tmp_path / "a.csv", tmp_path / "memo"
    path.write_bytes(b"subject_id\n1\n")
    first = read.fingerprint(path, memo)
    assert not read.memo_path(memo, path).exists()
    assert read.fingerprint(path, memo) == first


def test_without_memo_dir_nothing_is_written(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"subject_id\n1\n")
    settle()
    fp = read.fingerprint(path, None)
    assert set(fp) == {"path", "bytes", "xxh3_128"} and fp["bytes"] == 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_unwritable_memo_dir_still_fingerprints(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"subject_id\n1\n")
    settle()
    blocker = tmp_path / "memo"
    blocker.write_text("a file where the memo folder would go")
    assert read.fingerprint(path, blocker) == read.fingerprint(path, None)


def test_unreadable_input_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"gone\.csv: cannot read the input to fingerprint"):
        read.fingerprint(tmp_path / "gone.csv", tmp_path / "memo")


def test_fingerprint_of_an_older_release_is_named():
    """A version or plan fingerprinted by the first-and-last-MiB hash cannot be compared
    with a whole-file hash: it counts as changed, and says why."""
    old = {"labevents": {"path": "a", "bytes": 5, "head_tail_blake2b": "0" * 32}}
    new = {"labevents": {"path": "a", "bytes": 5, "xxh3_128": "1" * 32}}
    assert input_differences("h", "h", (old, {}), (new, {})) == [
        "input labevents was fingerprinted by an older release (no whole-file hash), cannot "
        "be compared"]
