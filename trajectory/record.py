"""The per-patient record (format 1): a msgpack map, zstd-compressed. See docs/FORMAT.md.

Event columns travel as raw little-endian bytes so a reader gets numpy arrays with one
`np.frombuffer` each, never a per-element decode.
"""
from __future__ import annotations

import msgpack
import numpy as np
import zstandard

FORMAT = 1
EVENT_DTYPES = {
    "time": "<i8",  # seconds since 1970-01-01 (MIMIC's shifted calendar)
    "code": "<i4",  # row of codes.parquet (code_id)
    "value": "<f4",  # numeric value, NaN when none
    "text": "<i4",  # index into record["texts"], -1 when none
    "hadm_id": "<i8",  # -1 when none
    "stay_id": "<i8",  # -1 when none
    "source": "|u1",  # source table id (dataset.json "sources")
    "flags": "|u1",  # QC bits (dataset.json "flags"); 0 = clean
    "concept": "<i2",  # canonical variable (dataset.json "concepts"), -1 when none
    "concept_value": "<f4",  # value in the concept's unit (converted, maybe clipped), else NaN
}
NONE_ID = -1


def pack(record: dict, compressor: zstandard.ZstdCompressor) -> bytes:
    return compressor.compress(msgpack.packb(record, use_bin_type=True))


def unpack(data: bytes, decompressor: zstandard.ZstdDecompressor | None = None) -> dict:
    """Decode one record; events and window blocks become numpy arrays (read-only views)."""
    d = decompressor or zstandard.ZstdDecompressor()
    rec = msgpack.unpackb(d.decompress(data), raw=False, strict_map_key=False)
    if rec.get("format") != FORMAT:
        raise ValueError(f"record format {rec.get('format')!r}, this reader knows {FORMAT}")
    rec["events"] = {k: np.frombuffer(v, EVENT_DTYPES[k]) for k, v in rec["events"].items()}
    for stay in rec.get("windows", []):
        stay["data"] = np.frombuffer(stay["data"], "<f4").reshape(stay["shape"])
    return rec


def events_to_bytes(columns: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {k: np.ascontiguousarray(columns[k], dtype=dt).tobytes()
            for k, dt in EVENT_DTYPES.items()}
