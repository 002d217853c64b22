import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from pipeline.data.batch import Batch
from pipeline.data.collate import collate
from pipeline.data.feature_spec import load_spec
from pipeline.data.id_mapping import int_ids_to_rows, strings_to_rows
from pipeline.data.synthetic import generate_table


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "configs" / "features" / "synthetic.yaml")


@pytest.fixture(scope="module")
def table():
    return generate_table(3000, seed=11)


def test_kjt_matches_arrow_columns(spec, table):
    batch = collate(table, spec)
    kjt = batch.sparse_features
    assert isinstance(kjt, KeyedJaggedTensor) and kjt.keys() == spec.feature_names
    assert kjt.stride() == len(table) == len(batch)
    feats = kjt.to_dict()
    tables = spec.table_by_name
    for f in spec.sparse:
        jt = feats[f.name]
        t = tables[f.table]
        if f.multi_valued:
            expected_len = pc.list_value_length(table[f.column]).to_numpy()
            raw = pc.list_flatten(table[f.column]).to_numpy()
        else:
            expected_len = np.ones(len(table), dtype=np.int64)
            raw = table[f.column]
        assert np.array_equal(jt.lengths().numpy(), expected_len), f.name
        if f.type == "string":
            expected = strings_to_rows(table[f.column].combine_chunks(), t.num_embeddings)
        else:
            expected = int_ids_to_rows(np.asarray(raw), t.num_embeddings, t.hash_all)
        assert np.array_equal(jt.values().numpy(), expected), f.name
        assert (jt.values() < t.num_embeddings).all() and (jt.values() >= 0).all()
    # the shared `item` table: equal ids in item_id and history map to the same row
    assert np.array_equal(feats["item_id"].values().numpy(), table["item_id"].to_numpy())


def test_dense_labels_and_masks(spec, table):
    batch = collate(table, spec)
    assert batch.dense_features.shape == (len(table), spec.num_dense) and batch.dense_features.dtype == torch.float32
    price = table["price"].to_numpy()
    assert torch.allclose(batch.dense_features[:, 0], torch.from_numpy(np.log1p(price)))
    age = table["user_age_days"].to_numpy()
    std = spec.dense[1]
    assert torch.allclose(batch.dense_features[:, 1], torch.from_numpy((age - std.mean) / std.std), atol=1e-5)
    click, conv = table["click"].to_numpy(), table["conversion"].to_numpy()
    assert batch.labels.shape == (len(table), 2)
    assert np.array_equal(batch.labels[:, 0].numpy(), click) and np.array_equal(batch.labels[:, 1].numpy(), conv)
    assert batch.label_masks[:, 0].all()  # CTR: every impression
    assert np.array_equal(batch.label_masks[:, 1].numpy(), click == 1)  # CVR: clicks only


def test_sliced_and_chunked_inputs_give_the_same_batch(spec, table):
    # Ray hands out slices of larger blocks and multi-chunk tables: offsets must be honoured.
    whole = collate(table.slice(1000, 700), spec)
    copied = collate(pa.Table.from_pylist(table.slice(1000, 700).to_pylist(), schema=table.schema), spec)
    chunked = collate(pa.concat_tables([table.slice(1000, 300), table.slice(1300, 400)]), spec)
    record_batch = collate(table.slice(1000, 700).combine_chunks().to_batches()[0], spec)
    for other in (copied, chunked, record_batch):
        assert torch.equal(whole.sparse_features.values(), other.sparse_features.values())
        assert torch.equal(whole.sparse_features.lengths(), other.sparse_features.lengths())
        assert torch.equal(whole.dense_features, other.dense_features)
        assert torch.equal(whole.labels, other.labels)


def test_batch_is_pipelineable(spec, table):
    batch = collate(table.slice(0, 64), spec)
    assert isinstance(batch, Pipelineable)
    moved = batch.to(torch.device("cpu"), non_blocking=True)
    assert isinstance(moved, Batch)
    assert torch.equal(moved.sparse_features.values(), batch.sparse_features.values())
    assert torch.equal(moved.label_masks, batch.label_masks)
    if torch.cuda.is_available():  # pin_memory and record_stream need an accelerator
        pinned = batch.pin_memory()
        assert pinned.dense_features.is_pinned()
        on_gpu = pinned.to(torch.device("cuda"), non_blocking=True)
        on_gpu.record_stream(torch.cuda.current_stream())


def test_empty_history_rows_and_empty_batch(spec, table):
    batch = collate(table.slice(0, 0), spec)
    assert len(batch) == 0 and batch.sparse_features.values().numel() == 0
    t = table.slice(0, 5)
    empty_hist = pa.array([[]] * 5, pa.list_(pa.int64()))
    t = t.set_column(t.schema.get_field_index("history"), "history", empty_hist)
    lengths = collate(t, spec).sparse_features.to_dict()["history"].lengths()
    assert lengths.tolist() == [0] * 5
