"""`python -m jobs.inspect` (pipeline/data/inspect.py): a spec proposed from the data loads, covers
the ids, fits the numbers, and bad input fails with a DataValidationError naming file and column."""

from __future__ import annotations

import re
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.common.errors import EXIT_BAD_CONFIG
from pipeline.data.feature_spec import load_spec
from pipeline.data.files import parse_days
from pipeline.data.id_mapping import strings_to_rows
from pipeline.data.inspect import inspect_days, inspect_files, parse_task
from pipeline.data.spec_choice import BUCKET_DIM
from pipeline.data.spec_yaml import yaml_float, yaml_str
from pipeline.data.synthetic import SyntheticConfig, write_file
from pipeline.data.validation import DataValidationError, validate_files

ROWS_PER_DAY = 3000
DAYS = ("2024-01-01", "2024-01-02")
# Few items, so item ids are dense in [0, 300) and get a vocab_size; users stay sparse (hashed).
CONFIG = SyntheticConfig(num_items=300)


def _write_days(root, tables: list[pa.Table]) -> list[str]:
    paths = []
    for day, table in zip(DAYS, tables, strict=False):
        d = root / f"dt={day}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, d / "part-00000.parquet")
        paths.append(str(d / "part-00000.parquet"))
    return paths


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    for d, day in enumerate(DAYS):
        write_file(str(root / f"dt={day}" / "part-00000.parquet"), ROWS_PER_DAY, 7, d, 0, CONFIG, chunk_rows=1000)
    files = [str(root / f"dt={day}" / "part-00000.parquet") for day in DAYS]
    table = pa.concat_tables(pq.read_table(f) for f in files)
    result = inspect_days(
        str(root),
        DAYS[0],
        DAYS[1],
        ["click", "conversion"],
        tasks=["ctr=click", "cvr=conversion@click"],
        exclude=["true_p_click", "true_p_conv"],
        group_by="user_id",
        batch_rows=700,  # several batches per file: the running statistics must merge
        name="synthetic_inspected",
    )
    return root, files, table, result


def test_synthetic_spec_loads_and_covers_the_ids(synthetic, tmp_path):
    _root, files, table, result = synthetic
    out = tmp_path / "spec.yaml"
    out.write_text(result.text)
    spec = load_spec(out)
    assert spec == result.spec
    assert result.rows == table.num_rows and result.files == files
    sparse = {f.name: f for f in spec.sparse}
    assert set(sparse) == {"user_id", "item_id", "category", "device", "history"}
    assert "impression_id" in result.left_out and "key" in result.left_out["impression_id"]
    assert set(result.left_out) == {"impression_id", "true_p_click", "true_p_conv"}
    tables = spec.table_by_name
    for name in ("user_id", "item_id", "history"):
        t = tables[sparse[name].table]
        ids = pa.compute.list_flatten(table[name]) if name == "history" else table[name]
        if t.vocab_size is not None:
            assert t.vocab_size > pa.compute.max(ids).as_py()
        else:
            assert t.hash_buckets is not None and t.hash_buckets >= 2 * len(pa.compute.unique(ids)) * 0.95
    assert tables["item_id"].vocab_size is not None  # dense in [0, 300)
    assert tables["user_id"].hash_buckets is not None  # 6k rows of 100k Zipf users: sparse ids
    assert sparse["history"].type == "list<int64>" and tables["history"].pooling == "mean"
    assert sparse["category"].type == "string" and sparse["device"].type == "string"
    assert all(4 <= t.dim <= 64 and t.dim % 4 == 0 for t in spec.tables)
    assert spec.group_by == "user_id"
    assert [(t.name, t.label, t.sample_space) for t in spec.tasks] == [
        ("ctr", "click", "all"),
        ("cvr", "conversion", "click"),
    ]
    # the spec reads these files: the footer validator accepts them
    assert validate_files(files, spec).rows == table.num_rows


