"""The feature layer's data-facing choices, on small hand-made tables: signed and string-list
ids, missing-value policies (mapped, filled and counted), bucketized and piecewise-linear
numerics, GAUC group ids, and the spec errors that guard them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.collate import collate
from pipeline.data.feature_spec import FeatureSpecError, spec_from_dict
from pipeline.data.id_mapping import hash_int64, int_ids_to_rows
from pipeline.data.validation import DataValidationError, describe_filled, filled_from_metrics

EXTREMES = [-(2**63), -1, 0, 1, 2**63 - 1]


def _spec(**changes) -> dict:
    spec = {
        "name": "t",
        "tables": [
            {"name": "user", "vocab_size": 10, "dim": 4},
            {"name": "tag", "hash_buckets": 16, "dim": 4, "pooling": "mean"},
        ],
        "sparse": [
            {"name": "user", "column": "user", "table": "user"},
            {"name": "tags", "column": "tags", "table": "tag", "type": "list<string>"},
        ],
        "dense": [{"name": "x", "column": "x"}],
        "labels": ["y"],
        "tasks": [{"name": "t", "label": "y"}],
    }
    spec.update(changes)
    return spec


def _table(**columns) -> pa.Table:
    base = {
        "user": pa.array([1, 2, 3, 4], pa.int64()),
        "tags": pa.array([["a"], ["b", "c"], ["a"], ["c"]], pa.list_(pa.string())),
        "x": pa.array([0.5, 1.0, 2.0, 3.0], pa.float64()),
        "y": pa.array([0, 1, 0, 1], pa.int8()),
    }
    base.update(columns)
    return pa.table(base)


def _values(batch, key: str) -> list[list[int]]:
    jt = batch.sparse_features[key]
    return [t.tolist() for t in jt.to_dense()]


# -- ids -------------------------------------------------------------------------------------
@pytest.mark.parametrize("hash_all", [False, True])
def test_signed_ids_hash_into_range_at_the_extremes(hash_all):
    ids = np.array(EXTREMES, dtype=np.int64)
    rows = int_ids_to_rows(ids, 1000, hash_all)
    assert ((rows >= 0) & (rows < 1000)).all()
    expected = (hash_int64(ids) % np.uint64(1000)).astype(np.int64)
    if not hash_all:  # a vocab table keeps ids in [0, 1000) as rows; only the others hash
        expected[2:4] = [0, 1]
    assert rows.tolist() == expected.tolist()
    # The mapping is a pure function of the bits: identical in every process (training, scoring).
    assert int_ids_to_rows(ids.copy(), 1000, hash_all).tolist() == rows.tolist()


def test_negative_ids_go_through_the_collate_like_large_ones():
    spec = spec_from_dict(_spec())
    batch = collate(_table(user=pa.array([-(2**63), -1, 0, 2**63 - 1], pa.int64())), spec)
    rows = [r[0] for r in _values(batch, "user")]
    assert rows == int_ids_to_rows(np.array([-(2**63), -1, 0, 2**63 - 1]), 10, False).tolist()
    assert rows[2] == 0 and all(0 <= r < 10 for r in rows)


def test_string_lists_hash_each_value():
    spec = spec_from_dict(_spec())
    batch = collate(_table(), spec)
    a, bc, a2, c = _values(batch, "tags")
    assert a[0] == a2[0] and bc[1] == c[0] and len(set(a[:1] + bc)) == 3


# -- missing values --------------------------------------------------------------------------
def test_missing_ids_are_an_error_by_default():
    spec = spec_from_dict(_spec())
    with pytest.raises(DataValidationError) as err:
        collate(_table(user=pa.array([1, None, None, 4], pa.int64())), spec, source="f.parquet")
    assert (err.value.file, err.value.column, err.value.count) == ("f.parquet", "user", 2)
    assert "missing: default" in str(err.value)


def test_missing_ids_map_to_the_reserved_row_and_are_counted():
    sparse = [
        {"name": "user", "column": "user", "table": "user", "missing": "default"},
        {"name": "tags", "column": "tags", "table": "tag", "type": "list<string>", "missing": "default"},
    ]
    spec = spec_from_dict(_spec(sparse=sparse))
    assert spec.null_row("user") == 10 and spec.null_row("tag") == 16
    assert {c.name: c.num_embeddings for c in spec.table_configs()} == {"user": 11, "tag": 17}
    tags = pa.array([None, [], ["a", None], ["c"]], pa.list_(pa.string()))
    batch = collate(_table(user=pa.array([None, 2, None, 4], pa.int64()), tags=tags), spec)
    assert [r[0] for r in _values(batch, "user")] == [10, 2, 10, 4]
    lengths = batch.sparse_features["tags"].lengths().tolist()
    assert lengths == [1, 1, 2, 1]  # a null or empty list becomes one id: the reserved row
    values = batch.sparse_features["tags"].values().tolist()
    assert values[0] == values[1] == values[3] == 16 and values[2] != 16
    assert batch.missing == {"user": 2, "tags": 3}


def test_missing_ids_in_a_string_dictionary_column():
    sparse = [
        {"name": "user", "column": "user", "table": "user"},
        {"name": "tags", "column": "tags", "table": "tag", "type": "string", "missing": "default"},
    ]
    spec = spec_from_dict(_spec(sparse=sparse))
    for tags in (pa.array(["a", None, "a", None]), pa.array(["a", None, "a", None]).dictionary_encode()):
        batch = collate(_table(tags=tags), spec)
        rows = [r[0] for r in _values(batch, "tags")]
        assert rows[1] == rows[3] == 16 and rows[0] == rows[2] != 16
        assert batch.missing == {"tags": 2}
    all_null = pa.array([None] * 4, pa.string()).dictionary_encode()
    assert [r[0] for r in _values(collate(_table(tags=all_null), spec), "tags")] == [16] * 4


def test_missing_numbers_error_or_fill():
    x = pa.array([1.0, None, float("nan"), 3.0])
    with pytest.raises(DataValidationError) as err:
        collate(_table(x=x), spec_from_dict(_spec()))
    assert (err.value.column, err.value.count) == ("x", 2)
    dense = [{"name": "x", "column": "x", "transform": "standard", "mean": 2.0, "std": 0.5, "missing": "default"}]
    batch = collate(_table(x=x), spec_from_dict(_spec(dense=dense)))
    assert batch.dense_features[:, 0].tolist() == [-2.0, 0.0, 0.0, 2.0]  # filled with the mean
    assert batch.missing == {"x": 2}
    dense[0]["fill"] = 3.0
    assert collate(_table(x=x), spec_from_dict(_spec(dense=dense))).dense_features[1, 0] == 2.0
    with pytest.raises(DataValidationError, match="infinite"):
        collate(_table(x=pa.array([1.0, float("inf"), 1.0, 1.0])), spec_from_dict(_spec(dense=dense)))


def test_labels_stay_strict():
    dense = [{"name": "x", "column": "x", "missing": "default"}]
    with pytest.raises(DataValidationError) as err:
        collate(_table(y=pa.array([0, None, 1, 1], pa.int8())), spec_from_dict(_spec(dense=dense)))
    assert (err.value.column, err.value.count) == ("y", 1)


# -- numeric encodings -----------------------------------------------------------------------
def test_bucketize_looks_up_a_bucket_table_of_its_own():
    dense = [
        {"name": "x", "column": "x", "transform": "bucketize", "boundaries": [1.0, 2.0], "dim": 3},
        {"name": "z", "column": "x", "transform": "bucketize", "boundaries": [1.0], "dim": 2, "keep_raw": True,
         "mean": 1.0, "std": 2.0, "missing": "default"},
    ]  # fmt: skip
    spec = spec_from_dict(_spec(dense=dense))
    assert spec.feature_names == ["user", "tags", "x", "z"] and spec.num_dense == 1
    assert [(c.name, c.num_embeddings, c.dim) for c in spec.table_configs()][2:] == [
        ("x_buckets", 4, 3),
        ("z_buckets", 3, 2),
    ]
    x = pa.array([0.5, 1.0, 2.0, 3.0])
    batch = collate(_table(x=x), spec)
    # Row 0 is the missing bucket; x < 1 -> 1, 1 <= x < 2 -> 2, x >= 2 -> 3.
    assert [r[0] for r in _values(batch, "x")] == [1, 2, 3, 3]
    assert batch.dense_features[:, 0].tolist() == [-0.25, 0.0, 0.5, 1.0]  # z's raw value, standardised
    dense[0]["missing"] = "default"
    batch = collate(_table(x=pa.array([None, 1.5, float("nan"), 9.0])), spec_from_dict(_spec(dense=dense)))
    assert [r[0] for r in _values(batch, "x")] == [0, 2, 0, 3]
    assert [r[0] for r in _values(batch, "z")] == [0, 2, 0, 2]
    assert batch.missing == {"x": 2, "z": 2}


def test_piecewise_linear_encoding():
    dense = [{"name": "x", "column": "x", "transform": "piecewise_linear", "boundaries": [0.0, 1.0, 3.0]}]
    spec = spec_from_dict(_spec(dense=dense))
    assert spec.num_dense == 2
    batch = collate(_table(x=pa.array([-1.0, 0.5, 2.0, 5.0])), spec)
    assert batch.dense_features.tolist() == [[0.0, 0.0], [0.5, 0.0], [1.0, 0.5], [1.0, 1.0]]


@pytest.mark.parametrize(
    ("dense", "message"),
    [
        ({"transform": "bucketize", "boundaries": [1.0, 3.0, 2.0, 0.0], "dim": 4}, "2 of 3 pairs are not"),
        ({"transform": "bucketize", "boundaries": [1.0, 1.0], "dim": 4}, "strictly increasing"),
        ({"transform": "bucketize", "boundaries": [1.0]}, "needs dim"),
        ({"transform": "bucketize", "dim": 4}, "needs boundaries"),
        ({"transform": "piecewise_linear", "boundaries": [1.0]}, "at least 2"),
        ({"transform": "standard", "boundaries": [1.0], "mean": 0, "std": 1}, "not used"),
        ({"transform": "log1p", "keep_raw": True}, "keep_raw"),
        ({"fill": 1.0}, "missing: default only"),
    ],
)
def test_spec_errors_name_the_key(dense, message):
    with pytest.raises(FeatureSpecError, match=message) as err:
        spec_from_dict(_spec(dense=[{"name": "x", "column": "x", **dense}]), source="spec.yaml")
    assert str(err.value).startswith("spec.yaml: dense[0]")


def test_a_bucket_table_may_not_shadow_a_table():
    dense = [{"name": "user", "column": "x", "transform": "bucketize", "boundaries": [1.0], "dim": 2}]
    with pytest.raises(FeatureSpecError, match="duplicate name 'user'"):
        spec_from_dict(_spec(dense=dense))


# -- GAUC groups -----------------------------------------------------------------------------
def test_group_ids_from_ints_and_strings():
    spec = spec_from_dict(_spec(group_by="g"))
    assert "g" in spec.columns() and "g" not in spec.input_columns()
    ints = collate(_table(g=pa.array([7, 7, -3, 9])), spec)
    assert ints.groups.tolist() == [7, 7, -3, 9]
    strings = collate(_table(g=pa.array(["u1", "u1", "u2", "u3"])), spec)
    g = strings.groups.tolist()
    assert g[0] == g[1] and len(set(g)) == 3
    assert collate(_table(), spec, with_labels=False).groups is None  # scoring needs no groups
    with pytest.raises(DataValidationError, match="missing group column"):
        collate(_table(), spec)


def test_filled_counts_read_back_from_metrics_in_one_wording():
    metrics = {"val/ctr/auc": 0.7, "missing/workclass": 963.0, "missing/native_country": 274, "step": 5}
    counts = filled_from_metrics(metrics)
    assert counts == {"workclass": 963, "native_country": 274}
    assert describe_filled(counts) == "native_country 274 rows, workclass 963 rows"
