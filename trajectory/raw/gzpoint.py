"""What both seek-point builders share (trajectory.raw.gzindex, one zlib-ng pass; and
trajectory.raw.gzindex_parallel, rapidgzip + zlib-ng per segment): a point, the rule that picks
points, zlib-ng's stream structure. Its own module so that the two import it, not each
other."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

WINDOW = 32768


@dataclass(frozen=True)
class Point:
    cmp: int  # compressed offset of a byte-aligned deflate block (0: the gzip header)
    out: int  # uncompressed offset of its first byte
    window: bytes  # the 32 KiB of text before `out` (empty at the stream's start)


class _ZngStream(ctypes.Structure):  # zlib-ng.h's zng_stream
    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint32),
                ("total_in", ctypes.c_size_t), ("next_out", ctypes.c_void_p),
                ("avail_out", ctypes.c_uint32), ("total_out", ctypes.c_size_t),
                ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p),
                ("zalloc", ctypes.c_void_p), ("zfree", ctypes.c_void_p),
                ("opaque", ctypes.c_void_p), ("data_type", ctypes.c_int32),
                ("adler", ctypes.c_uint32), ("reserved", ctypes.c_ulong)]


def next_target(out: int, spacing: int) -> int:
    """Where the seek point after one at uncompressed offset `out` may start: the next
    multiple of `spacing` (never inside the first window). A rule that looks only at a
    point's own offset, not at the chain of points before it (as `out - last >= spacing`
    did), so that a pass started anywhere in the stream (the parallel builder,
    trajectory.raw.gzindex_parallel) picks the same points as one pass from the start."""
    return max((out // spacing + 1) * spacing, WINDOW)