def test_synthetic_numbers_match_numpy(synthetic):
    _root, _files, table, result = synthetic
    dense = {d.name: d for d in result.spec.dense}
    assert set(dense) == {"price", "user_age_days", "item_rating", "hour"}
    for name, d in dense.items():
        x = table[name].to_numpy().astype(np.float64)
        assert d.transform == "bucketize" and d.keep_raw and d.dim == BUCKET_DIM and d.missing == "error"
        assert d.mean == pytest.approx(x.mean(), rel=1e-3)
        assert d.std == pytest.approx(x.std(), rel=1e-3)
        b = np.asarray(d.boundaries)
        assert np.all(np.diff(b) > 0)
        assert x.min() <= b[0] and b[-1] <= x.max()
    for name in ("price", "item_rating"):  # continuous: 31 boundaries at ranks 1/32 .. 31/32
        x = table[name].to_numpy().astype(np.float64)
        b = np.asarray(dense[name].boundaries)
        assert len(b) == 31
        ranks = np.array([(x < v).mean() for v in b])
        np.testing.assert_allclose(ranks, np.arange(1, 32) / 32, atol=0.02)
        np.testing.assert_allclose(b, np.quantile(x, np.arange(1, 32) / 32), rtol=0.05)
    hour = dense["hour"]  # 24 values, fewer than the buckets: one bucket per hour, split half-way
    assert hour.boundaries == [h + 0.5 for h in range(23)]


def test_synthetic_label_rates_and_comments(synthetic):
    _root, _files, table, result = synthetic
    for label in ("click", "conversion"):
        assert result.label_rates[label] == pytest.approx(table[label].to_numpy().mean(), abs=1e-12)
    lines = result.text.splitlines()
    assert lines[0].startswith("# Feature spec proposed by")
    assert any("2 files, 6,000 rows" in line for line in lines[:5])
    for i, line in enumerate(lines):
        if line.startswith("  - {name: ") and "column:" in line:  # a feature: its reasons just above
            assert lines[i - 1].startswith("  # "), line
    assert result.stats["user_id"].distinct_exact  # 2,079 users: kept exactly (up to EXACT_DISTINCT)
    assert not result.stats["impression_id"].distinct_exact and "about" in result.choice("impression_id").why
    assert "mean length" in result.choice("history").why
    assert "positive rate" in result.choice("click").why
    assert f"# click: {result.choice('click').why}" in result.text


def _custom_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.3).astype(np.int8)
    ids = rng.integers(0, 50, n)
    id_nulls = rng.random(n) < 0.1
    score = rng.normal(5, 2, n)
    score[rng.random(n) < 0.05] = np.nan
    tags = [
        None if i % 17 == 0 else [] if i % 13 == 0 else [f"t{i % 7}", None] if i % 11 == 0 else [f"t{i % 5}"]
        for i in range(n)
    ]
    return pa.table(
        {
            "row_id": pa.array(np.arange(seed * n, (seed + 1) * n)),
            "shop": pa.array(ids, mask=id_nulls),
            "city": pa.array([None if i % 9 == 0 else f"c{i % 40}" for i in range(n)]),
            "score": pa.array(score),  # NaN rows
            "tags": pa.array(tags, pa.list_(pa.string())),
            "constant": pa.array(np.full(n, 7, np.int64)),
            "count": pa.array(rng.poisson(20, n)),
            "two_values": pa.array(rng.integers(0, 2, n) * 5),
            "flag": pa.array(rng.random(n) < 0.4),
            "region": pa.array([f"r{i % 6}" for i in range(n)]).dictionary_encode(),
            "seen": pa.array([[i % 30, None] if i % 50 == 0 else [i % 30, 5] for i in range(n)], pa.list_(pa.int32())),
            "at": pa.array(np.arange(n).astype("datetime64[ms]")),  # not a type a spec reads
            "click": pa.array(click),
        }
    )


