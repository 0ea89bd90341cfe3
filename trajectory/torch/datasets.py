"""The two datasets: map-style (`TrajectoryDataset`) and streaming (`TrajectoryIterableDataset`,
split over DDP ranks and DataLoader workers, each subject once per epoch)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .items import ItemSource


class TrajectoryDataset(ItemSource, Dataset):
    """Map-style dataset: ``dataset[i]`` is the i-th selected patient (manifest order, i.e.
    by subject_id, unless explicit ``subjects`` give an order); with ``task``/``labels``,
    the i-th kept label row (the file's order), cut at its prediction time."""

    def __init__(self, version_dir, split: str | None = None,
                 subjects: Sequence[int] | None = None, transform: Callable | None = None,
                 max_events: int | None = None, time_range: tuple[int, int] | None = None,
                 stay: int | None = None, with_text: bool = False, with_windows: bool = True,
                 split_seed: int = 0, split_fractions=(0.8, 0.1, 0.1),
                 task: str | None = None, labels: str | Path | None = None,
                 cut_rule: str = "known"):
        ItemSource.__init__(self, version_dir, split=split, subjects=subjects,
                            transform=transform, max_events=max_events, time_range=time_range,
                            stay=stay, with_text=with_text, with_windows=with_windows,
                            split_seed=split_seed, split_fractions=split_fractions, task=task,
                            labels=labels, cut_rule=cut_rule)

    def __len__(self) -> int:
        return self._n_items()

    def __getitem__(self, i: int) -> dict:
        if self.labels is not None:
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} label rows")
            return self.load_row(int(i) % len(self))
        return self.load(self.subject_ids[i])


class TrajectoryIterableDataset(ItemSource, IterableDataset):
    """Streams patients sorted by (shard, subject_id), split over DDP ranks and DataLoader
    workers (see the module docstring). With ``shuffle`` (default: on when
    ``shuffle_buffer > 0``) the order is first permuted with
    ``np.random.default_rng((seed, epoch))`` -- the same permutation on every rank and
    worker -- before striding, then passed through a shuffle buffer of ``shuffle_buffer``
    subject ids (ids, not decoded items, so the buffer costs no memory). Deterministic given
    seed and epoch; call :meth:`set_epoch` before each epoch (with non-persistent workers, or
    the workers keep the epoch they were started with).

    Rank/world size: explicit ``rank``/``world_size`` win; else torch.distributed when
    initialised; else 0/1.
    """

    def __init__(self, version_dir, split: str | None = None, shuffle_buffer: int = 0,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool | None = None, **options):
        ItemSource.__init__(self, version_dir, split=split, **options)
        order = np.lexsort((self.subject_ids, self._shards))
        self.subject_ids = self.subject_ids[order]
        self._shards = self._shards[order]
        if self.labels is None:
            self._keys = self.subject_ids
        else:  # label rows, by (shard, subject_id, prediction_time, file order)
            lab = self.labels
            self._keys = np.lexsort((np.arange(self._n_items()), lab["prediction_time"],
                                     lab["subject_id"], self._label_shards))
        self.shuffle_buffer = int(shuffle_buffer)
        self.shuffle = self.shuffle_buffer > 0 if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            rank, world = (self.rank or 0), (self.world_size or 1)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world_size {world}")
        return rank, world

    def _epoch_order(self) -> np.ndarray:
        if not self.shuffle:
            return self._keys
        rng = np.random.default_rng((self.seed, self.epoch))
        return self._keys[rng.permutation(len(self._keys))]

    def subjects_for(self, rank: int, world_size: int, worker_id: int = 0,
                     num_workers: int = 1) -> np.ndarray:
        """The subject ids one (rank, worker) reads this epoch, before the shuffle buffer
        (label row indices in label mode)."""
        g = rank * num_workers + worker_id
        return self._epoch_order()[g::world_size * num_workers]

    def num_samples(self, num_workers: int = 0) -> int:
        """Samples this rank yields per epoch with a DataLoader of ``num_workers`` (all its
        workers together). Deliberately not ``__len__``: the count depends on num_workers."""
        rank, world = self._rank_world()
        nw = max(1, int(num_workers))
        return sum(len(self.subjects_for(rank, world, w, nw)) for w in range(nw))

    def __iter__(self) -> Iterator[dict]:
        rank, world = self._rank_world()
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        sids = self.subjects_for(rank, world, wid, nw)
        if self.shuffle and self.shuffle_buffer > 1:
            sids = _buffer_shuffle(sids, self.shuffle_buffer,
                                   np.random.default_rng((self.seed, self.epoch,
                                                          rank * nw + wid)))
        load = self.load if self.labels is None else self.load_row
        for key in sids:
            yield load(key)


def _buffer_shuffle(ids: np.ndarray, size: int, rng) -> list:
    """Classic streaming shuffle buffer over ids (deterministic given rng)."""
    out, buf = [], []
    for sid in ids.tolist():
        if len(buf) < size:
            buf.append(sid)
            continue
        j = int(rng.integers(size))
        out.append(buf[j])
        buf[j] = sid
    rng.shuffle(buf)
    out.extend(buf)
    return out
