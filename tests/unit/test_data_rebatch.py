"""pipeline/data/rebatch.py: Ray Data blocks cut into batches of exactly batch_size rows."""

import pyarrow as pa
import pytest

from pipeline.data.rebatch import rebatched


def blocks(sizes):
    start = 0
    for n in sizes:
        yield pa.table(
            {
                "row": pa.array(range(start, start + n), pa.int64()),
                "tag": pa.array([f"t{i % 3}" for i in range(n)]).dictionary_encode(),
            }
        )
        start += n


def rows(tables):
    return [r for t in tables for r in t.column("row").to_pylist()]


@pytest.mark.parametrize("sizes", [[10], [3, 3, 3, 1], [25, 0, 2, 13], [1] * 17, [4, 4]])
def test_batches_are_full_in_order_and_lose_nothing(sizes):
    total = sum(sizes)
    out = list(rebatched(blocks(sizes), 4))
    assert [t.num_rows for t in out] == [4] * (total // 4) + ([total % 4] if total % 4 else [])
    assert rows(out) == list(range(total))
    kept = list(rebatched(blocks(sizes), 4, drop_last=True))
    assert [t.num_rows for t in kept] == [4] * (total // 4)
    assert rows(kept) == list(range(total // 4 * 4))


def test_a_batch_across_two_blocks_keeps_both_dictionaries():
    first = pa.table({"tag": pa.array(["a", "b", "a"]).dictionary_encode()})
    second = pa.table({"tag": pa.array(["c", "a", "c"]).dictionary_encode()})
    out = list(rebatched([first, second], 4))
    assert [t.column("tag").to_pylist() for t in out] == [["a", "b", "a", "c"], ["a", "c"]]


def test_local_shuffle_permutes_every_row_once_and_is_seeded():
    sizes = [7, 30, 5, 20]
    a = rows(rebatched(blocks(sizes), 8, shuffle_rows=16, seed=3))
    b = rows(rebatched(blocks(sizes), 8, shuffle_rows=16, seed=3))
    c = rows(rebatched(blocks(sizes), 8, shuffle_rows=16, seed=4))
    assert sorted(a) == list(range(sum(sizes)))
    assert a == b and a != c and a != sorted(a)
    # Mixing is local: the first window is the first two blocks (7 + 30 rows, the first at
    # least 16), whose 4 full batches come out first; its 5 leftover rows join the next one.
    assert set(a[:32]) < set(range(37))


def test_rejects_a_batch_size_below_one():
    with pytest.raises(ValueError, match="batch_size"):
        list(rebatched(blocks([3]), 0))
