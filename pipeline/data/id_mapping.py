"""Map raw ids (int64 or utf8 strings) to embedding rows, identically in training and scoring.

Every hash here is defined in this file with numpy, so the mapping cannot change when pyarrow,
numpy or Python change their own hashes (`pc.hash`, `hash()` are not stable across versions
or processes). Everything is vectorised: no Python loop over rows.

- int ids: splitmix64 (Steele et al., the finaliser of java.util.SplittableRandom) of the id's
  64 bits.
- strings: each utf8 byte b at position i of its string becomes splitmix64((i << 8) | b); the
  terms of a string are summed (mod 2**64) and the sum is finalised together with the length
  with splitmix64 again. Position enters every term, so anagrams differ.
- rows: a `vocab_size` table keeps int ids in [0, vocab_size) as they are and hashes the others
  (larger or negative) into the range; a `hash_buckets` table hashes every id. Strings are
  always hashed. Negative ids hash by their two's complement bits, like any other 64 bits.
- raw ids of managed tables (ple_model/managed_ids.py maps them to rows): the top 63 bits of
  the same hashes, so ints and strings alike become non-negative int64 (two ids share one only
  at a 2**-63 chance), kept below the two values reserved at the top: TorchRec's free-slot
  marker (2**63 - 1) and the id of a missing value (MISSING_RAW_ID).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_STRING_SALT = np.uint64(0x5851F42D4C957F2D)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Bijective 64-bit mixer; uint64 array arithmetic wraps mod 2**64 by design."""
    z = np.asarray(x).astype(np.uint64, copy=True)
    z += _GAMMA
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def hash_int64(ids: np.ndarray) -> np.ndarray:
    """Stable uint64 hash of int64 ids (two's complement bits)."""
    return splitmix64(np.asarray(ids, dtype=np.int64).view(np.uint64))


def hash_utf8(arr: pa.Array) -> np.ndarray:
    """Stable uint64 hash of every string of a (large_)string or dictionary<string> array."""
    if pa.types.is_dictionary(arr.type):
        # Hash each distinct string once, then gather: cheap for low-cardinality columns.
        return hash_utf8(arr.dictionary)[arr.indices.to_numpy(zero_copy_only=False)]
    offset_type: type[np.signedinteger]
    if pa.types.is_string(arr.type):
        offset_type = np.int32
    elif pa.types.is_large_string(arr.type):
        offset_type = np.int64
    else:
        raise TypeError(f"expected a string array, got {arr.type}")
    n = len(arr)
    # Offsets are absolute positions into the (unsliced) data buffer, so slices work as is.
    offsets = np.frombuffer(arr.buffers()[1], dtype=offset_type)[arr.offset : arr.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = arr.buffers()[2]
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data, dtype=np.uint8)[first:last] if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    # Position of each byte within its own string.
    starts = np.repeat(offsets[:-1] - first, lengths)
    pos = np.arange(last - first, dtype=np.int64) - starts
    terms = splitmix64((pos.astype(np.uint64) << np.uint64(8)) | data.astype(np.uint64))
    csum = np.zeros(len(terms) + 1, dtype=np.uint64)
    np.cumsum(terms, out=csum[1:])
    local = offsets - first
    sums = csum[local[1:]] - csum[local[:-1]]  # wrapping subtraction = segment sum mod 2**64
    return splitmix64(sums ^ (lengths.astype(np.uint64) * _STRING_SALT))


MISSING_RAW_ID = 2**63 - 2
_RAW_ID_MAX = np.int64(2**63 - 3)


def raw_ids(hashes: np.ndarray) -> np.ndarray:
    """Managed tables' int64 raw ids of uint64 hashes."""
    return np.minimum((hashes >> np.uint64(1)).astype(np.int64), _RAW_ID_MAX)


def managed_raw_ids(values: pa.Array, value_type: str) -> np.ndarray:
    """Raw ids of int64 or string ids (no nulls) for a managed table."""
    if value_type == "string":
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)  # hash each distinct string once
        return raw_ids(hash_utf8(values))
    return raw_ids(hash_int64(values.to_numpy(zero_copy_only=False)))


def int_ids_to_rows(ids: np.ndarray, num_rows: int, hash_all: bool) -> np.ndarray:
    """Rows in [0, num_rows) for any int64 ids (64-bit hashed ids are negative half the time)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not hash_all:
        beyond = (ids >= num_rows) | (ids < 0)
        if not beyond.any():  # the common case for a vocab table: ids are rows already
            return ids
        ids = ids.copy()
        ids[beyond] = (hash_int64(ids[beyond]) % np.uint64(num_rows)).astype(np.int64)
        return ids
    return (hash_int64(ids) % np.uint64(num_rows)).astype(np.int64)


def strings_to_rows(arr: pa.Array, num_rows: int) -> np.ndarray:
    if not pa.types.is_dictionary(arr.type):
        # Categorical strings repeat a lot: hash each distinct value once (Arrow's C++ hash table
        # only groups equal strings here; the row number comes from hash_utf8 alone).
        arr = pc.dictionary_encode(arr)
    # Row of each distinct string, then a gather: the 64-bit modulo runs once per distinct value.
    return np.take(_dictionary_rows(arr.dictionary, num_rows), arr.indices.to_numpy(zero_copy_only=False))


_ROWS_CACHE: OrderedDict = OrderedDict()
_ROWS_CACHE_ENTRIES, _ROWS_CACHE_MAX_BYTES = 64, 1 << 20
_ROWS_CACHE_LOCK = threading.Lock()  # scorers and readers may collate in threads


def _dictionary_rows(dictionary: pa.Array, num_rows: int) -> np.ndarray:
    """Rows of a dictionary's strings. Consecutive batches (slices of one file or block) share
    their dictionary, and hashing even 3 strings costs ~25 us of numpy calls, ~3 ns a row of a
    batch of 8192: small dictionaries are remembered by content (copied bytes, not a reference
    that would pin the block they live in)."""
    string_type = pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)
    if not string_type or dictionary.buffers()[2] is None:  # hash_utf8 raises / handles these
        return _rows_of(dictionary, num_rows)
    width = 8 if pa.types.is_large_string(dictionary.type) else 4
    n, off = len(dictionary), dictionary.offset
    offsets = memoryview(dictionary.buffers()[1])[off * width : (off + n + 1) * width]
    first, last = (int.from_bytes(offsets[i : i + width], "little") for i in (0, len(offsets) - width))
    if last - first > _ROWS_CACHE_MAX_BYTES:
        return _rows_of(dictionary, num_rows)
    key = (num_rows, width, bytes(offsets), bytes(memoryview(dictionary.buffers()[2])[first:last]))
    with _ROWS_CACHE_LOCK:
        rows = _ROWS_CACHE.get(key)
        if rows is not None:
            _ROWS_CACHE.move_to_end(key)
            return rows
    rows = _rows_of(dictionary, num_rows)
    with _ROWS_CACHE_LOCK:
        _ROWS_CACHE[key] = rows
        if len(_ROWS_CACHE) > _ROWS_CACHE_ENTRIES:
            _ROWS_CACHE.popitem(last=False)
    return rows


def _rows_of(strings: pa.Array, num_rows: int) -> np.ndarray:
    return (hash_utf8(strings) % np.uint64(num_rows)).astype(np.int64)