def test_nulls_constants_keys_and_numeric_ints(tmp_path):
    files = _write_days(tmp_path, [_custom_table(1500, 1), _custom_table(1500, 2)])
    result = inspect_files(files, ["click"], numeric=["count", "two_values"], name="custom", source=str(tmp_path))
    spec = result.spec
    sparse = {f.name: f for f in spec.sparse}
    dense = {d.name: d for d in spec.dense}
    assert sparse["shop"].missing == "default" and sparse["city"].missing == "default"
    assert sparse["tags"].missing == "default" and sparse["tags"].type == "list<string>"
    assert spec.table_by_name["shop"].vocab_size == 50  # dense ids 0..49
    # 40 strings hashed into a table where none of them shares a row: the collate's own mapping.
    city = spec.table_by_name["city"]
    assert city.hash_buckets is not None and city.hash_buckets >= 80
    rows = strings_to_rows(pa.array([f"c{i}" for i in range(40)]), city.hash_buckets)
    assert len(set(rows.tolist())) == 40
    assert "never collide" in result.choice("city").why
    assert dense["score"].missing == "default" and dense["score"].transform == "bucketize"
    assert result.stats["score"].nulls == int(
        np.isnan(pa.concat_arrays([pq.read_table(f)["score"].combine_chunks() for f in files]).to_numpy()).sum()
    )
    assert "constant" in result.left_out and "constant" in result.left_out["constant"]
    assert "row_id" in result.left_out and "key" in result.left_out["row_id"]
    assert dense["count"].transform == "bucketize" and dense["count"].missing == "error"
    assert dense["two_values"].transform == "standard"  # fewer than 3 distinct values
    assert dense["flag"].transform == "standard"
    assert dense["flag"].mean == pytest.approx(
        np.mean([pq.read_table(f)["flag"].to_numpy(zero_copy_only=False).mean() for f in files]), rel=1e-5
    )
    assert "count" not in sparse and "constant" not in sparse and "row_id" not in sparse
    assert sparse["region"].type == "string" and sparse["region"].missing == "error"
    assert sparse["seen"].type == "list<int64>" and sparse["seen"].missing == "default"  # null ids inside
    assert spec.table_by_name["seen"].vocab_size == 30 and spec.table_by_name["seen"].pooling == "mean"
    assert "not one a spec can read" in result.left_out["at"]
    assert "# Left out:" in result.text and "#   constant: constant" in result.text
    assert load_spec_text(tmp_path, result.text) == spec
    # --categorical keeps a key as an id; --exclude drops a column
    kept = inspect_files(files, ["click"], categorical=["row_id"], exclude=["city"])
    assert "row_id" in {f.name for f in kept.spec.sparse} and kept.left_out["city"] == "--exclude"


def test_an_estimated_distinct_count_never_exceeds_the_values_counted():
    from pipeline.data.column_stats import ColumnAccumulator

    acc = ColumnAccumulator("row_id", pa.int64(), "int")
    acc.update(pa.array(np.arange(20_000)))  # 20,000 distinct values, which HLL estimates at 20,141
    s = acc.finish()
    assert not s.distinct_exact and s.distinct == s.values == 20_000


@pytest.mark.parametrize("encoding", ["piecewise_linear", "standard"])
def test_numeric_encodings(tmp_path, encoding):
    files = _write_days(tmp_path, [_custom_table(800, 1)])
    d = next(
        d for d in inspect_files(files, ["click"], numeric_encoding=encoding, buckets=8).spec.dense if d.name == "score"
    )
    assert d.transform == encoding
    if encoding == "piecewise_linear":
        assert d.keep_raw and d.boundaries is not None and len(d.boundaries) == 9
    else:
        assert d.boundaries is None and d.mean is not None


def load_spec_text(tmp_path, text: str):
    path = tmp_path / "written.yaml"
    path.write_text(text)
    return load_spec(path)


# -- bad input ------------------------------------------------------------------------------------
def _base(n: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "shop": pa.array(rng.integers(0, 20, n)),
        "price": pa.array(rng.random(n)),
        "city": pa.array([f"c{i % 3}" for i in range(n)]),
        "click": pa.array((rng.random(n) < 0.5).astype(np.int64)),
    }


def test_mixed_types_across_files(tmp_path):
    a, b = _base(), _base(seed=1)
    b["shop"] = pa.array([str(v) for v in b["shop"].to_pylist()])
    files = _write_days(tmp_path, [pa.table(a), pa.table(b)])
    with pytest.raises(DataValidationError) as e:
        inspect_files(files, ["click"])
    assert e.value.file == files[1] and e.value.column == "shop"
    assert files[0] in str(e.value) and "int64" in str(e.value) and "string" in str(e.value)
    # footers only: no row was read (a column left out is not checked)
    assert "shop" in inspect_files(files, ["click"], exclude=["shop"]).left_out


def test_missing_label_names_the_file(tmp_path):
    a, b = _base(), _base(seed=1)
    del b["click"]
    files = _write_days(tmp_path, [pa.table(a), pa.table(b)])
    with pytest.raises(DataValidationError, match="missing label") as e:
        inspect_files(files, ["click"])
    assert e.value.file == files[1] and e.value.column == "click"


