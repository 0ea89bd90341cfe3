"""Deterministic train/val/test splits by subject_id (no torch, no Python `hash`).

    split_of([10000032, 10001217], seed=0)  # -> array(['train', 'val'], dtype='<U5')

Each subject's split depends only on (subject_id, seed, fractions): a splitmix64 hash of
`uint64(subject_id) ^ mix(seed)` mapped to [0, 1) and cut at the cumulative fractions. So a
subject never changes split when other subjects are added or removed, and the answer is the
same in every process (Python's string-hash randomisation plays no part).
"""
from __future__ import annotations

import numpy as np

SPLIT_NAMES = ("train", "val", "test")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser of a uint64 array (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _seed_key(seed: int) -> np.uint64:
    return splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]


def unit_hash(subject_ids, seed: int = 0) -> np.ndarray:
    """A float64 in [0, 1) per subject, uniform and stable across processes and platforms."""
    ids = np.asarray(subject_ids, dtype=np.int64).astype(np.uint64)
    h = splitmix64(ids ^ _seed_key(seed))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def split_of(subject_ids, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """'train' / 'val' / 'test' for each subject id (an array of str, same length)."""
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, "
                         f"got {fractions!r}")
    u = unit_hash(subject_ids, seed)
    cuts = np.cumsum(fr)[:2]
    which = np.searchsorted(cuts, u, side="right")
    return np.asarray(SPLIT_NAMES)[which]


def split_mask(subject_ids, split: str, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Boolean mask of the subjects that fall in `split`."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    return split_of(subject_ids, seed, fractions) == split
