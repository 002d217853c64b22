import pytest
import yaml

from pipeline.data.feature_spec import FeatureSpecError, load_spec, spec_from_dict

CONFIGS = ["synthetic", "ali_ccp", "aliexpress"]


def _base() -> dict:
    return {
        "name": "t",
        "tables": [
            {"name": "item", "vocab_size": 100, "dim": 8, "pooling": "mean"},
            {"name": "user", "hash_buckets": 50, "dim": 4},
        ],
        "sparse": [
            {"name": "item_id", "column": "item_id", "table": "item"},
            {"name": "history", "column": "history", "table": "item", "type": "list<int64>"},
            {"name": "user", "column": "user", "table": "user", "type": "string"},
        ],
        "dense": [
            {"name": "price", "column": "price", "transform": "log1p"},
            {"name": "age", "column": "age", "transform": "standard", "mean": 30.0, "std": 10.0},
        ],
        "labels": ["click", "conversion"],
        "tasks": [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "sample_space": "click"}],
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load(repo_root, name):
    spec = load_spec(repo_root / "configs" / "features" / f"{name}.yaml")
    assert spec.task_names == ["ctr", "cvr"]
    assert spec.tasks[1].sample_space == "click"
    # every table feeds at least one feature and every feature has a table
    cfgs = spec.table_configs()
    assert sorted(f for c in cfgs for f in c.feature_names) == sorted(spec.feature_names)


def test_shared_table_and_derived_configs():
    spec = spec_from_dict(_base())
    item, user = spec.table_configs()
    assert item.name == "item" and item.num_embeddings == 100 and item.feature_names == ["item_id", "history"]
    assert item.pooling == "mean" and user.num_embeddings == 50 and user.pooling == "sum"
    assert spec.columns() == ["item_id", "history", "user", "price", "age", "click", "conversion"]
    ebcs = spec.embedding_bag_configs()
    from torchrec.modules.embedding_configs import PoolingType

    assert [c.name for c in ebcs] == ["item", "user"]
    assert ebcs[0].feature_names == ["item_id", "history"] and ebcs[0].pooling == PoolingType.MEAN
    assert ebcs[1].embedding_dim == 4 and ebcs[1].num_embeddings == 50


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d["sparse"][1].update(table="itme"), "sparse[1].table"),
        (lambda d: d["tables"][0].update(hash_bucket=10), "tables[0].hash_bucket"),
        (lambda d: d["tables"][0].update(hash_buckets=10), "tables[0]"),
        (lambda d: d["tables"][1].update(dim=0), "tables[1].dim"),
        (lambda d: d["tables"][0].update(pooling="max"), "tables[0].pooling"),
        (lambda d: d["sparse"][0].update(type="float"), "sparse[0].type"),
        (lambda d: d["dense"][1].pop("std"), "dense[1]"),
        (lambda d: d["dense"][0].update(mean=1.0), "dense[0]"),
        (lambda d: d["tasks"][1].update(label="purchase"), "tasks[1].label"),
        (lambda d: d["tasks"][1].update(sample_space="view"), "tasks[1].sample_space"),
        (lambda d: d["sparse"].append({"name": "click", "column": "click", "table": "user"}), "labels[0]"),
        (lambda d: d["tables"].append({"name": "unused", "vocab_size": 3, "dim": 2}), "tables[2]"),
        (lambda d: d["sparse"].append(dict(d["sparse"][0])), "sparse[3]"),
        (lambda d: d.pop("tasks"), "tasks"),
    ],
)
def test_errors_name_the_bad_key(tmp_path, mutate, key):
    data = _base()
    mutate(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FeatureSpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert f"{key}:" in str(err.value), str(err.value)


def test_a_mistyped_key_is_answered_with_the_key_meant(tmp_path):
    data = _base()
    data["tables"][0]["dimm"] = data["tables"][0].pop("dim")
    data["sparse"][1]["misssing"] = "default"
    data["groupby"] = "user_id"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FeatureSpecError) as err:
        load_spec(path)
    for said in (
        "tables[0].dimm: unknown key: did you mean tables[0].dim?",
        "sparse[1].misssing: unknown key: did you mean sparse[1].missing?",
        "groupby: unknown key: did you mean group_by?",
    ):
        assert said in str(err.value), str(err.value)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(FeatureSpecError, match="mapping"):
        load_spec(path)


def test_resized_spec_changes_only_the_named_tables(repo_root):
    from pipeline.data.feature_spec import FeatureSpecError, load_spec

    spec = load_spec(repo_root / "configs/features/synthetic.yaml")
    big = spec.resized({"user": 30_000_000}, {"user": 32, "device": 8})
    tables = {t.name: (t.num_embeddings, t.dim, t.hash_all) for t in big.tables}
    assert tables["user"] == (30_000_000, 32, True)  # hashed into the new size
    assert tables["device"] == (16, 8, True) and tables["item"] == (20_000, 16, False)
    assert big.sparse == spec.sparse and big.dense == spec.dense
    with pytest.raises(FeatureSpecError, match=r"unknown tables \['users'\]"):
        spec.resized({"users": 10})