def test_all_null_column(tmp_path):
    a, b = _base(), _base(seed=1)
    a["empty"] = b["empty"] = pa.nulls(200, pa.float64())
    files = _write_days(tmp_path, [pa.table(a), pa.table(b)])
    with pytest.raises(DataValidationError, match="--exclude empty") as e:
        inspect_files(files, ["click"])
    assert (e.value.file, e.value.column, e.value.count) == (files[0], "empty", 400)


def test_label_not_zero_one(tmp_path):
    a, b = _base(), _base(seed=1)
    y = b["click"].to_numpy().copy()
    y[[3, 50, 99]] = 2
    b["click"] = pa.array(y)
    files = _write_days(tmp_path, [pa.table(a), pa.table(b)])
    with pytest.raises(DataValidationError, match="other than 0/1") as e:
        inspect_files(files, ["click"])
    assert (e.value.file, e.value.column, e.value.count) == (files[1], "click", 3)


def test_null_label(tmp_path):
    a = _base()
    a["click"] = pa.array(a["click"].to_numpy(), mask=np.arange(200) < 4)
    files = _write_days(tmp_path, [pa.table(a)])
    with pytest.raises(DataValidationError) as e:
        inspect_files(files, ["click"])
    assert (e.value.column, e.value.count) == ("click", 4)


def test_leak_refused(tmp_path):
    a, b = _base(), _base(seed=1)
    for t in (a, b):
        t["clicked_flag"] = pa.array(t["click"].to_numpy().astype(np.float32))
    files = _write_days(tmp_path, [pa.table(a), pa.table(b)])
    with pytest.raises(DataValidationError, match="leak") as e:
        inspect_files(files, ["click"])
    assert e.value.column == "clicked_flag" and "'click'" in str(e.value)
    # equal in one file only: not a leak
    b["clicked_flag"] = pa.array(1 - b["click"].to_numpy().astype(np.float32))
    files = _write_days(tmp_path, [pa.table(a), pa.table(b)])
    assert "clicked_flag" in {d.name for d in inspect_files(files, ["click"]).spec.dense}


def test_string_cannot_be_numeric(tmp_path):
    a = _base()
    files = _write_days(tmp_path, [pa.table(a)])
    with pytest.raises(DataValidationError, match="cannot be numeric") as e:
        inspect_files(files, ["click"], numeric=["city"])
    assert e.value.column == "city"


# -- the YAML text and the options ----------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["user_id", "yes", "null", "on", "1e5", "12", "a: b", "x, y", "#c", "é", "~", "list<int64>"]
)
def test_names_round_trip(name):
    assert yaml.safe_load(f"k: {yaml_str(name)}")["k"] == name
    assert yaml.safe_load(f"[{yaml_str(name)}]") == [name]


@pytest.mark.parametrize("x", [1e-05, 1e20, -3.5e-300, 0.1, 12345.0, 0.0, -2.0])
def test_floats_round_trip(x):
    value = yaml.safe_load(f"[{yaml_float(x)}]")[0]
    assert isinstance(value, float) and value == x


def test_parse_task_and_days():
    assert parse_task("cvr=conversion@click") == {"name": "cvr", "label": "conversion", "sample_space": "click"}
    assert parse_task("ctr=click") == {"name": "ctr", "label": "click", "sample_space": "all"}
    with pytest.raises(ValueError):
        parse_task("ctr")
    assert parse_days("2024-01-01..2024-01-03") == ("2024-01-01", "2024-01-03")
    assert parse_days("2024-01-01") == ("2024-01-01", "2024-01-01")
    assert parse_days("20240101..20240103") == ("2024-01-01", "2024-01-03")  # as the partitions are written
    for bad, why in [
        ("2024-01-03..2024-01-01", "end_day 2024-01-01 is before start_day 2024-01-03"),
        ("2024-13-01", "month must be in 1..12"),
        ("2024-01-01..", "Invalid isoformat string: ''"),
    ]:
        with pytest.raises(ValueError, match=f"days '{bad}': expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"):
            parse_days(bad)
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_days(bad)


