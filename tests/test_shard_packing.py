"""Patient buckets are packed into shards of near-equal size, deterministically."""
import numpy as np

from trajectory.events.plan import BUCKETS_PER_SHARD, bucket_of, shards_of_buckets


def test_every_bucket_once_and_shards_balanced():
    rng = np.random.default_rng(0)
    n_shards = 41
    # 10,000 patients of heavy-tailed sizes (as demo x100), hashed into buckets
    patient_rows = rng.lognormal(8.5, 1.0, 10_000)
    ids = rng.choice(np.arange(10_000_000, 20_000_000), 10_000, replace=False)
    rows = np.bincount(bucket_of(ids, n_shards * BUCKETS_PER_SHARD), weights=patient_rows,
                       minlength=n_shards * BUCKETS_PER_SHARD).astype(np.int64)
    shards = shards_of_buckets(rows, n_shards)
    flat = sorted(b for s in shards for b in s)
    assert flat == list(range(len(rows)))
    sizes = np.array([rows[s].sum() for s in shards])
    # patients hashed straight into shards, for comparison
    naive = np.bincount(bucket_of(ids, n_shards), weights=patient_rows)
    assert sizes.max() / sizes.mean() < 1.05 < naive.max() / naive.mean()
    assert shards_of_buckets(rows, n_shards) == shards  # input-determined


def test_empty_buckets_and_ties():
    shards = shards_of_buckets(np.zeros(8, np.int64), 2)
    assert sorted(map(len, shards)) == [4, 4]
    assert shards_of_buckets(np.array([5, 5, 5, 5]), 2) == [[0, 2], [1, 3]]


def test_bucket_of_is_stable_and_in_range():
    ids = np.array([10000032, 10000033, 19999999, 9910040025])
    b = bucket_of(ids, 328)
    assert ((0 <= b) & (b < 328)).all()
    assert np.array_equal(b, bucket_of(ids.copy(), 328))
