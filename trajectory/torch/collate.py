"""Batching: `collate_trajectories` pads to [B, L], `collate_packed` concatenates with offsets;
both fill tensors carved from one (shared-memory) allocation."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .items import EVENT_FIELDS, TORCH_DTYPES
from .labels import LABEL_IDS


def _arena(specs: dict) -> dict:
    """Uninitialised tensors (name -> (shape, dtype)) carved out of ONE allocation. In a
    DataLoader worker it is shared memory: the batch then crosses to the main process as one
    file descriptor, not one per tensor (~0.5 ms each under the default sharing strategy,
    half a task item's cost on the demo), and is never copied into shared memory again."""
    at, total = {}, 0
    for name, (shape, dt) in specs.items():
        at[name] = total
        total += -(-math.prod(shape) * dt.itemsize // 64) * 64  # aligned for any dtype
    total = max(total, 64)  # an empty batch: no zero-byte shared segment
    if get_worker_info() is not None and hasattr(torch.UntypedStorage, "_new_shared"):
        base = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total))
    elif get_worker_info() is not None:
        base = torch.empty(total, dtype=torch.uint8).share_memory_()
    else:
        base = torch.empty(total, dtype=torch.uint8)
    return {name: base[at[name]:at[name] + math.prod(shape) * dt.itemsize].view(dt)
            .view(shape) for name, (shape, dt) in specs.items()}


def _batch_specs(batch: list[dict], fields: dict) -> dict:
    """The arena specs of a collate's fields, plus the [B] label and id fields items have."""
    B, first = len(batch), (batch[0] if batch else {})
    specs = {"subject_id": ((B,), torch.int64), "lengths": ((B,), torch.int64), **fields}
    if "label" in first:
        specs["label"] = ((B,), torch.as_tensor(first["label"]).dtype)
    for key in ("prediction_time",) + LABEL_IDS:
        if key in first:
            specs[key] = ((B,), torch.int64)
    return specs


def _fill_small(out: dict, batch: list[dict]) -> None:
    """subject_id and the label fields, written into the arena's [B] tensors."""
    for key in ("subject_id", "prediction_time") + LABEL_IDS:
        if key in out:
            out[key].numpy()[:] = [it[key] for it in batch]
    if "label" in out and batch:
        torch.stack([torch.as_tensor(it["label"]) for it in batch], out=out["label"])


def collate_trajectories(batch: list[dict], max_len: int | None = None) -> dict:
    """Pad a list of items to [B, L] tensors (L = longest length, capped at ``max_len``,
    keeping each patient's LAST events). Padding is 0 in every field; ``attention_mask``
    (bool, True = real event) and ``lengths`` mark the real events. ``subject_id`` is [B]
    int64. ``text``/``windows`` pass through as lists when present. The batch's tensors share
    one allocation (see ``_arena``): keeping any of them keeps the whole batch's memory."""
    B = len(batch)
    lengths = np.array([it["length"] for it in batch], dtype=np.int64)
    if max_len is not None:
        lengths = np.minimum(lengths, int(max_len))
    L = int(lengths.max()) if B else 0
    fields = {name: ((B, L), TORCH_DTYPES[dt]) for name, dt in EVENT_FIELDS.items()}
    out = _arena(_batch_specs(batch, {**fields, "attention_mask": ((B, L), torch.bool)}))
    out["lengths"].numpy()[:] = lengths
    _fill_small(out, batch)
    for name in EVENT_FIELDS:
        t = out[name].numpy()  # numpy slicing: a tenth of torch's per-call overhead
        for b, it in enumerate(batch):
            n = int(lengths[b])
            src = it[name].numpy()
            t[b, :n] = src[len(src) - n:]
            t[b, n:] = 0
    np.less(np.arange(L), lengths[:, None], out=out["attention_mask"].numpy())
    for key in ("text", "windows"):
        if batch and key in batch[0]:
            if key == "text" and max_len is not None:
                out[key] = [it[key][len(it[key]) - int(n):] if n else []
                            for it, n in zip(batch, lengths.tolist())]
            else:
                out[key] = [it[key] for it in batch]
    return out


def collate_packed(batch: list[dict]) -> dict:
    """Concatenate a batch into 1-D tensors (no padding): patient b's events are
    ``[offsets[b], offsets[b+1])``. Also ``lengths`` [B] and ``subject_id`` [B]. The batch's
    tensors share one allocation (see ``_arena``)."""
    lengths = np.array([it["length"] for it in batch], dtype=np.int64)
    total = int(lengths.sum())
    fields = {name: ((total,), TORCH_DTYPES[dt]) for name, dt in EVENT_FIELDS.items()}
    out = _arena(_batch_specs(batch, {"offsets": ((len(batch) + 1,), torch.int64), **fields}))
    out["lengths"].numpy()[:] = lengths
    out["offsets"].numpy()[0] = 0
    np.cumsum(lengths, out=out["offsets"].numpy()[1:])
    _fill_small(out, batch)
    for name in EVENT_FIELDS:
        if batch:
            np.concatenate([it[name].numpy() for it in batch], out=out[name].numpy())
    for key in ("text", "windows"):
        if batch and key in batch[0]:
            out[key] = [it[key] for it in batch]
    return out
