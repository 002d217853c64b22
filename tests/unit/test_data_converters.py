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
