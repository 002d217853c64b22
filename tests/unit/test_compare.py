"""The comparison's parts without training: run groups, config overrides, the verdict rule, a
report from fabricated runs, parameter budgets (tests/integration/test_compare_report.py trains
the variants and checks the report they give)."""

from __future__ import annotations

import math
import statistics

import pytest

from helpers.compare_setup import ALL_VARIANTS, TASKS, compare_config, section, table
from pipeline.common.config import ConfigError
from pipeline.report.compare import (
    CompareConfig,
    Comparison,
    RunRecord,
    build_variants,
    dense_params,
    input_dim,
    seed_line,
)
from pipeline.report.writer import difference, write_report


def test_run_group_needs_the_same_data_and_cluster(tmp_path):
    from pipeline.train.config import JobConfig
    from pipeline.train.launch import run_training_group

    job, _ = compare_config(tmp_path)
    other = JobConfig.model_validate({**job.model_dump(mode="json"), "name": "b", "cluster": {"num_workers": 1}})
    with pytest.raises(ValueError, match="b differs from .* in data, cluster"):
        run_training_group([job, other], "g")
    with pytest.raises(ValueError, match="names must differ"):
        run_training_group([job, job], "g")


def test_overrides_split_between_training_and_comparison(tmp_path):
    job, cc = compare_config(tmp_path, "compare.seeds=[3]", "train.dense_lr=0.5")
    assert cc.seeds == [3] and job.train.dense_lr == 0.5 and job.data.generate.rows == 6000
    with pytest.raises(ConfigError, match="compare.seedz"):
        compare_config(tmp_path, "compare.seedz=[1]")
    with pytest.raises(ConfigError, match="compare_local.yaml.*\n.*train.epochz"):
        compare_config(tmp_path, "train.epochz=1")


def test_verdict_rule_against_the_seed_spread(tmp_path):
    """Fabricated runs: a clear win, a tie inside the spread, a clear loss."""
    job, _ = compare_config(tmp_path)
    cc = CompareConfig(variants=["ple", "mmoe", "shared_bottom"], seeds=[0, 1, 2])
    from pipeline.data.feature_spec import load_spec

    spec = load_spec(job.data.spec)
    variants = build_variants(job, cc, spec)
    aucs = {"ple": [0.70, 0.71, 0.72], "mmoe": [0.66, 0.67, 0.68], "shared_bottom": [0.69, 0.715, 0.73]}
    runs = [
        RunRecord(key, s, f"{key}{s}", {"val/ctr/auc": a, "val/cvr/auc": 1.4 - a}, [], "", "", 0.0)
        for key, xs in aucs.items()
        for s, a in enumerate(xs)
    ]
    comp = Comparison(job, cc, spec, variants, runs, 0.0)
    assert difference(comp, "ple", "mmoe", "ctr")["outcome"] == "beats"
    assert difference(comp, "ple", "mmoe", "cvr")["outcome"] == "loses"
    tie = difference(comp, "ple", "shared_bottom", "ctr")
    assert tie["outcome"] == "ties" and tie["mean"] == pytest.approx(-0.005 / 3)
    assert tie["spread"] == pytest.approx(statistics.stdev(aucs["shared_bottom"]))


def _fake_utilisation(levels: int, k: int, s: int, unused_shared_last: bool) -> list[dict]:
    t = len(TASKS)
    out = []
    for i in range(levels):
        last = i == levels - 1
        shared_w = [0.02] * s if last and unused_shared_last else [0.3 / s] * s
        own = [(1 - sum(shared_w)) / k] * k if k else []
        out.append(
            {
                "task": [own + shared_w for _ in TASKS],
                "task_experts": k,
                "shared_experts": s,
                "shared": None if last else [1 / (t * k + s)] * (t * k + s),
            }
        )
    return out


