"""PyTorch datasets over a built trajectory version (optional: needs `pip install torch`).

    from trajectory.torch import TrajectoryDataset, collate_trajectories
    ds = TrajectoryDataset("trajectories/v1", split="train", max_events=4096)
    dl = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=4,
                                     collate_fn=collate_trajectories)

Conventions
-----------
* An item is one patient: a dict with ``subject_id`` (int), ``length`` (int) and 1-D tensors
  ``time`` int64 (epoch seconds), ``code`` int64 (row of codes.parquet), ``value`` float32
  (NaN when none), ``source`` uint8, ``flags`` uint8, ``concept`` int64 (-1 when none),
  ``concept_value`` float32 (NaN when none), ``known_time`` int64 (epoch seconds the event
  became known: a lab's result, a note's signature; >= ``time``); ``text`` (list of str | None, one per event) when
  ``with_text``; ``windows`` (list of dicts: ``data`` float32 tensor [T, F, S], ``start``,
  ``step``, ``features``, ``stats``, ``kind``, ``id``) when ``with_windows``.
  Tensors own writable memory (one copy out of the decoded record).
* Cropping, applied in this order: ``stay=stay_id`` keeps that ICU stay's events (and only
  that stay's windows); ``time_range=(t0, t1)`` keeps events with t0 <= time < t1 (windows are
  not cropped); ``max_events=N`` keeps the LAST N remaining events.
* Task-cut samples: with ``task=NAME`` (``VERSION_DIR/tasks/NAME.parquet``, written by
  ``python build_patient_files.py tasks VERSION_DIR``) or ``labels=PATH`` (any parquet in the
  MEDS label schema: ``subject_id`` integer, ``prediction_time`` datetime, and exactly one of
  ``boolean_value`` / ``integer_value`` / ``float_value`` / ``categorical_value`` holding
  values, e.g. ACES' output over a MEDS export) an item is one LABEL ROW, not one patient. It
  holds the patient's events KNOWN at the prediction time, ``known_time <= prediction_time``
  (inclusive: an event known at the prediction time is usable then; ``prediction_time`` is
  floored to whole seconds, the events' resolution), only the window rows that END at or
  before it (row ``w`` of a block is kept when ``start + (w+1)*step <= prediction_time``; a
  block whose first window ends later is dropped whole), each row counting only the values
  known at the prediction time, so the rows aggregate the item's own events
  (grids.rows_known_at: a block is recounted only when a value of it was charted before the
  prediction time and known after), ``label`` (0-d tensor: bool, int64, float32, or int64 index into
  ``dataset.label_classes`` for categorical labels) and ``prediction_time`` (int, epoch
  seconds), plus ``hadm_id``/``stay_id`` (int, -1 when null) when the labels file, or its
  ``<name>.ids.parquet`` sidecar from the tasks command, has those columns. The cut comes first, then ``stay``, ``time_range`` and ``max_events`` (the LAST N
  events before the cut). ``cut_rule="charttime"`` cuts as MEDS, ACES and the benchmarks
  do instead, to compare with them: events with ``time <= prediction_time`` (a lab drawn
  before it and resulted after it is in) and window rows counting every value charted in
  them; README "What was known when" measures the difference. ``split`` still goes by subject: a row is in the split of its
  ``subject_id``, so no patient's rows straddle train and test.
* Splits come from :func:`trajectory.splits.split_of` (a stable hash of subject_id and
  ``split_seed``), so they never depend on the process or on which other subjects exist.
* The version is opened lazily, once per process (DataLoader workers re-open it after a
  fork or spawn); datasets pickle without open file state.
* :class:`TrajectoryIterableDataset` streams subjects sorted by (shard, subject_id) and splits
  them over DDP ranks and DataLoader workers by striding over the global worker index
  ``rank * num_workers + worker_id``: every subject is yielded exactly once per epoch across
  all ranks and workers, none dropped or repeated. Ranks therefore may get different numbers
  of samples (by at most ``num_workers``, by one when num_workers <= 1); use
  ``drop_last``/join logic in DDP if equal step counts matter. With labels the same holds
  for label rows, sorted by (shard, subject_id, prediction_time).
* :func:`collate_trajectories` pads with 0 (``value`` and ``concept_value`` too, although
  real events may hold NaN there); ``attention_mask`` (True = real event) is what tells
  padding apart. ``max_len`` keeps each patient's last ``max_len`` events. Both collates
  stack ``label`` [B] and ``prediction_time`` [B] int64 (and ``hadm_id``/``stay_id``) when
  the items have them.
"""
from __future__ import annotations

try:
    import torch  # noqa: F401  (only to say what is missing)
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("trajectory.torch needs PyTorch, which is not installed: "
                      "pip install torch (see https://pytorch.org)") from e

from .collate import collate_packed, collate_trajectories  # noqa: E402
from .datasets import TrajectoryDataset, TrajectoryIterableDataset  # noqa: E402
from .items import EVENT_FIELDS  # noqa: E402
from .labels import LABEL_COLUMNS, read_labels  # noqa: E402

__all__ = ["TrajectoryDataset", "TrajectoryIterableDataset", "collate_trajectories",
           "collate_packed", "read_labels", "EVENT_FIELDS", "LABEL_COLUMNS"]
