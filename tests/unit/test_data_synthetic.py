"""The synthetic logs' planted truth: deterministic, conversions only after clicks, labels that
follow the true probabilities, tasks that share and conflict, Zipf ids."""

import numpy as np
import pyarrow.compute as pc
import pytest

from pipeline.data.synthetic import SCHEMA, generate_table


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, score)


@pytest.fixture(scope="module")
def table():
    return generate_table(100_000, seed=3)


def test_deterministic_and_seed_dependent():
    a, b, c = generate_table(2000, seed=1), generate_table(2000, seed=1), generate_table(2000, seed=2)
    assert a.schema == SCHEMA
    assert a.equals(b)
    assert not a.equals(c)
    assert not generate_table(2000, 1, stream=(0, 1, 0)).equals(generate_table(2000, 1, stream=(0, 2, 0)))


def test_conversion_only_after_click(table):
    click, conv = table["click"].to_numpy(), table["conversion"].to_numpy()
    assert set(np.unique(click)) == {0, 1} and set(np.unique(conv)) == {0, 1}
    assert not np.any((conv == 1) & (click == 0))
    assert 0.05 < click.mean() < 0.5 and 0.1 < conv[click == 1].mean() < 0.7


def test_labels_follow_the_true_probabilities(table):
    click, conv = table["click"].to_numpy(), table["conversion"].to_numpy()
    p_click, p_conv = table["true_p_click"].to_numpy(), table["true_p_conv"].to_numpy()
    assert abs(click.mean() - p_click.mean()) < 0.01  # calibrated
    clicked = click == 1
    assert abs(conv[clicked].mean() - p_conv[clicked].mean()) < 0.02
    # the best achievable AUCs leave a learnable but imperfect task
    assert 0.65 < _auc(click, p_click) < 0.95
    assert 0.65 < _auc(conv[clicked], p_conv[clicked]) < 0.95


def test_tasks_share_and_conflict(table):
    p_click, p_conv = table["true_p_click"].to_numpy(), table["true_p_conv"].to_numpy()
    logit = lambda p: np.log(p / (1 - p))
    corr = np.corrcoef(logit(p_click), logit(p_conv))[0, 1]
    assert 0.1 < corr < 0.9, corr  # shared signal, but far from the same task
    # seesaw: items that attract clicks but convert worse exist in numbers (clickbait term)
    item = table["item_id"].to_numpy()
    uniq, inv = np.unique(item, return_inverse=True)
    mean_click = np.bincount(inv, logit(p_click)) / np.bincount(inv)
    mean_conv = np.bincount(inv, logit(p_conv)) / np.bincount(inv)
    above_click = mean_click > np.median(mean_click)
    below_conv = mean_conv < np.median(mean_conv)
    assert (above_click & below_conv).mean() > 0.1


def test_zipf_ids_and_varying_history(table):
    users = table["user_id"].to_numpy()
    counts = np.sort(np.bincount(users))[::-1]
    assert counts[: len(counts) // 100].sum() > 0.2 * len(users)  # top 1% of ids: >20% of traffic
    lengths = pc.list_value_length(table["history"]).to_numpy()
    assert lengths.min() == 0 and lengths.max() >= 15 and 4 < lengths.mean() < 12
    assert table["history"].null_count == 0


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p / (1 - p))


def test_conflict_knob_scales_only_the_clickbait_effect():
    from pipeline.data.synthetic import SyntheticConfig

    tables = {c: generate_table(5000, seed=4, config=SyntheticConfig(conflict=c)) for c in (0.0, 1.0, 2.0)}
    assert tables[1.0].equals(generate_table(5000, seed=4))  # 1 is the default: the same logs as before
    inputs = [n for n in SCHEMA.names if n not in ("click", "conversion", "true_p_click", "true_p_conv")]
    assert all(tables[0.0].select(inputs).equals(t.select(inputs)) for t in tables.values())

    def shift(c: float, column: str) -> np.ndarray:  # what conflict c adds to the task's logit
        return _logit(tables[c][column].to_numpy()) - _logit(tables[0.0][column].to_numpy())

    click1, conv1 = shift(1.0, "true_p_click"), shift(1.0, "true_p_conv")
    # One per-item effect, in opposite directions (+0.8 and -0.9 times clickbait), twice as big at 2.
    assert np.corrcoef(click1, conv1)[0, 1] < -0.999
    np.testing.assert_allclose(conv1, -0.9 / 0.8 * click1, atol=1e-4)
    np.testing.assert_allclose(shift(2.0, "true_p_click"), 2 * click1, atol=1e-4)
    assert click1.std() > 0.3  # a real effect at the default strength
    # Without it the click and conversion probabilities of an item no longer pull apart.
    p0 = tables[0.0].to_pandas().groupby("item_id")[["true_p_click", "true_p_conv"]].mean()
    p1 = tables[1.0].to_pandas().groupby("item_id")[["true_p_click", "true_p_conv"]].mean()
    assert p0.corr().iloc[0, 1] > p1.corr().iloc[0, 1] + 0.2