@pytest.mark.parametrize("grouped", [False, True])
def test_report_of_every_variant_from_fabricated_runs(tmp_path, grouped):
    """Every variant kind in the tables (a single-task model only on its task), the seesaw check
    and an unused expert flagged, without training; GAUC beside AUC when the spec has groups."""
    from pipeline.data.feature_spec import load_spec

    job, _ = compare_config(tmp_path)
    cc = CompareConfig(variants=ALL_VARIANTS, seeds=[0, 1, 2])
    spec = load_spec(job.data.spec)
    spec = spec.model_copy(update={"group_by": "user_id" if grouped else None})
    variants = build_variants(job, cc, spec)
    # ctr: every multi-task model gains over single-task; cvr: shared-bottom loses (a seesaw).
    base = {
        "ple": (0.72, 0.75),
        "cgc": (0.71, 0.74),
        "mmoe": (0.71, 0.73),
        "shared_bottom": (0.72, 0.68),
        "single_ctr": (0.68, 0.5),
        "single_cvr": (0.5, 0.72),
    }
    runs = []
    for v in variants:
        for s in cc.seeds:
            m = {"step": 10.0}
            for t, auc in zip(TASKS, base[v.key], strict=True):
                m.update(
                    {
                        f"val/{t}/auc": auc + 0.001 * s,
                        f"val/{t}/logloss": 0.5,
                        f"val/{t}/calibration": 1.0,
                        f"val/{t}/best_auc": 0.8,
                        **({f"val/{t}/gauc": auc + 0.001 * s - 0.05} if grouped else {}),
                    }
                )
            hist = [{"step": 5, **{k: x - 0.01 for k, x in m.items() if k.startswith("val/")}}, {**m}]
            util = (
                _fake_utilisation(
                    v.model.resolved().num_levels,
                    v.model.resolved().task_experts,
                    v.model.resolved().shared_experts,
                    v.key == "ple",
                )
                if v.key in ("ple", "cgc", "mmoe")
                else None
            )
            runs.append(RunRecord(v.key, s, f"{v.key}-s{s}", m, hist, "", "", 1.0, util))
    path = write_report(Comparison(job, cc, spec, variants, runs, 60.0), tmp_path / "report")
    text = path.read_text()
    labels = [v.label for v in variants]
    assert "CGC (= PLE, 1 level)" in labels and "Single-task cvr" in labels
    summary = {r["model"]: r for r in table(section(text, "Per-task quality"))}
    assert set(summary) == set(labels) | {"Best achievable (planted truth)"}
    assert summary["Single-task ctr"]["cvr AUC"] == "—" and summary["Single-task cvr"]["cvr AUC"].startswith("0.7210")
    if grouped:
        assert summary["MMoE"]["ctr GAUC"].startswith("0.6610") and summary["Single-task ctr"]["cvr GAUC"] == "—"
        assert "ctr gauc" in table(section(text, "Every run"))[0]
    else:
        assert "ctr GAUC" not in summary["MMoE"]
    assert len(table(section(text, "Every run"))) == len(labels) * 3
    seesaw = {r["model"]: r for r in table(section(text, "Seesaw check"))}
    assert set(seesaw) == {"PLE (2 levels)", "CGC (= PLE, 1 level)", "MMoE", "Shared-bottom"}
    assert seesaw["Shared-bottom"]["verdict"].startswith("seesaw: gains on ctr, loses on cvr")
    assert seesaw["PLE (2 levels)"]["cvr ΔAUC"].startswith("+0.0300")
    util = section(text, "Expert utilisation")
    assert "shared/0 **(unused)**" in util and "seed 0: unused experts: level 2: shared/0" in util
    for name in ("auc_curves.png", "gates_ple.png", "gates_cgc.png", "gates_mmoe.png"):
        assert (path.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_task_budget_counts_one_tower(tmp_path):
    job, _ = compare_config(tmp_path)
    from pipeline.data.feature_spec import load_spec

    spec = load_spec(job.data.spec)
    single = next(v for v in build_variants(job, CompareConfig(variants=["single_task"]), spec) if v.task == "cvr")
    d = input_dim(spec)
    assert single.loss_weights == [0.0, 1.0]
    assert single.params < dense_params(single.model, d)  # the untrained ctr tower is not counted
    assert math.isclose(single.params, dense_params(job.model, d), rel_tol=0.05)


def test_conflict_sweep_report_from_fabricated_comparisons(tmp_path):
    """compare.conflict: each point on logs of its own strength, PLE's gain per point in the
    table, results.json and a plot, and every point's own report linked."""
    import json

    from PIL import Image

    from pipeline.data.feature_spec import load_spec
    from pipeline.report.sweep import FIGURE, conflict_job, write_sweep_report

    job, cc = compare_config(tmp_path, "compare.conflict=[0,1,1.5]", "compare.variants=[ple,mmoe,shared_bottom]")
    assert cc.conflict == [0, 1, 1.5]
    spec = load_spec(job.data.spec)
    points = []
    for c in cc.conflict:
        point = conflict_job(job, c)
        assert point.data.generate.conflict == c
        assert point.data.root == (job.data.root if c == 1 else f"{job.data.root}/conflict-{c:g}")
        variants = build_variants(point, cc, spec)
        # PLE's lead over MMoE grows with conflict (+0.01 at 0, +0.04 at 1.5); shared-bottom level.
        aucs = {"ple": 0.70 + 0.02 * c, "mmoe": 0.69, "shared_bottom": 0.70 + 0.02 * c}
        runs = [
            RunRecord(
                v.key,
                s,
                f"{v.key}-c{c}-s{s}",
                {
                    **{
                        f"val/{t}/{m}": aucs[v.key] + 0.002 * s
                        for t in TASKS
                        for m in ("auc", "gauc", "logloss", "calibration")
                    },
                    **{f"val/{t}/best_auc": 0.8 for t in TASKS},
                },
                [],
                "",
                "",
                1.0,
            )
            for v in variants
            for s in cc.seeds
        ]
        points.append((c, Comparison(point, cc, spec, variants, runs, 30.0)))
    path = write_sweep_report(points, tmp_path / "sweep")
    text = path.read_text()
    rows = table(text)
    assert [(r["conflict"], r["task"]) for r in rows] == [(c, t) for c in ("0", "1", "1.5") for t in TASKS]
    assert rows[0]["PLE − MMoE"].startswith("+0.0100") and rows[4]["PLE − MMoE"].startswith("+0.0400")
    assert rows[4]["PLE − Shared-bottom"].startswith("+0.0000") and "(ties)" in rows[4]["PLE − Shared-bottom"]
    res = json.loads((path.parent / "results.json").read_text())
    gains = [d["mean"] for p in res["points"] for d in p["differences"] if (d["task"], d["b"]) == ("cvr", "mmoe")]
    assert gains == pytest.approx([0.01, 0.03, 0.04])
    with Image.open(path.parent / FIGURE) as im:
        im.verify()
    for c in ("0", "1", "1.5"):
        assert (path.parent / f"conflict-{c}" / "report.md").is_file() and f"(conflict-{c}/report.md)" in text
    assert "at strength 1.5" in (path.parent / "conflict-1.5" / "report.md").read_text()


def test_conflict_sweep_needs_generated_data(tmp_path, repo_root):
    from pipeline.report.compare import load_compare_config

    with pytest.raises(ConfigError, match="compare.conflict .*data.generate"):
        load_compare_config(repo_root / "configs/jobs/adult.yaml", ["compare.conflict=[0,1]"])


def test_loss_balancing_variants_train_the_reference_with_their_method(tmp_path):
    from pipeline.data.feature_spec import load_spec
    from pipeline.report.compare import run_config

    job, _ = compare_config(tmp_path)
    variants = build_variants(
        job, CompareConfig(variants=["ple", "ple_uncertainty", "ple_dwa"]), load_spec(job.data.spec)
    )
    ple, unc, dwa = variants
    assert unc.model == ple.model == dwa.model and unc.params == ple.params  # the same network, no rescaling
    assert (unc.label, dwa.label) == ("PLE + uncertainty weighting", "PLE + DWA")
    cfgs = [run_config(job, v, seed=0) for v in variants]
    assert [c.train.loss_balancing for c in cfgs] == [job.train.loss_balancing, "uncertainty", "dwa"]
    assert len({c.name for c in cfgs}) == 3


def test_single_task_models_stop_early_on_their_own_task(tmp_path):
    from pipeline.data.feature_spec import load_spec
    from pipeline.report.compare import run_config

    job, _ = compare_config(tmp_path, "train.early_stopping={metric: mean_gauc}")
    variants = build_variants(job, CompareConfig(variants=["ple", "single_task"]), load_spec(job.data.spec))
    metrics = {v.key: run_config(job, v, seed=0).train.early_stopping.metric for v in variants}
    assert metrics == {"ple": "mean_gauc", "single_ctr": "val/ctr/gauc", "single_cvr": "val/cvr/gauc"}


def test_one_console_line_per_seed_with_each_models_aucs(tmp_path):
    from pipeline.data.feature_spec import load_spec

    job, _ = compare_config(tmp_path)
    cc = CompareConfig(variants=["ple", "single_task"], seeds=[0])
    variants = build_variants(job, cc, load_spec(job.data.spec))
    metrics = {"val/ctr/auc": 0.71234, "val/cvr/auc": 0.6, "val/ctr/logloss": 0.4}
    runs = [RunRecord(v.key, 0, v.key, metrics, [], "", "", 1.0) for v in variants]
    assert seed_line(0, variants, runs, 75.0) == (
        "[compare] seed 0 done in 1:15, val AUC ctr/cvr: PLE (2 levels) 0.7123/0.6000, "
        "Single-task ctr 0.7123/—, Single-task cvr —/0.6000"
    )