def test_cli_writes_the_file(tmp_path, capsys):
    from jobs.inspect import main

    files = _write_days(tmp_path / "data", [_custom_table(600, 1), _custom_table(600, 2)])
    out = tmp_path / "specs" / "custom.yaml"
    argv = ["--data", str(tmp_path / "data"), "--days", f"{DAYS[0]}..{DAYS[1]}", "--labels", "click"]
    main([*argv, "--numeric", "count", "--task", "ctr=click", "--out", str(out)])
    spec = load_spec(out)
    assert spec.name == "data" and [t.name for t in spec.tasks] == ["ctr"]
    assert "--days 2024-01-01..2024-01-02" in out.read_text().splitlines()[0]
    assert not list(out.parent.glob(".*tmp"))  # written under a temp name, then renamed
    printed = capsys.readouterr().out
    assert f"{len(files)} files, 1,200 rows" in printed and "wrote" in printed and "shop" in printed


def test_cli_refuses_an_out_it_cannot_write_before_reading_the_data(tmp_path, capsys, monkeypatch):
    import jobs.inspect

    def never(*args, **kwargs):
        raise AssertionError("the data was read before --out was checked")

    monkeypatch.setattr(jobs.inspect, "inspect_days", never)
    (tmp_path / "a-file").write_text("")
    argv = ["--data", str(tmp_path / "data"), "--days", DAYS[0], "--labels", "click", "--out"]
    for out, said in [
        (tmp_path, f"--out {tmp_path} is a directory: name the spec file to write (e.g. {tmp_path / 'spec.yaml'})"),
        (
            tmp_path / "a-file" / "spec.yaml",
            f"--out's folder {tmp_path / 'a-file'}: {tmp_path / 'a-file'} is a file, not a folder",
        ),
    ]:
        with pytest.raises(SystemExit) as exit_:
            jobs.inspect.main([*argv, str(out)])
        assert exit_.value.code == EXIT_BAD_CONFIG
        assert capsys.readouterr().err == f"error: {said}\n"


# -- the Adult census data (shared/data/adult) ----------------------------------------------------
ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income",
]  # fmt: skip
ADULT_NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


@pytest.fixture(scope="module")
def adult_file(repo_root, tmp_path_factory):
    source = repo_root.parent / "shared" / "data" / "adult" / "adult.data"
    if not source.is_file():
        pytest.skip(f"Adult data not found at {source} (expected shared/data/adult beside the repository root)")
    rows = []
    with open(source) as f:
        for line in f:
            if line.strip():
                rows.append([v.strip() for v in line.split(",")])
            if len(rows) == 2000:
                break
    cols = {name: [r[i] for r in rows] for i, name in enumerate(ADULT_COLUMNS)}
    data: dict[str, pa.Array] = {}
    for name, values in cols.items():
        if name in ADULT_NUMERIC:
            data[name] = pa.array([float(v) for v in values], pa.float64())
        elif name not in ("income", "marital_status"):
            data[name] = pa.array([None if v == "?" else v for v in values], pa.string())
    data["income"] = pa.array([int(v.startswith(">50K")) for v in cols["income"]], pa.int8())
    data["never_married"] = pa.array([int(v == "Never-married") for v in cols["marital_status"]], pa.int8())
    d = tmp_path_factory.mktemp("adult") / "dt=1994-01-01"
    d.mkdir()
    pq.write_table(pa.table(data), d / "part-00000.parquet")
    return d.parent, pa.table(data)


def test_adult(adult_file, tmp_path):
    root, table = adult_file
    result = inspect_days(str(root), "1994-01-01", "1994-01-01", ["income", "never_married"], name="adult")
    spec = load_spec_text(tmp_path, result.text)
    sparse = {f.name: f for f in spec.sparse}
    dense = {d.name: d for d in spec.dense}
    for name in ("workclass", "occupation", "native_country"):  # '?' rows
        assert sparse[name].missing == "default", name
    for name in ("education", "relationship", "race", "sex"):
        assert sparse[name].missing == "error" and sparse[name].type == "string"
    assert set(dense) == set(ADULT_NUMERIC)
    for name in ADULT_NUMERIC:
        d = dense[name]
        assert d.transform == "bucketize" and d.boundaries and np.all(np.diff(d.boundaries) > 0)
        assert d.mean == pytest.approx(table[name].to_numpy().mean(), rel=1e-3)
    assert result.label_rates["income"] == pytest.approx(table["income"].to_numpy().mean())
    assert result.label_rates["never_married"] == pytest.approx(table["never_married"].to_numpy().mean())
    assert [t.name for t in spec.tasks] == ["income", "never_married"]