def test_id_drift_replaces_a_share_of_the_catalogue_each_day_with_ids_as_popular_as_the_old():
    from pipeline.data.synthetic import SyntheticConfig

    config = SyntheticConfig(num_users=2000, num_items=500, id_drift=0.2)
    assert generate_table(3000, seed=5, config=SyntheticConfig(num_users=2000, num_items=500)).equals(
        generate_table(3000, seed=5, config=SyntheticConfig(num_users=2000, num_items=500, id_drift=0.0), day=4)
    )  # no drift: every day has the same catalogue, as before the knob
    days = [generate_table(40_000, seed=5, config=config, day=d) for d in range(3)]
    users = [set(d["user_id"].to_numpy().tolist()) for d in days]
    assert min(users[0]) >= 0 and max(users[0]) < 2000 and min(users[1]) >= 400 and max(users[1]) < 2400
    new_on_day1 = {u for u in users[1] if u >= 2000}
    assert 350 <= len(new_on_day1) <= 400  # the 400 ids that arrived (a few unseen in 40k rows)
    assert not new_on_day1 & users[0]
    # New ids take popularity ranks at random: their share of day 1's traffic is about their share of ids.
    day1 = days[1]["user_id"].to_numpy()
    assert 0.1 < np.isin(day1, list(new_on_day1)).mean() < 0.3
    items = [set(d["item_id"].to_numpy().tolist()) for d in days]
    assert min(items[2]) >= 200 and max(items[2]) < 700
    history = set(days[2]["history"].combine_chunks().flatten().to_numpy().tolist())
    assert history <= set(range(200, 700))  # the day's own items


def test_a_small_data_set_is_written_by_this_process_without_ray(tmp_path):
    """Under RAY_TASKS_MIN_ROWS rows no Ray task starts (this folder's conftest refuses ray.init):
    the files, their days and row counts are those of the Ray path."""
    import pyarrow.parquet as pq

    from pipeline.data.synthetic import RAY_TASKS_MIN_ROWS, generate_dataset

    rows = 5_001
    assert rows < RAY_TASKS_MIN_ROWS
    written = generate_dataset(str(tmp_path), rows, days=2, files_per_day=2, seed=1, chunk_rows=1000)
    assert [w["rows"] for w in written] == [1251, 1250, 1250, 1250]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")) == [
        "dt=2026-01-01/part-00000.parquet",
        "dt=2026-01-01/part-00001.parquet",
        "dt=2026-01-02/part-00000.parquet",
        "dt=2026-01-02/part-00001.parquet",
    ]
    assert [pq.ParquetFile(w["path"]).metadata.num_rows for w in written] == [1251, 1250, 1250, 1250]


def test_generating_into_days_that_hold_logs_is_refused(tmp_path, capsys):
    """jobs.generate would replace some of their files and sit beside the others."""
    from jobs.generate import main
    from pipeline.common.errors import EXIT_BAD_CONFIG

    out = tmp_path / "logs"
    main(["--out", str(out), "--rows", "2000", "--days", "2", "--files-per-day", "2"])
    before = {p: p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
    assert len(before) == 4
    for start_day in ("2026-01-01", "2026-01-02"):  # the same days, or one of them
        with pytest.raises(SystemExit) as exit_:
            main(["--out", str(out), "--rows", "1000", "--days", "2", "--start-day", start_day, "--seed", "1"])
        assert exit_.value.code == EXIT_BAD_CONFIG
        assert capsys.readouterr().err == (
            f"error: --out {out}: dt={start_day} holds 2 Parquet files already (part-00000.parquet, "
            "part-00001.parquet): the generated ones would replace or join them; generate into an empty folder, "
            "or remove those days\n"
        )
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.parquet"))} == before
    main(["--out", str(out), "--rows", "1000", "--days", "1", "--start-day", "2026-01-03"])  # a new day: fine
    assert len(list(out.rglob("*.parquet"))) == 5
