"""The Ray Data reader: every row of a day range once, shards for Ray Train, errors naming the
file, the same batches as the local reader, string ids as dictionaries."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.reader_logs import DAYS, ROWS_PER_FILE, write_reader_logs
from pipeline.data.collate import collate
from pipeline.data.feature_spec import load_spec
from pipeline.data.files import list_day_files, read_days
from pipeline.data.reader import iter_file_batches, iter_ray_batches
from pipeline.data.synthetic import generate_table
from pipeline.data.validation import DataValidationError


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "configs" / "features" / "synthetic.yaml")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_reader_logs(tmp_path_factory.mktemp("logs"))


def _expected(root, days, column):
    return np.concatenate(
        [pq.read_table(p, columns=[column])[column].to_numpy() for p in list_day_files(str(root), days[0], days[-1])]
    )


def test_ray_reader_reads_every_row_of_the_range_once(ray_local, root, spec):
    ds = read_days(str(root), DAYS[1], DAYS[3], spec)  # day 1 (with the garbage file) excluded
    batches = list(iter_ray_batches(ds, spec, batch_size=1000))
    assert sum(len(b) for b in batches) == 6 * ROWS_PER_FILE
    assert all(len(b) == 1000 for b in batches[:-1])
    users = np.concatenate([b.sparse_features.to_dict()["user_id"].values().numpy() for b in batches])
    clicks = np.concatenate([b.labels[:, 0].numpy() for b in batches])
    assert np.array_equal(np.sort(users), np.sort(_expected(root, DAYS[1:], "user_id")))
    assert clicks.sum() == _expected(root, DAYS[1:], "click").sum()


def test_including_a_bad_day_fails_with_the_file_name(ray_local, root, spec):
    with pytest.raises(DataValidationError, match="part-99999.parquet.*not a readable Parquet file"):
        read_days(str(root), DAYS[0], DAYS[1], spec)


def test_shards_from_streaming_split_and_ray_train(ray_local, root, spec, monkeypatch):
    ds = read_days(str(root), DAYS[2], DAYS[3], spec)
    shards = ds.streaming_split(2, equal=True)
    # Inside a Ray Train worker, iter_ray_batches("train") asks ray.train for the shard.
    import ray.train

    monkeypatch.setattr(ray.train, "get_dataset_shard", lambda name: {"train": shards[0]}.get(name))
    # streaming_split shards must be consumed concurrently; a thread runs the second one.
    import threading

    counts = {}
    t = threading.Thread(
        target=lambda: counts.__setitem__(1, sum(len(b) for b in iter_ray_batches(shards[1], spec, 500)))
    )
    t.start()
    counts[0] = sum(len(b) for b in iter_ray_batches("train", spec, 500))
    t.join()
    assert counts == {0: 2 * ROWS_PER_FILE, 1: 2 * ROWS_PER_FILE}  # equal split, every row once
    with pytest.raises(ValueError, match="no dataset named 'eval'"):
        next(iter_ray_batches("eval", spec, 500))


def test_value_error_in_a_ray_batch_names_the_file(ray_local, tmp_path, spec):
    good, bad = generate_table(500, seed=1), generate_table(500, seed=2)
    click = bad["click"].to_numpy()
    conv = bad["conversion"].to_numpy().copy()
    conv[np.flatnonzero(click == 0)[:4]] = 1
    bad = bad.set_column(bad.schema.get_field_index("conversion"), "conversion", pa.array(conv))
    (tmp_path / "dt=2024-01-01").mkdir()
    pq.write_table(good, tmp_path / "dt=2024-01-01" / "part-00000.parquet")
    pq.write_table(bad, tmp_path / "dt=2024-01-01" / "part-00001.parquet")
    for include_paths in (False, True):
        ds = read_days(str(tmp_path), "2024-01-01", "2024-01-01", spec, include_paths=include_paths)
        with pytest.raises(DataValidationError) as err:
            list(
                iter_ray_batches(
                    ds, spec, batch_size=1000, files=list_day_files(str(tmp_path), "2024-01-01", "2024-01-01")
                )
            )
        assert "part-00001.parquet" in str(err.value) and "part-00000" not in str(err.value)
        assert err.value.column == "conversion" and err.value.count == 4


def test_local_reader_matches_ray_reader(ray_local, root, spec):
    files = list_day_files(str(root), DAYS[2], DAYS[2])
    local = list(iter_file_batches(files, spec, 700))
    assert sum(len(b) for b in local) == 2 * ROWS_PER_FILE
    ray_batches = list(iter_ray_batches(read_days(str(root), DAYS[2], DAYS[2], spec), spec, 700))
    a = np.sort(np.concatenate([b.dense_features[:, 0].numpy() for b in local]))
    b = np.sort(np.concatenate([b.dense_features[:, 0].numpy() for b in ray_batches]))
    assert np.array_equal(a, b)


def _sorted_id_rows(batches) -> np.ndarray:
    """(user_id, category, device) rows of every example, as a sorted multiset."""
    parts = []
    for b in batches:
        d = b.sparse_features.to_dict()
        parts.append(np.stack([d[k].values().numpy() for k in ("user_id", "category", "device")], axis=1))
    rows = np.concatenate(parts)
    return rows[np.lexsort(rows.T[::-1])]


def test_string_ids_are_decoded_as_dictionaries_and_map_to_the_same_rows(ray_local, root, spec):
    """String id columns are read as Arrow dictionaries (cheaper to decode and to hash), and map
    to exactly the rows their plain strings map to, also in batches that span two files whose
    dictionaries differ (batch size 1000, files of 1500 rows)."""
    files = list_day_files(str(root), DAYS[2], DAYS[3])
    plain = pa.concat_tables(pq.read_table(f, columns=spec.columns()) for f in files)
    assert pa.types.is_string(plain.schema.field("category").type)
    expected = _sorted_id_rows([collate(plain, spec)])

    ds = read_days(str(root), DAYS[2], DAYS[3], spec)
    first = next(iter(ds.iter_batches(batch_size=1000, batch_format="pyarrow")))
    assert pa.types.is_dictionary(first.schema.field("category").type)
    assert pa.types.is_dictionary(first.schema.field("device").type)
    assert np.array_equal(_sorted_id_rows(iter_ray_batches(ds, spec, 1000)), expected)
    assert np.array_equal(_sorted_id_rows(iter_file_batches(files, spec, 1000)), expected)
