import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.id_mapping import hash_int64, hash_utf8, int_ids_to_rows, splitmix64, strings_to_rows


def test_splitmix64_matches_reference():
    # Reference outputs of SplitMix64 (Steele, Lea, Flood 2014; Vigna's splitmix64.c) seeded
    # with 0: the k-th output is splitmix64 applied to k * gamma. Pins the mapping forever.
    gamma = np.uint64(0x9E3779B97F4A7C15)
    states = np.arange(3, dtype=np.uint64) * gamma
    assert [hex(int(v)) for v in splitmix64(states)] == [
        "0xe220a8397b1dcdaf",
        "0x6e789e6aa1b965f4",
        "0x6c45d188009454f",
    ]


def test_string_hash_same_for_all_arrow_layouts():
    words = ["", "a", "ab", "ba", "cat_0001", "héllo", "x" * 300]
    plain = hash_utf8(pa.array(words))
    assert len(set(plain.tolist())) == len(words)  # anagrams and prefixes differ
    assert np.array_equal(hash_utf8(pa.array(words, pa.large_string())), plain)
    assert np.array_equal(hash_utf8(pa.array(words).dictionary_encode()), plain)
    # slices keep absolute offsets into the data buffer
    assert np.array_equal(hash_utf8(pa.array(["pad"] + words).slice(1)), plain)
    assert np.array_equal(strings_to_rows(pa.array(words), 1000), (plain % np.uint64(1000)).astype(np.int64))


def test_vocab_table_keeps_small_ids_and_hashes_large_ones():
    ids = np.array([0, 5, 99, 100, 10**12, 2**62])
    rows = int_ids_to_rows(ids, 100, hash_all=False)
    assert rows[:3].tolist() == [0, 5, 99]
    assert ((rows >= 0) & (rows < 100)).all()
    assert rows[3] == int(hash_int64(np.array([100]))[0] % np.uint64(100))


def test_hash_buckets_spread_evenly():
    rng = np.random.default_rng(0)
    ids = rng.choice(10**15, size=200_000, replace=False)
    rows = int_ids_to_rows(ids, 100, hash_all=True)
    counts = np.bincount(rows, minlength=100)
    # 2000 expected per bucket; binomial sd ~44, so 6 sd bounds
    assert counts.min() > 2000 - 270 and counts.max() < 2000 + 270


@pytest.mark.parametrize("n", [1, 7, 1 << 20])
def test_rows_in_range(n):
    ids = np.arange(0, 5000, dtype=np.int64) * 7919
    assert (int_ids_to_rows(ids, n, hash_all=True) < n).all()
    words = pa.array([f"w{i}" for i in range(1000)])
    r = strings_to_rows(words, n)
    assert ((r >= 0) & (r < n)).all()


def test_remembered_dictionary_rows_follow_content_not_identity():
    """strings_to_rows remembers the rows of small dictionaries by their bytes: the same
    strings in another order, a slice of a dictionary, or another table size must each get
    their own rows, equal to hashing the plain strings."""
    words = ["a", "bb", "ccc", "a", "bb"]

    def expected(values, n):
        return (hash_utf8(pa.array(values)) % np.uint64(n)).astype(np.int64)

    for values, n in [(words, 1000), (words[::-1], 1000), (words, 7), (words[1:], 1000)]:
        for _ in range(2):  # the second call is served from what the first remembered
            arr = pa.array(values).dictionary_encode()
            assert np.array_equal(strings_to_rows(arr, n), expected(values, n))
    # A dictionary that is a slice of a larger one (offset into shared buffers).
    dictionary = pa.array(["x", "a", "bb", "ccc"]).slice(1)
    sliced = pa.DictionaryArray.from_arrays(pa.array([1, 2, 1, 0], pa.int32()), dictionary)
    assert np.array_equal(strings_to_rows(sliced, 1000), expected(["bb", "ccc", "bb", "a"], 1000))
