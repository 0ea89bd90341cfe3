"""prefetch hands over every item in order and re-raises the producer's error."""
import pytest

from trajectory.raw.read import prefetch


def test_items_in_order():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))


def test_producer_error_reaches_the_consumer():
    def items():
        yield 1
        raise ValueError("chartevents.csv.gz: column 'valuenum' expected double")

    got = []
    with pytest.raises(ValueError, match="valuenum"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [1]


def test_consumer_stopping_early_stops_the_producer():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    for x in prefetch(items(), depth=2):
        if x == 3:
            break
    assert len(produced) < 10
