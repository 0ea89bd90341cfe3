"""Crash-safe writes: a file appears under its final name only once complete (temporary
name, fsync, rename), plus the checksums done-markers and manifests carry."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import xxhash


def checksum_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def checksum_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def xxh3_bytes(data) -> str:
    """XXH3-128 of a buffer (bytes, memoryview, a pyarrow Buffer): the checksum cached files
    carry. XXH3 hashes at memory speed (17.7 GB/s on this VM against blake2b's 0.63), so
    verifying what a unit reads costs little next to reading it."""
    return xxhash.xxh3_128_hexdigest(data)


def xxh3_file(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def tmp_name(path: Path) -> Path:
    # pid + hostname: two array tasks racing on one unit never share a temporary file.
    return path.with_name(f".{path.name}.tmp-{os.uname().nodename}-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes, mkdir: bool = True) -> None:
    """`mkdir` False inside a cache unit's temporary folder: a folder removed under the writer
    must stay removed (recreated, it was published without the files written before)."""
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj, mkdir: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode(),
                       mkdir)


def atomic_write_parquet(df, path: Path, mkdir: bool = True) -> None:
    """A polars frame to parquet under a temporary name, then renamed into place."""
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    df.write_parquet(tmp, statistics=True)
    os.replace(tmp, path)
