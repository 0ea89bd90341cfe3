"""The seek points of trajectory.gzindex found with several cores: the same points, the same
index bytes as the one sequential zlib-ng pass.

Why: the sequential pass is the one step of a first build that no worker count shortens
(issue 26: at demo x800 it was the largest unit, 28.8 s, and put stage 1 at 39.8 s on 64
workers against an ideal 11.7 s). A single-member gzip cannot be cut without a window, so:

1. rapidgzip (Knespel and Brunst) decodes the file with P threads, each chunk speculatively
   from a guessed block start, and exports its index: a point about every 4 MB of text at a
   deflate block start at any *bit* offset, with the 32 KiB window before it. Its windows are
   sparse (bytes the following chunk never references are zeroed): fine as a dictionary to
   decode that chunk, never copied into our index.
2. Each segment between rapidgzip points is inflated again with zlib-ng on its own thread
   (inflatePrime for the bit offset, inflateSetDictionary with rapidgzip's window, then
   Mark Adler's zran loop with Z_BLOCK), keeping the same points as gzindex.scan_points:
   the first byte-aligned block boundary at or after each multiple of SPACING
   (gzindex.next_target: a rule of the point's own offset, so a segment needs nothing from
   the segments before it). A segment whose last target has no aligned boundary before the
   next segment starts reads on until it finds one.
3. The windows come from our own inflate output: a point less than 32 KiB into its segment
   takes the rest of its window from the previous segment's last 32 KiB, which that
   segment's thread decoded itself. Each segment's CRC-32, combined in order, must equal the
   gzip trailer's, and the sizes its ISIZE: the text the windows were cut from is the file's.

Anything the parallel pass does not expect (rapidgzip's error on a damaged file, a deflate
stream that ends inside a segment: a second gzip member, a CRC or size mismatch, a truncated
file) makes it give up and run the sequential pass, whose errors name the file and say what
is wrong. Where rapidgzip or zlib-ng is missing, the sequential pass runs too.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import resource
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .gzpoint import WINDOW, Point, _ZngStream, next_target

CHUNK = 4 << 20  # rapidgzip's chunk (compressed bytes): 1 MiB doubled its CPU on demo x20
SEGMENTS_PER_THREAD = 4  # enough to even out uneven segments; each costs an inflateInit and
# up to ~1 MB of text read past its end
RING = 1 << 20  # output ring of a segment's inflate, as gzindex.scan_points
_GZIDX_HEAD = struct.Struct("<5sBBQQIII")  # indexed_gzip's export: magic .. number of points
_GZIDX_POINT = struct.Struct("<QQBB")  # compressed offset, text offset, bits, has a window


class Fallback(Exception):
    """The parallel pass cannot vouch for its points: the sequential pass decides."""


@functools.lru_cache(maxsize=1)
def _zlib_ng():
    """zlib-ng's inflate with inflatePrime / inflateSetDictionary and its CRC-32, or None."""
    try:
        from zlib_ng import zlib_ng as zng_module
        lib = ctypes.CDLL(zng_module.__file__)
        p = ctypes.POINTER(_ZngStream)
        lib.zng_inflateInit2.argtypes = [p, ctypes.c_int32]
        lib.zng_inflate.argtypes = [p, ctypes.c_int32]
        lib.zng_inflateEnd.argtypes = [p]
        lib.zng_inflatePrime.argtypes = [p, ctypes.c_int32, ctypes.c_int32]
        lib.zng_inflateSetDictionary.argtypes = [p, ctypes.c_char_p, ctypes.c_uint32]
        lib.zng_crc32.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32]
        lib.zng_crc32.restype = ctypes.c_uint32
        lib.zng_crc32_combine.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int64]
        lib.zng_crc32_combine.restype = ctypes.c_uint32
        return lib
    except (ImportError, OSError, AttributeError):
        return None


