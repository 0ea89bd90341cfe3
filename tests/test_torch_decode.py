"""The loader inflates only the record parts an item uses and keeps the last record it read:
items must equal the full record's whatever the order, options and pickling."""
import pickle

import numpy as np
import pytest

pytest.importorskip("torch")

from trajectory import open_version  # noqa: E402
from trajectory.torch import TrajectoryDataset  # noqa: E402


@pytest.mark.parametrize("max_events", [None, 2500])
def test_items_match_full_records_in_any_order(demo_build, max_events):
    cfg, _ = demo_build
    vdir = cfg.version_dir
    v = open_version(vdir)
    raws = {s: v.raw(s) for s in v.subject_ids[:20]}
    # subjects with ICU windows and with texts, so that both optional keys are exercised
    sids = [s for s, r in raws.items() if r["windows"] and r["texts"]][:3]
    assert len(sids) == 3
    order = [sids[0], sids[1], sids[1], sids[0], sids[2], sids[2]]  # misses and reuses
    for text, windows in [(False, False), (True, False), (False, True), (True, True)]:
        ds = TrajectoryDataset(vdir, subjects=sids, with_text=text, with_windows=windows,
                               max_events=max_events)
        reads = []
        read_bytes = ds.reader.read_bytes
        ds.reader.read_bytes = lambda s, read_bytes=read_bytes: reads.append(s) or read_bytes(s)
        for sid in order:
            item, raw = ds.load(sid), raws[sid]
            tail = slice(-max_events if max_events else None, None)  # the last events
            for name in ("time", "code", "concept_value"):
                np.testing.assert_array_equal(
                    item[name].numpy(), raw["events"][name][tail].astype(item[name].numpy().dtype))
            assert ("text" in item) == text and ("windows" in item) == windows
            if text:
                lookup = list(raw["texts"]) + [None]
                assert item["text"] == [lookup[i] for i in raw["events"]["text"][tail]]
            if windows:
                assert [w["data"].shape for w in item["windows"]] == \
                    [tuple(w["data"].shape) for w in raw["windows"]]
                np.testing.assert_array_equal(item["windows"][0]["data"].numpy(),
                                              raw["windows"][0]["data"])
        assert reads == [sids[0], sids[1], sids[0], sids[2]]  # a repeat is not read again
    # the kept record is keyed by the options too: turning windows on decodes them
    ds = TrajectoryDataset(vdir, subjects=sids, with_windows=False)
    assert "windows" not in ds.load(sids[0])
    ds.with_windows = True
    assert len(ds.load(sids[0])["windows"]) == len(raws[sids[0]]["windows"])
    # pickling (spawned DataLoader workers) drops the decoder and the kept record
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._last is None and copy._dctx is None
    np.testing.assert_array_equal(copy.load(sids[1])["time"].numpy(),
                                  raws[sids[1]]["events"]["time"])


@pytest.mark.parametrize("collate", ["padded", "packed"])
def test_worker_batches_equal_in_process_ones(demo_build, collate):
    """A worker's batch is built in one shared-memory block (one file descriptor to the main
    process): it must hold exactly what the same collate gives in-process."""
    from torch.utils.data import DataLoader

    from trajectory.torch import collate_packed, collate_trajectories

    cfg, _ = demo_build
    fn = collate_trajectories if collate == "padded" else collate_packed
    ds = TrajectoryDataset(cfg.version_dir, subjects=open_version(cfg.version_dir).subject_ids[:9],
                           max_events=300, with_windows=False)
    expect = list(DataLoader(ds, batch_size=4, collate_fn=fn))
    got = list(DataLoader(ds, batch_size=4, collate_fn=fn, num_workers=2))
    assert len(got) == len(expect) == 3
    for g, e in zip(got, expect):
        assert g.keys() == e.keys()
        for k in e:
            assert g[k].dtype == e[k].dtype, k
            np.testing.assert_array_equal(g[k].numpy(), e[k].numpy(), err_msg=k)  # NaN == NaN
        # one allocation per batch, in the worker and once received
        assert len({t.untyped_storage().data_ptr() for t in g.values()}) == 1
    assert expect[0]["time"].shape == ((4, 300) if collate == "padded" else (1200,))
