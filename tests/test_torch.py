"""PyTorch datasets over the real demo build: coverage per epoch, DDP/worker sharding,
shuffle determinism, padded round-trip, cropping; and the stable splits."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from trajectory import open_version  # noqa: E402
from trajectory.splits import split_of  # noqa: E402
from trajectory.torch import (EVENT_FIELDS, TrajectoryDataset,  # noqa: E402
                              TrajectoryIterableDataset, collate_packed,
                              collate_trajectories)


def subject_ids_only(batch):
    """Module-level (picklable) collate: just the subject ids of a batch."""
    return [it["subject_id"] for it in batch]


@pytest.fixture(scope="module")
def vdir(demo_build):
    cfg, _ = demo_build
    return cfg.version_dir


@pytest.fixture(scope="module")
def all_sids(vdir):
    return sorted(open_version(vdir).subject_ids)


def _epoch(ds, num_workers):
    dl = DataLoader(ds, batch_size=7, num_workers=num_workers, collate_fn=subject_ids_only)
    return [s for batch in dl for s in batch]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_patient_once_per_epoch(vdir, all_sids, num_workers):
    assert len(all_sids) == 100
    it = TrajectoryIterableDataset(vdir, with_windows=False)
    got = _epoch(it, num_workers)
    assert sorted(got) == all_sids and len(got) == len(set(got))
    mp = TrajectoryDataset(vdir, with_windows=False)
    got = _epoch(mp, num_workers)
    assert got == all_sids


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_ranks_cover_everything_once(vdir, all_sids, num_workers):
    seen = []
    per_rank = []
    for rank in (0, 1):
        ds = TrajectoryIterableDataset(vdir, rank=rank, world_size=2, with_windows=False,
                                       shuffle_buffer=4, seed=3)
        got = _epoch(ds, num_workers)
        assert len(got) == ds.num_samples(num_workers)
        per_rank.append(len(got))
        seen += got
    assert sorted(seen) == all_sids
    assert abs(per_rank[0] - per_rank[1]) <= max(1, num_workers)


def test_stream_order_is_shard_then_subject(vdir):
    m = open_version(vdir).manifest.sort(["shard", "subject_id"])
    ds = TrajectoryIterableDataset(vdir, with_windows=False)
    assert [it["subject_id"] for it in ds] == m["subject_id"].to_list()


def test_shuffle_epochs_differ_but_reproduce(vdir, all_sids):
    def order(epoch, seed=0):
        ds = TrajectoryIterableDataset(vdir, shuffle_buffer=8, seed=seed, with_windows=False)
        ds.set_epoch(epoch)
        return [int(s) for s in ds.subjects_for(0, 1)], ds

    e0, ds = order(0)
    e1, _ = order(1)
    assert e0 != e1 and sorted(e0) == sorted(e1) == all_sids
    assert order(0)[0] == e0
    assert order(0, seed=1)[0] != e0
    # full streams (permutation + buffer) are reproducible too
    ds.set_epoch(1)
    a = [it["subject_id"] for it in ds]
    ds2 = TrajectoryIterableDataset(vdir, shuffle_buffer=8, with_windows=False)
    ds2.set_epoch(1)
    assert a == [it["subject_id"] for it in ds2] and sorted(a) == all_sids
    ds2.set_epoch(2)
    assert [it["subject_id"] for it in ds2] != a


def test_padded_batch_round_trips(vdir):
    v = open_version(vdir)
    ds = TrajectoryDataset(vdir)
    items = [ds[i] for i in range(5)]
    b = collate_trajectories(items)
    L = int(b["lengths"].max())
    assert b["time"].shape == (5, L) and b["attention_mask"].dtype == torch.bool
    for i, sid in enumerate(b["subject_id"].tolist()):
        ev = v.raw(sid)["events"]
        n = int(b["lengths"][i])
        assert n == len(ev["time"]) == int(b["attention_mask"][i].sum())
        ev = {**ev, "known_time": ev["time"] + ev["known_delta"]}
        for name in EVENT_FIELDS:
            got = b[name][i, :n].numpy()
            np.testing.assert_array_equal(got, ev[name].astype(got.dtype))
            assert (b[name][i, n:] == 0).all()
    # items are writable, windows are float32 [T, F, S]
    items[0]["time"][0] = 1
    w = items[0]["windows"]
    if w:
        assert w[0]["data"].dtype == torch.float32 and w[0]["data"].dim() == 3
        assert {"start", "step", "features", "stats", "kind", "id"} <= set(w[0])
    # max_len keeps the last events; packed collate matches the padded one
    short = collate_trajectories(items, max_len=10)
    assert short["time"].shape[1] == 10
    assert torch.equal(short["code"][0], items[0]["code"][-10:])
    p = collate_packed(items)
    assert p["offsets"].tolist() == [0] + np.cumsum(b["lengths"].numpy()).tolist()
    for i in range(5):
        s, e = p["offsets"][i], p["offsets"][i + 1]
        assert torch.equal(p["code"][s:e], b["code"][i, :b["lengths"][i]])


def test_cropping(vdir):
    v = open_version(vdir)
    ds = TrajectoryDataset(vdir, with_text=True)
    # a patient with an ICU stay
    for sid in ds.subject_ids:
        raw = v.raw(int(sid))
        ev = raw["events"]
        stays = np.unique(ev["stay_id"][ev["stay_id"] >= 0])
        if len(stays) and len(ev["time"]) > 50:
            break
    sid = int(sid)
    full = TrajectoryDataset(vdir, subjects=[sid], with_text=True)[0]
    assert len(full["text"]) == full["length"]

    last = TrajectoryDataset(vdir, subjects=[sid], max_events=20)[0]
    assert last["length"] == 20 and torch.equal(last["time"], full["time"][-20:])

    t = ev["time"]
    t0, t1 = int(np.quantile(t, 0.25)), int(np.quantile(t, 0.75))
    tr = TrajectoryDataset(vdir, subjects=[sid], time_range=(t0, t1))[0]
    keep = (t >= t0) & (t < t1)
    assert tr["length"] == keep.sum() and torch.equal(tr["code"], torch.from_numpy(
        ev["code"][keep].astype(np.int64)))

    stay = int(stays[0])
    st = TrajectoryDataset(vdir, subjects=[sid], stay=stay, max_events=5)[0]
    idx = np.flatnonzero(ev["stay_id"] == stay)[-5:]
    np.testing.assert_array_equal(st["time"].numpy(), t[idx])
    assert all(w["kind"] == "stay" and int(w["id"]) == stay for w in st["windows"])


def test_split_dataset_filters(vdir, all_sids):
    parts = {s: TrajectoryDataset(vdir, split=s, with_windows=False).subject_ids.tolist()
             for s in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == all_sids
    expected = split_of(all_sids)
    assert parts["val"] == [s for s, p in zip(all_sids, expected) if p == "val"]


def test_splits_stable_disjoint_covering():
    ids = np.arange(10_000_000, 10_100_000)
    a = split_of(ids, seed=0)
    assert np.array_equal(a, split_of(ids, seed=0))
    assert set(np.unique(a)) == {"train", "val", "test"}  # each id gets exactly one
    for name, frac in zip(("train", "val", "test"), (0.8, 0.1, 0.1)):
        assert abs((a == name).mean() - frac) < 0.01
    # per-subject: independent of which other ids are asked about
    assert np.array_equal(split_of(ids[::7]), a[::7])
    assert not np.array_equal(split_of(ids, seed=1), a)
    b = split_of(ids, fractions=(0.5, 0.25, 0.25))
    assert abs((b == "test").mean() - 0.25) < 0.01
    with pytest.raises(ValueError):
        split_of(ids, fractions=(0.5, 0.5, 0.5))


def test_import_trajectory_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, trajectory, trajectory.splits; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
