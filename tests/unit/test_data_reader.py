"""Listing day partitions and the Ray-free parts of the readers (tests/integration/
test_reader_ray.py reads through Ray Data)."""

import os

import pyarrow as pa
import pytest

from helpers.reader_logs import DAYS, write_reader_logs
from pipeline.data.feature_spec import load_spec
from pipeline.data.files import day_range, dictionary_columns, dictionary_read_schema, list_day_files
from pipeline.data.validation import DataValidationError


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "configs" / "features" / "synthetic.yaml")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_reader_logs(tmp_path_factory.mktemp("logs"))


def test_listing_prunes_days_and_ignores_non_data_files(root, monkeypatch):
    files = list_day_files(str(root), DAYS[1], DAYS[2])
    assert [f.split("/")[-2:] for f in files] == [
        [f"dt={DAYS[1]}", "part-00000.parquet"],
        [f"dt={DAYS[1]}", "part-00001.parquet"],
        [f"dt={DAYS[2]}", "part-00000.parquet"],
        [f"dt={DAYS[2]}", "part-00001.parquet"],
    ]
    assert day_range("2024-02-28", "2024-03-01") == ["2024-02-28", "2024-02-29", "2024-03-01"]
    with pytest.raises(DataValidationError, match="no partition directory for day 2024-03-05") as err:
        list_day_files(str(root), DAYS[2], "2024-03-05")
    assert f"days under {root}: {', '.join(sorted(DAYS))} ({len(DAYS)} in all)" in str(err.value)  # what exists
    assert len(list_day_files(str(root), DAYS[2], "2024-03-05", allow_missing_days=True)) == 4
    # A relative root (as configs write `data/adult`) lists absolute paths: Ray's read tasks and
    # Train controller do not share the driver's working directory.
    monkeypatch.chdir(root.parent)
    relative = list_day_files(root.name, DAYS[1], DAYS[2])
    assert relative == files and all(os.path.isabs(f) for f in relative)


def test_scoring_keeps_key_columns_as_plain_strings(root, spec):
    """Scoring writes its key columns back out as they came, so a string key is not read as a
    dictionary (its output type would change); other string ids still are."""
    first = list_day_files(str(root), DAYS[2], DAYS[2])[0]
    schema = dictionary_read_schema(first, spec.columns(), dictionary_columns(spec, keep_plain=("device",)))
    assert pa.types.is_dictionary(schema.field("category").type)
    assert pa.types.is_string(schema.field("device").type)
    assert schema.names == spec.columns()


def test_decoding_ahead_keeps_order_and_raises_at_the_item_that_failed():
    from pipeline.data.reader import _decoded_ahead

    produced = []

    def items():
        for i in range(5):
            produced.append(i)
            if i == 3:
                raise OSError("corrupt page in file 3")
            yield i

    got = []
    with pytest.raises(OSError, match="file 3"):
        for item in _decoded_ahead(items()):
            got.append(item)
    assert got == [0, 1, 2]  # every item before the failure, in order, then the error itself
    # Stopping early leaves at most one item decoded ahead of what the caller took.
    produced.clear()

    def counted():
        for i in range(100):
            produced.append(i)
            yield i

    ahead = _decoded_ahead(counted())
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()
    assert produced == [0, 1, 2]
