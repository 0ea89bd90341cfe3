"""What the availability time costs in record bytes: format 3's `known_delta` column against the
same records without it, per event.

    python -m trajectory.replicate ../shared/data/mimic-iv-demo /tmp/known/demo_x20 --times 20
    python build_patient_files.py --data-dir /tmp/known/demo_x20 --out-dir /tmp/known/x20
    python benchmarks/bench_known_size.py /tmp/known/x20/v1 [--old /tmp/known/x20_fmt2/v1]

Every event chunk of the version is re-compressed at the version's ZSTD_LEVEL (the same bytes
the build wrote, which is checked): as stored, without its `known_delta` column (format 2's
columns), and with an absolute `<i8` known time instead of the delta (the alternative the
delta was chosen over). `--old`: a format-2 version of the same input (built by the code
before format 3) whose record bytes are printed beside.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import polars as pl
import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trajectory.record import EVENT_DTYPES  # noqa: E402

_OFF = {}
_at = 0
for _k, _dt in EVENT_DTYPES.items():
    _OFF[_k] = (_at, np.dtype(_dt).itemsize)
    _at += np.dtype(_dt).itemsize


def chunk_variants(raw: bytes, n: int, cctx) -> dict:
    """Compressed sizes of one chunk: as stored, without known_delta, with known_time <i8."""
    cols = {k: raw[n * a:n * (a + w)] for k, (a, w) in _OFF.items()}
    base = b"".join(v for k, v in cols.items() if k != "known_delta")
    t = np.frombuffer(cols["time"], "<i8")
    absolute = (t + np.frombuffer(cols["known_delta"], "<u4")).astype("<i8").tobytes()
    return {"stored": len(cctx.compress(raw)), "without": len(cctx.compress(base)),
            "absolute": len(cctx.compress(base + absolute))}


def measure(version: Path) -> dict:
    meta = json.loads((version / "dataset.json").read_text())
    level = int(meta["config"]["zstd_level"])
    cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
    m = pl.read_parquet(version / "manifest.parquet")
    tot = {"records": 0, "events": 0, "chunks": 0, "chunks_without": 0, "chunks_absolute": 0}
    for path, offset, size in zip(m["path"], m["offset"], m["bytes"]):
        with open(version / path, "rb") as f:
            f.seek(offset)
            outer = msgpack.unpackb(f.read(size), raw=False)
        tot["records"] += size
        for n, frame in zip(outer["chunks"]["n"], outer["chunks"]["data"]):
            v = chunk_variants(dctx.decompress(frame), n, cctx)
            if v["stored"] != len(frame):
                raise ValueError(f"{version / path}: a chunk re-compressed to {v['stored']} "
                                 f"bytes, stored {len(frame)}: not this ZSTD_LEVEL's bytes")
            tot["events"] += n
            tot["chunks"] += v["stored"]
            tot["chunks_without"] += v["without"]
            tot["chunks_absolute"] += v["absolute"]
    return tot


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("version", type=Path, help="a format-3 version")
    ap.add_argument("--old", type=Path, default=None, help="a format-2 version of the same input")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    t = measure(args.version)
    e = t["events"]
    print(f"{args.version}: {e:,} events, {t['records']:,} record bytes "
          f"({t['records'] / e:.3f} B/event), measured in {time.perf_counter() - t0:.1f} s")
    print(f"known_delta <u4: event chunks {t['chunks_without']:,} -> {t['chunks']:,} bytes: "
          f"+{(t['chunks'] - t['chunks_without']) / e:.3f} B/event "
          f"(+{100 * (t['chunks'] / t['chunks_without'] - 1):.1f}% of the chunks)")
    print(f"absolute known_time <i8 instead: +{(t['chunks_absolute'] - t['chunks_without']) / e:.3f}"
          f" B/event")
    extra = t["chunks"] - t["chunks_without"]
    print(f"of the records: +{100 * extra / (t['records'] - extra):.1f}%")
    if args.old is not None:
        old = pl.read_parquet(args.old / "manifest.parquet")
        ob, oe = int(old["bytes"].sum()), int(old["n_events"].sum())
        print(f"{args.old} (format 2): {oe:,} events, {ob:,} record bytes: format 3 is "
              f"+{(t['records'] - ob) / e:.3f} B/event (+{100 * (t['records'] / ob - 1):.1f}%)")


if __name__ == "__main__":
    main()
