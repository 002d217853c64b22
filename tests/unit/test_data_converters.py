import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipeline.data.converters import ALI_CCP, ALIEXPRESS, convert_csv
from pipeline.data.feature_spec import load_spec
from pipeline.data.files import list_day_files
from pipeline.data.reader import iter_file_batches
from pipeline.data.validation import DataValidationError, validate_files

CASES = [  # (layout, sample CSVs, spec)
    (ALI_CCP, ["ali_ccp_train_sample.csv", "ali_ccp_val_sample.csv", "ali_ccp_test_sample.csv"], "ali_ccp"),
    (ALIEXPRESS, ["aliexpress_train_sample.csv", "aliexpress_test_sample.csv"], "aliexpress"),
]


@pytest.mark.parametrize("layout, csvs, spec_name", CASES, ids=[c[2] for c in CASES])
def test_convert_samples_and_read_back(tmp_path, samples_dir, repo_root, layout, csvs, spec_name):
    spec = load_spec(repo_root / "configs" / "features" / f"{spec_name}.yaml")
    days = ["2018-01-01", "2018-01-02", "2018-01-03"]  # train, val, test convention
    for csv, day in zip(csvs, days, strict=False):  # fewer files than days for some layouts
        written = convert_csv(str(samples_dir / csv), str(tmp_path), day, layout, rows_per_file=40)
        source = pacsv.read_csv(samples_dir / csv)
        assert sum(w["rows"] for w in written) == source.num_rows
        assert all(w["rows"] <= 40 for w in written) and len(written) == -(-source.num_rows // 40)
        converted = pa.concat_tables([pq.read_table(w["path"]) for w in written])
        renames = layout.renames()
        for src, dst in renames.items():  # every value survives, under its new name
            assert np.allclose(converted[dst].to_numpy(), source[src].to_numpy(), rtol=1e-6), src
        assert set(converted.column_names) == set(renames.values())
    files = list_day_files(str(tmp_path), days[0], days[len(csvs) - 1])
    assert not list(tmp_path.rglob("*.tmp"))
    report = validate_files(files, spec)
    assert report.rows == sum(pacsv.read_csv(samples_dir / c).num_rows for c in csvs)
    batches = list(iter_file_batches(files, spec, 64))
    assert sum(len(b) for b in batches) == report.rows
    assert batches[0].dense_features.shape[1] == spec.num_dense
    assert batches[0].sparse_features.keys() == spec.feature_names
    # the CVR mask is the click label: purchases only observed on clicks
    for b in batches:
        assert np.array_equal(b.label_masks[:, 1].numpy(), b.labels[:, 0].numpy() == 1)


def test_csv_of_the_wrong_layout(tmp_path, samples_dir):
    with pytest.raises(DataValidationError) as err:
        convert_csv(str(samples_dir / "aliexpress_train_sample.csv"), str(tmp_path), "2018-01-01", ALI_CCP)
    assert "aliexpress_train_sample.csv" in str(err.value) and "purchase" in err.value.column


def test_bad_csv_value_names_the_file(tmp_path, samples_dir):
    lines = (samples_dir / "ali_ccp_val_sample.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[5] = "oops"
    lines[3] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as err:
        convert_csv(str(bad), str(tmp_path / "out"), "2018-01-01", ALI_CCP)
    assert "bad.csv" in str(err.value) and "oops" in str(err.value) and err.value.column == "124"
    assert not list((tmp_path / "out").rglob("*.tmp"))


def _day_files(day_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(day_dir.iterdir())}


@pytest.mark.parametrize("fmt", ["ali_ccp", "csv"])
def test_converting_a_csv_again_replaces_its_files_whole_or_not_at_all(tmp_path, samples_dir, fmt):
    """A conversion that fails midway leaves the day as an earlier conversion of the same CSV
    left it (it used to replace some of its files, then delete them); one that writes fewer
    files leaves none of the earlier ones beside them (their rows would be read twice)."""
    from pipeline.data.csv_table import CsvTableOptions, convert_table

    def convert(csv, rows_per_file, block_size=1 << 20):
        if fmt == "ali_ccp":
            return convert_csv(str(csv), str(tmp_path / "out"), "2018-01-01", ALI_CCP, rows_per_file, block_size)
        options = CsvTableOptions(rows_per_file=rows_per_file, block_size=block_size)
        return convert_table(str(csv), str(tmp_path / "out"), "2018-01-01", options).files

    day = tmp_path / "out" / "dt=2018-01-01"
    csv = tmp_path / "val.csv"
    csv.write_text((samples_dir / "ali_ccp_val_sample.csv").read_text())
    other = tmp_path / "other.csv"  # another CSV of the same day: never touched
    other.write_text(csv.read_text())
    assert len(convert(other, 100)) == 1
    assert len(convert(csv, 10)) == 5  # 50 rows
    before = _day_files(day)

    lines = csv.read_text().splitlines()
    cells = lines[-2].split(",")
    cells[5] = "oops"
    lines[-2] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")  # a bad value near the end: files are written before it
    with pytest.raises(DataValidationError, match="oops"):
        convert(csv, 10, block_size=1 << 10)
    assert _day_files(day) == before

    csv.write_text((samples_dir / "ali_ccp_val_sample.csv").read_text())
    written = convert(csv, 30)
    assert [w["rows"] for w in written] == [30, 20]
    assert sorted(p.name for p in day.iterdir()) == [
        "part-other-00000.parquet",
        "part-val-00000.parquet",
        "part-val-00001.parquet",
    ]
    assert pq.read_table(day / "part-other-00000.parquet").num_rows == 50
    if fmt == "csv":  # a conversion that keeps no row replaces the CSV's files with none
        from pipeline.data.csv_table import LabelRule

        keep_none = CsvTableOptions(labels=(LabelRule.parse("click=click:5/6"),), unmapped_labels="drop")
        assert convert_table(str(csv), str(tmp_path / "out"), "2018-01-01", keep_none).files == []
        assert sorted(p.name for p in day.iterdir()) == ["part-other-00000.parquet"]
