"""Cutting one CSV table into byte ranges that start and end on record boundaries.

A table of n units gets targets at n-1 equal steps of its text (after the header line); each
cut is the first record start at or after its target. A record starts after a newline that is
not inside a quoted field: for the tables whose fields never hold newlines that is any
newline, found by reading a few bytes at the target; for the note tables (multi-line quoted
text) it is a newline after an even number of quote characters since the header, so their
cuts come from one pass that counts quotes (CSV escapes a quote inside a field as two, which
keeps the count's parity). Notes are cut, never kept whole: MIMIC-IV-Note's radiology table is
GBs of text.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SCAN_CHUNK = 4 << 20


@dataclass(frozen=True)
class Part:
    """One partition unit's share of its table: text bytes [start, end) of a CSV (after
    decompression), or row groups [start, end) of a parquet file."""
    index: int
    count: int
    start: int
    end: int
    kind: str  # "bytes" or "row_groups"

    def describe(self) -> str:
        what = "uncompressed bytes" if self.kind == "bytes" else "row groups"
        return f"part {self.index + 1} of {self.count}, {what} [{self.start:,}, {self.end:,})"


def header_end(head: bytes, path: Path) -> int:
    nl = head.find(b"\n")
    if nl < 0:
        raise ValueError(f"{path}: no end of the header line in the first {len(head):,} bytes")
    return nl + 1


def targets(start: int, size: int, n: int) -> list[int]:
    return [start + (size - start) * k // n for k in range(1, n)]


def line_cuts(open_at: Callable[[int, int], io.RawIOBase], size: int, points: list[int],
              ) -> list[int]:
    """First line start at or after each target (a newline at target-1 or later)."""
    cuts = []
    for t in points:
        pos, cut = t - 1, size
        with open_at(pos, size) as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                nl = chunk.find(b"\n")
                if nl >= 0:
                    cut = pos + nl + 1
                    break
                pos += len(chunk)
        cuts.append(max(cut, cuts[-1] if cuts else 0))
    return cuts


def record_cuts(stream: io.RawIOBase, start: int, size: int, points: list[int]) -> list[int]:
    """First record start at or after each target, for CSV text whose quoted fields may hold
    newlines; `stream` reads the text from `start` (just after the header) on."""
    cuts, k, pos, odd = [], 0, start, 0
    while k < len(points) and points[k] <= start:  # `start` is itself a record start
        cuts.append(start)
        k += 1
    while k < len(points):
        chunk = stream.read(SCAN_CHUNK)
        if not chunk:
            break
        i = 0
        while k < len(points):
            j = max(points[k] - 1 - pos, i)
            if j >= len(chunk):
                break
            odd ^= chunk.count(b'"', i, j) & 1
            nl = chunk.find(b"\n", j)
            if nl < 0:
                i = j
                break
            odd ^= chunk.count(b'"', j, nl) & 1
            i = nl + 1
            if not odd:
                while k < len(points) and points[k] <= pos + i:  # targets in one record
                    cuts.append(pos + i)
                    k += 1
        odd ^= chunk.count(b'"', i) & 1
        pos += len(chunk)
    return cuts + [size] * (len(points) - k)


class FileRange(io.RawIOBase):
    """Bytes [start, end) of a plain file."""

    def __init__(self, path: Path, start: int, end: int):
        super().__init__()
        self.f = open(path, "rb")
        self.f.seek(start)
        self.left = end - start

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """One copy, as GzRange.read (RawIOBase.read would make two more)."""
        want = self.left if size is None or size < 0 else min(size, self.left)
        out = self.f.read(max(0, want))
        self.left -= len(out)
        return out

    def readinto(self, buf) -> int:
        n = self.f.readinto(memoryview(buf)[:max(0, min(len(buf), self.left))])
        self.left -= n or 0
        return n or 0

    def close(self) -> None:
        if not self.closed:
            self.f.close()
        super().close()