def available() -> bool:
    try:
        import rapidgzip  # noqa: F401
    except ImportError:
        return False
    return _zlib_ng() is not None


@dataclass
class Segment:
    bit: int  # deflate block start, bit offset in the file
    out: int  # its text offset
    stop: int | None  # text offset of the next segment (None: the last)
    window: bytes  # rapidgzip's (sparse) window before `out`, to decode with only
    points: list = field(default_factory=list)  # (cmp, out, window or its tail part)
    crc: int = 0  # CRC-32 of text [out, stop)
    tail: bytes = b""  # the text before `stop` (at most WINDOW bytes)
    end: tuple | None = None  # last segment: (trailer's file offset, text size)
    seconds: float = 0.0  # thread time of this segment's inflate


def _cpu() -> float:
    """CPU seconds of this process, every thread (rapidgzip's pool included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def rapidgzip_index(path: Path, threads: int, chunk: int = CHUNK, scratch=None,
                    timings: dict | None = None):
    """rapidgzip's parallel decode of `path` and its exported index (indexed_gzip format, in
    a temporary file: full MIMIC-IV's chartevents has ~11,000 points, ~360 MB of windows).
    Yields (text size, [(bit offset, text offset, file offset of its window or -1)],
    window(file offset) -> bytes): only the windows of the points that start segments are
    read back."""
    import rapidgzip

    try:
        t_open = time.perf_counter()
        with rapidgzip.RapidgzipFile(str(path), parallelization=threads,
                                     chunk_size=chunk) as f, \
                tempfile.TemporaryFile(dir=scratch) as tmp:
            t0, cpu0 = time.perf_counter(), _cpu()
            size = f.seek(0, 2)  # decodes every chunk, CRC-32 checked
            t1, cpu1 = time.perf_counter(), _cpu()
            f.export_index(tmp)
            t2 = time.perf_counter()
            tmp.seek(0)
            head = tmp.read(_GZIDX_HEAD.size)
            magic, version, _, _, usize, _, wsize, n = _GZIDX_HEAD.unpack(head)
            if magic != b"GZIDX" or version != 1 or wsize != WINDOW or usize != size:
                raise Fallback(f"unexpected rapidgzip index ({magic!r} v{version}, "
                               f"window {wsize}, size {usize} against {size})")
            table = tmp.read(n * _GZIDX_POINT.size)
            marks, at = [], _GZIDX_HEAD.size + len(table)
            for i in range(n):
                cmp, pos, bits, has = _GZIDX_POINT.unpack_from(table, i * _GZIDX_POINT.size)
                marks.append((cmp * 8 - bits, pos, at if has else -1))
                at += WINDOW if has else 0
            if timings is not None:
                timings.update(open=t0 - t_open, decode=t1 - t0, decode_cpu=cpu1 - cpu0,
                               export=t2 - t1, points=n)

            def window(offset: int) -> bytes:
                if offset < 0:
                    return b""
                tmp.seek(offset)
                w = tmp.read(WINDOW)
                if len(w) != WINDOW:
                    raise Fallback("rapidgzip's index cut short")
                return w
            yield size, marks, window
    except Fallback:
        raise
    except Exception as e:  # rapidgzip raises its own RuntimeError / ValueError texts
        raise Fallback(f"rapidgzip: {e}") from e


def scan_segment(path: Path, seg: Segment, spacing: int) -> Segment:
    """Inflate one segment with zlib-ng from its bit offset, keeping gzindex.scan_points's
    points for the targets (multiples of `spacing`) in [seg.out, seg.stop)."""
    t0 = time.thread_time()
    lib = _zlib_ng()
    strm = _ZngStream()
    ref = ctypes.byref(strm)
    if lib.zng_inflateInit2(ref, -15) != 0:  # raw deflate, 32 KiB window
        raise Fallback("inflateInit2 failed")
    ring = ctypes.create_string_buffer(RING)
    base = ctypes.addressof(ring)
    stop = seg.stop
    try:
        if seg.window and lib.zng_inflateSetDictionary(ref, seg.window, len(seg.window)) != 0:
            raise Fallback(f"inflateSetDictionary failed at bit {seg.bit}")
        byte, shift = divmod(seg.bit, 8)
        with open(path, "rb") as f:
            f.seek(byte)
            if shift:  # the block starts inside this byte: its top 8 - shift bits
                first = f.read(1)
                if not first:
                    raise Fallback("file shorter than rapidgzip's index")
                lib.zng_inflatePrime(ref, 8 - shift, first[0] >> shift)
                byte += 1
            target = max(-(-seg.out // spacing) * spacing, spacing, WINDOW)
            if stop is not None and target >= stop:
                target = None  # no target of ours here (the segment is shorter than spacing)
            # The segment's own start is a block boundary that Z_BLOCK never reports (a raw
            # inflate begins past it): aligned when the block starts on a byte.
            if target is not None and not shift and seg.out and seg.out >= target:
                seg.points.append((byte, seg.out, b""))
                target = next_target(seg.out, spacing)
                target = target if stop is None or target < stop else None
            out, used, crc, consumed = seg.out, 0, 0, byte
            strm.avail_out = 0
            while True:
                raw = f.read(1 << 20)
                if not raw:
                    raise Fallback(f"input ends at byte {consumed} inside a segment")
                buf = ctypes.create_string_buffer(raw, len(raw))
                strm.next_in, strm.avail_in = ctypes.addressof(buf), len(raw)
                while strm.avail_in:
                    if used == RING:
                        used = 0
                    room = RING - used
                    if stop is not None and out < stop:
                        room = min(room, stop - out)  # stop exactly at the segment's end
                    strm.next_out, strm.avail_out = base + used, room
                    before_in = strm.avail_in
                    ret = lib.zng_inflate(ref, 5)  # Z_BLOCK
                    consumed += before_in - strm.avail_in
                    n = room - strm.avail_out
                    if n and (stop is None or out < stop):
                        crc = lib.zng_crc32(crc, base + used, n)
                    used += n
                    out += n
                    if ret not in (0, 1, -5):
                        raise Fallback(f"zlib error {ret} {strm.msg!r} at byte {consumed}")
                    if out == stop and not seg.tail and out > seg.out:
                        seg.tail = _last(ring, used, min(WINDOW, out - seg.out))
                    if ret == 1:  # Z_STREAM_END: the deflate stream's end
                        if stop is not None and out < stop:
                            raise Fallback(f"deflate stream ends at text byte {out}, inside "
                                           f"the segment [{seg.out}, {stop})")
                        if stop is None:
                            seg.end = (consumed, out)
                            seg.tail = _last(ring, used, min(WINDOW, out - seg.out))
                        seg.crc = crc
                        return seg
                    dt = strm.data_type
                    if (target is not None and dt & 128 and not dt & 64 and dt & 7 == 0
                            and out >= target):
                        seg.points.append((consumed, out,
                                           _last(ring, used, min(WINDOW, out - seg.out))))
                        target = next_target(out, spacing)
                        target = target if stop is None or target < stop else None
                    if target is None and stop is not None and out >= stop:
                        seg.crc = crc
                        return seg
    finally:
        lib.zng_inflateEnd(ref)
        seg.seconds = time.thread_time() - t0


def _last(ring, used: int, n: int) -> bytes:
    """The n bytes the ring holds before its write position `used`."""
    return (ring.raw[used - n:used] if used >= n else
            ring.raw[RING - (n - used):] + ring.raw[:used])


def segments_of(marks: list, size: int, threads: int, window,
                per_thread: int = SEGMENTS_PER_THREAD) -> list[Segment]:
    """Every g-th rapidgzip point starts a segment, g such that each thread gets ~per_thread
    segments (per_thread 0: every point). A point at the stream's end starts none."""
    marks = [m for m in marks if m[1] < size]
    if not marks or marks[0][1] != 0:
        raise Fallback("rapidgzip's index does not start at the stream's start")
    step = max(1, len(marks) // (threads * per_thread)) if per_thread else 1
    chosen = marks[::step]
    return [Segment(bit, out, chosen[i + 1][1] if i + 1 < len(chosen) else None, window(at))
            for i, (bit, out, at) in enumerate(chosen)]


def trailer(path: Path, end: int) -> tuple[int, int]:
    """(CRC-32, ISIZE) of the gzip trailer at `end`; Fallback unless the file ends there."""
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(9)
    if len(tail) != 8:
        raise Fallback("the file does not end with the first member's trailer "
                       f"({len(tail)} bytes after the deflate stream)")
    return struct.unpack("<II", tail)


def stitch(segments: list[Segment]) -> list[Point]:
    """The segments' points in order, each window completed from the text before its
    segment, duplicates (a point found past a segment's end by it and by the next) once."""
    points, prev_tail, seen = [Point(0, 0, b"")], b"", set()
    for seg in segments:
        for cmp, out, w in seg.points:
            if len(w) < WINDOW:
                w = prev_tail[len(prev_tail) - (WINDOW - len(w)):] + w
                if len(w) != WINDOW:
                    raise Fallback(f"no {WINDOW}-byte window for the point at {out}")
            if out not in seen:
                seen.add(out)
                points.append(Point(cmp, out, w))
        prev_tail = (prev_tail + seg.tail)[-WINDOW:] if len(seg.tail) < WINDOW else seg.tail
    points.sort(key=lambda p: p.out)
    return points


def scan_points_parallel(path: Path, threads: int, spacing: int, chunk: int = CHUNK,
                         scratch=None, timings: dict | None = None,
                         per_thread: int = SEGMENTS_PER_THREAD) -> tuple[int, list[Point]]:
    """gzindex.scan_points's result with `threads` threads; raises Fallback where it cannot
    vouch for it. `timings`, if given, receives each phase's wall seconds and each segment's
    thread seconds (benchmarks/bench_gzindex.py models more cores from them)."""
    if not available():
        raise Fallback("rapidgzip or zlib-ng is not installed")
    t0 = time.perf_counter()
    phases: dict = {}
    with rapidgzip_index(path, threads, chunk, scratch, phases) as (size, marks, window):
        t_read = time.perf_counter()
        segments = segments_of(marks, size, threads, window, per_thread)
        t_read = time.perf_counter() - t_read
    t1 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        segments = list(pool.map(lambda s: scan_segment(path, s, spacing), segments))
    t2 = time.perf_counter()
    last = segments[-1]
    if last.end is None or last.end[1] != size:
        raise Fallback(f"the segments' text ends at {last.end}, rapidgzip's at {size}")
    crc = 0
    for seg in segments:
        length = (seg.stop if seg.stop is not None else size) - seg.out
        crc = _zlib_ng().zng_crc32_combine(crc, seg.crc, length)
    want_crc, want_size = trailer(path, last.end[0])
    if (crc, size & 0xFFFFFFFF) != (want_crc, want_size):
        raise Fallback(f"CRC-32 / size {crc:08x} / {size} against the trailer's "
                       f"{want_crc:08x} / {want_size}")
    points = stitch(segments)
    if timings is not None:
        # fixed: opening rapidgzip and closing it (its threads join); per point: the export
        timings.update(rapidgzip=phases["decode"], rapidgzip_cpu=phases["decode_cpu"],
                       export=phases["export"], rg_points=phases["points"], windows=t_read,
                       fixed=t1 - t0 - phases["decode"] - phases["export"] - t_read,
                       segments=t2 - t1, rest=time.perf_counter() - t2,
                       segment_seconds=[s.seconds for s in segments])
    return size, points