def test_the_collate_reads_with_the_inferred_spec(synthetic, tmp_path):
    """End to end: the trainer's collate accepts the data under the proposed spec, nulls included."""
    collate = pytest.importorskip("pipeline.data.collate").collate
    _root, files, table, result = synthetic
    batch = collate(table.slice(0, 500), result.spec)
    assert batch.labels.shape == (500, 2)
    custom = _write_days(tmp_path, [_custom_table(1200, 1)])
    spec = inspect_files(custom, ["click"], numeric=["count"]).spec
    batch = collate(pq.read_table(custom[0]), spec)
    assert batch.missing["shop"] > 0 and batch.missing["score"] > 0


def test_decimal_columns_are_numbers_from_the_inspection_to_the_collate(tmp_path):
    """A warehouse's prices come as decimals: proposed as dense features, validated and read as
    the same numbers in float64 (nulls filled by the missing policy)."""
    from pipeline.data.collate import collate
    from pipeline.data.validation import check_schema

    columns = _base(400)
    amounts = [None if i % 10 == 0 else round(p * 100, 2) for i, p in enumerate(columns.pop("price").to_pylist())]
    as_decimal = pa.table(
        {**columns, "amount": pa.array([None if a is None else Decimal(f"{a:.2f}") for a in amounts])}
    )
    assert pa.types.is_decimal(as_decimal.schema.field("amount").type)
    spec = inspect_files(_write_days(tmp_path, [as_decimal]), ["click"]).spec
    [amount] = [d for d in spec.dense if d.column == "amount"]
    assert amount.missing == "default" and amount.mean == pytest.approx(np.nanmean(np.array(amounts, dtype=float)))
    check_schema(as_decimal.schema, spec, "decimal.parquet")
    as_float = as_decimal.set_column(as_decimal.schema.get_field_index("amount"), "amount", pa.array(amounts))
    read, expected = collate(as_decimal, spec), collate(as_float, spec)
    assert torch.equal(read.dense_features, expected.dense_features) and read.missing["amount"] == 40


def test_columns_no_spec_can_read_are_left_out_saying_why(tmp_path):
    columns = _base(50)
    columns["seen_at"] = pa.array(np.arange(50).astype("datetime64[ms]"))
    columns["blob"] = pa.array([b"x"] * 50)
    left_out = inspect_files(_write_days(tmp_path, [pa.table(columns)]), ["click"]).left_out
    assert left_out["seen_at"] == (
        "type timestamp[ms] is not one a spec can read: derive numbers from it upstream (hour, weekday, age in days)"
    )
    assert left_out["blob"] == "type binary is not one a spec can read"


def test_options_checked_before_the_pass(tmp_path):
    files = _write_days(tmp_path, [pa.table(_base())])
    with pytest.raises(ValueError, match="among the labels"):
        inspect_files(files, ["click"], tasks=["cvr=conversion"])
    with pytest.raises(DataValidationError, match="--exclude names a column") as e:
        inspect_files(files, ["click"], exclude=["nope"])
    assert e.value.column == "nope"
    with pytest.raises(DataValidationError, match="missing label") as e:
        inspect_files(files, ["click", "conversion"])
    assert e.value.file == files[0]


def test_the_inferred_spec_trains_as_it_is(synthetic):
    """The proposed spec builds the model (its tables, bucket tables and dense width) and a few
    optimizer steps on its batches lower the loss."""
    import torch

    from pipeline.data.collate import collate
    from pipeline.train.losses import masked_bce_per_task
    from ple_model import ModelConfig, RecModel

    _root, _files, table, result = synthetic
    spec = result.spec
    torch.manual_seed(0)
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, ModelConfig(num_tasks=2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = collate(table.slice(0, 2000), spec)

    def loss() -> torch.Tensor:
        logits = model(batch.sparse_features, batch.dense_features)
        return masked_bce_per_task(logits, batch.labels, batch.label_masks).sum()

    first = loss().item()
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.9 * first
