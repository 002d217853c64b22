"""Config files: `extends` starts a config from another's values (sections merged key by key,
overrides applied last), and a loop or a file that is not a mapping is refused by name."""

from __future__ import annotations

import pytest

from pipeline.common.config import ConfigError, differences, read_config_dict


def test_extends_merges_sections_and_overrides_win(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ntrain: {epochs: 3, dense_lr: 0.01}\ncluster: {num_workers: 2}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\nname: child\ntrain: {epochs: 5}\n")
    data = read_config_dict(tmp_path / "sub" / "child.yaml", ["train.dense_lr=0.5"])
    assert data == {"name": "child", "train": {"epochs": 5, "dense_lr": 0.5}, "cluster": {"num_workers": 2}}


def test_extends_loop_and_non_mapping_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends` loops"):
        read_config_dict(tmp_path / "a.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: a config is a mapping"):
        read_config_dict(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        read_config_dict(tmp_path / "missing.yaml")


def test_comparison_config_is_the_quality_config_on_more_fresh_days_of_a_smaller_catalogue(repo_root):
    """The comparison trains the quality default's model with its optimizer and cluster, on 14
    days seen once instead of 3 days seen 3 times, with as many rows per day, of half the
    users and items (configs/jobs/compare_local.yaml says why)."""
    from pipeline.data.files import day_range

    quality = read_config_dict(repo_root / "configs/jobs/train_quality.yaml")
    compare = read_config_dict(repo_root / "configs/jobs/compare_local.yaml")
    assert compare.pop("compare")["seeds"] == [0, 1, 2]
    for section in ("model", "cluster", "output_dir"):
        assert compare[section] == quality[section]
    changed = {k for k, v in compare["train"].items() if quality["train"].get(k) != v}
    assert changed == {"epochs", "eval_every_steps"} and set(compare["train"]) == set(quality["train"])

    def days(config: dict) -> int:
        return len(day_range(*(str(d) for d in config["data"]["train_days"])))

    def rows_per_day(config: dict) -> float:
        return config["data"]["generate"]["rows"] / config["data"]["generate"]["days"]

    assert (days(compare), compare["train"]["epochs"], days(quality), quality["train"]["epochs"]) == (14, 1, 3, 3)
    assert rows_per_day(compare) == rows_per_day(quality)  # 14 days seen once: 14/9 of the steps
    gen, quality_gen = compare["data"]["generate"], quality["data"]["generate"]
    assert (gen["num_users"], gen["num_items"]) == (quality_gen["num_users"] // 2, quality_gen["num_items"] // 2)
    differ = ("rows", "days", "num_users", "num_items")
    assert {k: v for k, v in gen.items() if k not in differ} == {
        k: v for k, v in quality_gen.items() if k not in differ
    }
    assert compare["data"]["root"] != quality["data"]["root"] and compare["data"]["spec"] == quality["data"]["spec"]


def test_dates_stay_strings_and_errors_name_key_and_value(repo_root):
    from pipeline.train.config import load_config

    cfg = load_config(repo_root / "configs/jobs/train_local.yaml", ["data.train_days=[2026-01-01,2026-01-02]"])
    assert cfg.data.train_days == ("2026-01-01", "2026-01-02")  # typed unquoted, as users do
    with pytest.raises(ConfigError, match=r"train\.epochs: .*\(got 'many'\)"):
        load_config(repo_root / "configs/jobs/train_local.yaml", ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"override 'train.epochs': cannot read the value '\[1'"):
        load_config(repo_root / "configs/jobs/train_local.yaml", ["train.epochs=[1"])


@pytest.mark.parametrize(
    "override, said",
    [
        (
            "data.val_days=[2026-01-05,2026-01-03]",
            "data.val_days: expected [first day, last day], both YYYY-MM-DD (end_day 2026-01-03 is before start_day "
            "2026-01-05) (got ['2026-01-05', '2026-01-03'])",
        ),
        (
            "data.train_days=['2026-13-01','2026-01-02']",
            "data.train_days: expected [first day, last day], both YYYY-MM-DD (month must be in 1..12) "
            "(got ['2026-13-01', '2026-01-02'])",
        ),
        (
            "data.val_days=[2026-01-02,2026-01-04]",
            "data: val_days ['2026-01-02', '2026-01-04'] overlap train_days ['2026-01-01', '2026-01-02'] "
            "(2026-01-02): validation would measure the model on rows it trained on; choose validation days "
            "outside the training days",
        ),
    ],
)
def test_training_and_validation_days_are_ranges_apart(repo_root, override, said):
    """A reversed or malformed range was a ValueError traceback from deep in the reader; validation
    days inside the training days trained silently and reported flattering metrics."""
    from pipeline.train.config import load_config

    with pytest.raises(ConfigError) as err:
        load_config(repo_root / "configs/jobs/train_local.yaml", [override])
    assert str(err.value).splitlines()[1:] == [f"  {said}"]
    cfg = load_config(repo_root / "configs/jobs/train_local.yaml", ["data.val_days=['20260103','20260104']"])
    assert cfg.data.val_days == ("2026-01-03", "2026-01-04")  # the converters' compact days, as the partitions are


@pytest.mark.parametrize(
    "config, override, said",
    [
        ("train_local", "train.batchsize=16", "train.batchsize: unknown key: did you mean train.batch_size? (got 16)"),
        ("train_local", "modle.num_levels=3", "modle: unknown key: did you mean model?"),
        ("train_local", "train.zzz=1", "train.zzz: unknown key (train has: batch_size, epochs, "),
        ("train_local", "zzz=1", "zzz: unknown key (the top level has: name, output_dir, data, model, "),
        ("retrain_local", "data.rot=x", "data.rot: unknown key: did you mean data.root? (got 'x')"),
        ("retrain_local", "retrain.registy=x", "retrain.registy: unknown key: did you mean retrain.registry?"),
        ("score_local", "num_actor=3", "num_actor: unknown key: did you mean num_actors? (got 3)"),
        ("compare_local", "compare.seed=[1]", "compare.seed: unknown key: did you mean compare.seeds? (got [1])"),
    ],
)
def test_a_mistyped_key_is_answered_with_the_key_meant(repo_root, config, override, said):
    from pipeline.report.compare import load_compare_config
    from pipeline.retrain.config import load_retrain_config
    from pipeline.score.config import load_score_config
    from pipeline.train.config import load_config

    load = {"train": load_config, "retrain": load_retrain_config, "score": load_score_config}
    loader = load.get(config.split("_")[0], load_compare_config)
    with pytest.raises(ConfigError) as err:
        loader(repo_root / f"configs/jobs/{config}.yaml", [override])
    assert said in str(err.value), str(err.value)


def test_differences_name_each_changed_value_by_its_key():
    there = {
        "model": {"task_experts": 2, "expert_hidden": [64], "dropout": 0.0},
        "spec": {
            "tables": [{"name": "user", "dim": 16}, {"name": "category", "hash_buckets": 1024}],
            "dense": [{"name": "price", "mean": None}, {"name": "hour"}],
            "group_by": None,
        },
    }
    now = {
        "model": {"task_experts": 3, "expert_hidden": [64, 32], "dropout": 0.0},
        "spec": {
            "tables": [{"name": "category", "hash_buckets": 2048}, {"name": "user", "dim": 16}],  # order is no change
            "dense": [{"name": "price", "mean": 1.5}, {"name": "price2"}],
            "group_by": "user_id",
        },
    }
    assert differences(there, now) == [
        "model.task_experts: 2 there, 3 now",
        "model.expert_hidden: [64] there, [64, 32] now",
        "spec.tables[category].hash_buckets: 1024 there, 2048 now",
        "spec.dense[hour] removed",
        "spec.dense[price2] added",
        "spec.dense[price].mean: not set there, 1.5 now",
        "spec.group_by: not set there, 'user_id' now",
    ]
    assert differences(there, there) == []
