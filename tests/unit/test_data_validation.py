"""Every kind of bad input gets a DataValidationError naming file, column and row count (or,
for a valid Parquet file with 0 rows, a counted skip); nothing is dropped silently."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.common.logs import plural
from pipeline.data.collate import collate
from pipeline.data.feature_spec import load_spec
from pipeline.data.reader import iter_file_batches
from pipeline.data.synthetic import generate_table
from pipeline.data.validation import DataValidationError, validate_files

ROWS = 400


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "configs" / "features" / "synthetic.yaml")


@pytest.fixture
def good():
    return generate_table(ROWS, seed=21)


def _replace(table: pa.Table, column: str, values) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    return table.set_column(table.schema.get_field_index(column), column, arr)


def _set_rows(table: pa.Table, column: str, rows: list, value) -> pa.Table:
    values = table[column].to_pylist()
    for r in rows:
        values[r] = value
    return _replace(table, column, pa.array(values, table.schema.field(column).type))


def _write(tmp_path, table, name="part-00000.parquet") -> str:
    path = str(tmp_path / name)
    pq.write_table(table, path)
    return path


def _expect(err: pytest.ExceptionInfo, path, column, count=None, words=""):
    e = err.value
    msg = str(e)
    if path is not None:
        assert path in msg and e.file is not None and path in e.file
    assert e.column == column and f"'{column}'" in msg
    if count is not None:
        assert e.count == count and f"({plural(count, 'row')})" in msg
    assert words in msg, msg


def test_good_file_passes(tmp_path, spec, good):
    path = _write(tmp_path, good)
    report = validate_files([path], spec)
    assert report.files == [path] and report.rows == ROWS and report.skipped_empty == []
    assert sum(len(b) for b in iter_file_batches([path], spec, 128)) == ROWS


def test_missing_column(tmp_path, spec, good):
    bad = good.drop_columns(["device"])
    path = _write(tmp_path, bad)
    with pytest.raises(DataValidationError) as err:
        validate_files([path], spec)
    _expect(err, path, "device", words="missing sparse column")
    with pytest.raises(DataValidationError) as err:
        collate(bad, spec, source="batch-0")
    _expect(err, "batch-0", "device", words="missing")


@pytest.mark.parametrize(
    "column, values, expected",
    [
        ("item_id", lambda t: pa.array([str(v) for v in t["item_id"].to_pylist()]), "int64"),
        ("history", lambda t: pa.array([[str(x) for x in v] for v in t["history"].to_pylist()]), "list<int64>"),
        ("category", lambda t: pa.array(np.arange(len(t))), "string"),
        ("price", lambda t: pa.array(["1.0"] * len(t)), "number"),
        ("click", lambda t: pa.array(["yes"] * len(t)), "number"),
    ],
)
def test_wrong_type(tmp_path, spec, good, column, values, expected):
    bad = _replace(good, column, values(good))
    path = _write(tmp_path, bad)
    with pytest.raises(DataValidationError) as err:
        validate_files([path], spec)
    _expect(err, path, column, words=f"expected {expected}")


@pytest.mark.parametrize("column, rows", [("user_id", [3, 50, 399]), ("click", [7]), ("price", [0, 1])])
def test_nulls_are_counted_from_the_footer(tmp_path, spec, good, column, rows):
    bad = _set_rows(good, column, rows, None)
    path = _write(tmp_path, bad)
    with pytest.raises(DataValidationError) as err:
        validate_files([path], spec)
    _expect(err, path, column, len(rows), "null")
    with pytest.raises(DataValidationError) as err:
        collate(bad, spec)
    _expect(err, None, column, len(rows), "null")


@pytest.mark.parametrize("column", ["category", "history"])
def test_nulls_found_in_batches_name_the_file(tmp_path, spec, good, column):
    bad = _set_rows(good, column, [10, 11], None)
    path = _write(tmp_path, bad)
    with pytest.raises(DataValidationError) as err:
        list(iter_file_batches([path], spec, 128))
    _expect(err, path, column, 2, "null")


def test_null_inside_a_history_list(tmp_path, spec, good):
    hist = good["history"].to_pylist()
    hist[5], hist[9] = [1, None, 3], [None]
    path = _write(tmp_path, _replace(good, "history", pa.array(hist, pa.list_(pa.int64()))))
    with pytest.raises(DataValidationError) as err:
        list(iter_file_batches([path], spec, 1000))
    _expect(err, path, "history", 2, "null ids inside lists")


def test_negative_ids_are_ids_like_any_other(tmp_path, spec, good):
    """64-bit hashed ids are negative half the time: they pass the file checks and hash into range."""
    path = _write(tmp_path, _set_rows(good, "user_id", [1, 2], -5))
    assert validate_files([path], spec).rows == ROWS
    hist = good["history"].to_pylist()
    hist[4], hist[8] = [-1, -2], [3, -(2**63)]
    path = _write(tmp_path, _replace(good, "history", pa.array(hist, pa.list_(pa.int64()))), "part-1.parquet")
    (batch,) = iter_file_batches([path], spec, 1000)
    rows = batch.sparse_features["history"].values()
    assert rows.min() >= 0 and rows.max() < spec.table_by_name["item"].vocab_size


def test_labels_other_than_0_1(tmp_path, spec, good):
    path = _write(tmp_path, _set_rows(good, "click", [0, 9, 19, 29], 2))
    with pytest.raises(DataValidationError) as err:
        validate_files([path], spec)
    _expect(err, path, "click", 4, "other than 0/1")
    # a float label of 0.5 sits inside [0, 1], so only the batch check can see it
    soft = _replace(good, "click", pa.array(good["click"].to_numpy().astype(np.float32)))
    path = _write(tmp_path, _set_rows(soft, "click", [3], 0.5), "part-1.parquet")
    with pytest.raises(DataValidationError) as err:
        list(iter_file_batches([path], spec, 1000))
    _expect(err, path, "click", 1, "other than 0/1")


def test_nan_dense_values(tmp_path, spec, good):
    path = _write(tmp_path, _set_rows(good, "hour", [1, 2, 3], float("nan")))
    with pytest.raises(DataValidationError) as err:
        list(iter_file_batches([path], spec, 1000))
    _expect(err, path, "hour", 3, "NaN")


def test_conversion_without_click(tmp_path, spec, good):
    click = good["click"].to_numpy()
    no_click = np.flatnonzero(click == 0)[:3].tolist()
    path = _write(tmp_path, _set_rows(good, "conversion", no_click, 1))
    validate_files([path], spec)  # statistics cannot see this one...
    with pytest.raises(DataValidationError) as err:  # ...the batch check does
        list(iter_file_batches([path], spec, 1000))
    _expect(err, path, "conversion", 3, "conversion without a click")


def test_empty_files(tmp_path, spec, good):
    ok = _write(tmp_path, good)
    zero_bytes = tmp_path / "part-00001.parquet"
    zero_bytes.write_bytes(b"")
    with pytest.raises(DataValidationError) as err:
        validate_files([ok, str(zero_bytes)], spec)
    assert str(zero_bytes) in str(err.value) and "empty file (0 bytes)" in str(err.value)
    # a valid Parquet file without rows is quarantined: skipped, and counted in the report
    no_rows = _write(tmp_path, good.slice(0, 0), "part-00002.parquet")
    report = validate_files([ok, no_rows], spec)
    assert report.files == [ok] and report.skipped_empty == [no_rows] and report.rows == ROWS


def test_not_parquet(tmp_path, spec, good):
    path = tmp_path / "part-00000.parquet"
    path.write_text("user_id,item_id\n1,2\n")
    with pytest.raises(DataValidationError) as err:
        validate_files([str(path)], spec)
    assert str(path) in str(err.value) and "not a readable Parquet file" in str(err.value)


def test_partition_schema_differs(tmp_path, spec, good):
    (tmp_path / "dt=2024-01-01").mkdir()
    (tmp_path / "dt=2024-01-02").mkdir()
    first = _write(tmp_path, good, "dt=2024-01-01/part-0.parquet")
    other = _replace(good, "item_id", good["item_id"].cast(pa.int32()))
    second = _write(tmp_path, other, "dt=2024-01-02/part-0.parquet")
    with pytest.raises(DataValidationError) as err:
        validate_files([first, second], spec)
    msg = str(err.value)
    assert err.value.file == second and first in msg and err.value.column == "item_id"
    assert "int32" in msg and "int64" in msg


def test_a_column_null_in_every_file_fails_even_under_missing_default(tmp_path, repo_root):
    import yaml

    from pipeline.data.feature_spec import spec_from_dict

    data = yaml.safe_load((repo_root / "configs" / "features" / "synthetic.yaml").read_text())
    data["sparse"][3]["missing"] = "default"  # category
    spec = spec_from_dict(data)
    table = generate_table(ROWS, seed=3)
    some = _set_rows(table, "category", [0, 1], None)
    nothing = _replace(table, "category", pa.array([None] * ROWS, pa.string()))
    assert validate_files([_write(tmp_path, some, "a.parquet")], spec).rows == ROWS  # some nulls: filled
    paths = [_write(tmp_path, nothing, "b.parquet"), _write(tmp_path, nothing, "c.parquet")]
    with pytest.raises(DataValidationError) as err:
        validate_files(paths, spec)
    _expect(err, paths[0], "category", 2 * ROWS, "every row is null in all 2 files")
