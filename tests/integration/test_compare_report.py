"""The multi-task quality report (jobs/compare.py): trained on a tiny generated data set through
the real training path, the report has a row per model, valid PNG plots, the numbers the runs
reported, and a verdict on PLE against MMoE and shared-bottom judged against the seed spread."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from helpers.compare_setup import ALL_VARIANTS, SEEDS, TASKS, compare_config, section, table
from pipeline.report.compare import run_comparison
from pipeline.report.writer import write_report


@pytest.fixture(scope="module")
def report(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    job, cc = compare_config(tmp)
    comp = run_comparison(job, cc)
    path = write_report(comp, tmp / "report")
    return comp, path, job, cc


def test_report_files_and_png_plots(report):
    comp, path, _, _ = report
    out = path.parent
    assert path.is_file() and (out / "results.json").is_file()
    from PIL import Image

    pngs = {p.name for p in out.glob("*.png")}
    assert {"auc_curves.png", "gates_ple.png"} <= pngs
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(out / name) as im:
            im.verify()
        assert f"]({name})" in path.read_text()  # linked from the report


def test_tables_have_a_row_per_model_with_the_numbers_the_runs_reported(report):
    comp, path, _, _ = report
    text = path.read_text()
    labels = [v.label for v in comp.variants]
    assert len(labels) == len(ALL_VARIANTS) + len(TASKS) - 1  # one single-task model per task

    every = table(section(text, "Every run"))
    assert sorted((r["model"], int(r["seed"])) for r in every) == sorted((label, s) for label in labels for s in SEEDS)
    runs = {(v.label, r.seed): (v, r) for v in comp.variants for r in comp.runs_of(v.key)}
    for row in every:
        v, run = runs[(row["model"], int(row["seed"]))]
        # The exported model's metadata is written by the training job, not by the report.
        exported = json.loads((Path(run.export_dir) / "model.json").read_text())["metrics"]
        for task in TASKS:
            for m in ("auc", "logloss", "calibration"):
                cell = row[f"{task} {m}"]
                if v.task not in (None, task):
                    assert cell == "—"
                    continue
                assert float(cell) == pytest.approx(run.metrics[f"val/{task}/{m}"], abs=5e-5)
                assert float(cell) == pytest.approx(exported[f"val/{task}/{m}"], abs=5e-5)

    summary = {r["model"]: r for r in table(section(text, "Per-task quality"))}
    assert set(labels) <= set(summary)
    for v in comp.variants:
        for task in [v.task] if v.task else TASKS:
            aucs = [r.metrics[f"val/{task}/auc"] for r in comp.runs_of(v.key)]
            mean, std = summary[v.label][f"{task} AUC"].split(" ± ")
            assert float(mean) == pytest.approx(statistics.fmean(aucs), abs=5e-5)
            assert float(std) == pytest.approx(statistics.stdev(aucs), abs=5e-5)
    best = summary["Best achievable (planted truth)"]
    for task in TASKS:
        assert float(best[f"{task} AUC"]) == pytest.approx(comp.runs[0].metrics[f"val/{task}/best_auc"], abs=5e-5)

    results = json.loads((path.parent / "results.json").read_text())
    assert {(r["variant"], r["seed"]): r["metrics"] for r in results["runs"]} == {
        (r.variant, r.seed): json.loads(json.dumps(r.metrics)) for r in comp.runs
    }
    for r in comp.runs:  # the curves' history: every evaluation, up to the end of the run...
        steps = [h["step"] for h in r.history]
        assert len(steps) >= 2 and steps[-1] == r.metrics["final_step"]
        # ...and the metrics the report shows are those of its best one (early stopping exports it).
        best = r.history[steps.index(int(r.metrics["best/step"]))]
        assert (best["val/ctr/auc"], best["val/cvr/auc"]) == (r.metrics["val/ctr/auc"], r.metrics["val/cvr/auc"])


def test_verdict_states_ple_against_mmoe_and_shared_bottom_per_task(report):
    comp, path, _, _ = report
    verdict = section(path.read_text(), "Verdict")
    for task in TASKS:
        for key, label in (("mmoe", "MMoE"), ("shared_bottom", "Shared-bottom")):
            line = next(x for x in verdict.splitlines() if x.startswith(f"- **{task}**") and label in x)
            ple = [r.metrics[f"val/{task}/auc"] for r in comp.runs_of("ple")]
            other = [r.metrics[f"val/{task}/auc"] for r in comp.runs_of(key)]
            diff = statistics.fmean(p - o for p, o in zip(ple, other, strict=True))
            spread = max(statistics.stdev(ple), statistics.stdev(other))
            word = "beats" if diff > spread else "loses" if diff < -spread else "ties"
            assert f"**{word}**" in line, line
            numbers = [float(x) for x in re.findall(r"[-+]\d+\.\d+|\d+\.\d+", line.replace("−", "-"))]
            assert numbers[0] == pytest.approx(diff, abs=5e-5) and numbers[1] == pytest.approx(spread, abs=5e-5)


def test_expert_utilisation_of_ple(report):
    comp, path, _, cc = report
    ple = comp.runs_of("ple")[0]
    assert len(ple.utilisation) == 2  # two levels
    for level in ple.utilisation:
        for gate in level["task"]:
            assert sum(gate) == pytest.approx(1.0, abs=1e-4)
    assert "### PLE (2 levels)" in section(path.read_text(), "Expert utilisation")


def test_parameter_budgets_within_tolerance(report):
    comp, _, _, cc = report
    assert all(abs(v.budget_gap) <= cc.param_tolerance for v in comp.variants)
    assert len({v.params for v in comp.variants}) > 1  # widths really were rescaled...
    assert comp.variants[0].model.expert_hidden != comp.variants[2].model.expert_hidden


def test_same_comparison_again_reads_the_finished_runs(report):
    comp, _, job, cc = report
    again = run_comparison(job, cc)
    assert all(r.reused for r in again.runs) and not any(r.reused for r in comp.runs)
    assert [r.metrics for r in again.runs] == [json.loads(json.dumps(r.metrics)) for r in comp.runs]
