"""Where PLE's gain appears: the comparison repeated over the generator's conflict strength
(`compare.conflict: [0, 0.5, 1]`, `data.generate.conflict` of each comparison's own logs), and
PLE minus MMoE and PLE minus shared-bottom plotted against it, per task.

The PLE and MMoE papers argue that gated experts gain more as the tasks conflict more; the
sweep measures it on the planted truth of pipeline/data/synthetic.py, whatever it shows. Each
point is a whole comparison (every variant, every seed) on freshly generated logs: the same
catalogue, rows and seed, only the clickbait effect's strength differs.

    <out>/report.md            the sweep: a table and conflict_sweep.png
    <out>/results.json         its numbers
    <out>/conflict-<c>/        each point's full comparison report
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.common.files import no_nan, write_text_atomic
from pipeline.report.compare import CompareConfig, Comparison, run_comparison
from pipeline.report.writer import (
    PLE_OPPONENTS,
    fmt,
    label_axes,
    label_of,
    md_table,
    ple_verdict,
    pyplot,
    save_figure,
    write_report,
)
from pipeline.train.config import JobConfig

FIGURE = "conflict_sweep.png"


def conflict_job(job: JobConfig, conflict: float) -> JobConfig:
    """`job` on logs generated with this conflict strength, under a root of their own; `job`
    itself at its own strength (so the sweep reuses that comparison's finished runs)."""
    if job.data.generate is None:
        raise ValueError("the conflict sweep needs data.generate (it generates the logs of every point)")
    if conflict == job.data.generate.conflict:
        return job
    data = job.model_dump(mode="json")
    data["data"]["root"] = f"{job.data.root}/conflict-{conflict:g}"
    data["data"]["generate"]["conflict"] = conflict
    return JobConfig.model_validate(data)


def run_sweep(
    job: JobConfig, cc: CompareConfig, address: str | None = None, rerun: bool = False
) -> list[tuple[float, Comparison]]:
    """One comparison per value of `cc.conflict`, in order, in one Ray session."""
    assert cc.conflict is not None
    points = []
    for i, c in enumerate(cc.conflict):
        print(f"[compare] conflict {c:g}: {len(cc.variants)} variants x {len(cc.seeds)} seeds", flush=True)
        # The models are the same at every conflict strength: their sizes are printed once.
        points.append((c, run_comparison(conflict_job(job, c), cc, address, rerun, describe=i == 0)))
    return points


def sweep_results(points: list[tuple[float, Comparison]]) -> dict:
    """Per conflict value: PLE's differences (writer.difference: per seed, mean, spread, outcome)
    and the best achievable AUCs."""
    rows = []
    for c, comp in points:
        best = {t: comp.runs[0].metrics.get(f"val/{t}/best_auc") for t in comp.spec.task_names}
        rows.append({"conflict": c, "differences": ple_verdict(comp), "best_auc": best, "seconds": comp.seconds})
    comp0 = points[0][1]
    return {"points": rows, "tasks": comp0.spec.task_names, "labels": {v.key: v.label for v in comp0.variants}}


def plot_sweep(res: dict, path: Path) -> None:
    """Per task: PLE minus each opponent against conflict strength, the mean over seeds with the
    seed spread as error bars, and every seed's difference as a dot."""
    plt = pyplot()
    tasks = res["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, other in enumerate(PLE_OPPONENTS):
            pts = [
                (p["conflict"], d)
                for p in res["points"]
                for d in p["differences"]
                if (d["task"], d["b"]) == (task, other)
            ]
            if not pts:
                continue
            xs = [c for c, _ in pts]
            shift = (i - 0.5) * 0.02 * (max(xs) - min(xs) or 1)  # the two opponents side by side
            bar = ax.errorbar(
                [x + shift for x in xs],
                [d["mean"] for _, d in pts],
                yerr=[0 if math.isnan(d["spread"]) else d["spread"] for _, d in pts],  # NaN: one seed
                marker="o",
                capsize=3,
                label=f"PLE − {res['labels'][other]}",
            )
            for x, d in pts:
                ax.scatter([x + shift] * len(d["per_seed"]), d["per_seed"], s=8, alpha=0.4, color=bar[0].get_color())
        ax.axhline(0, color="black", linewidth=0.8)
        label_axes(
            ax,
            f"{task}: PLE's AUC gain",
            "conflict strength (data.generate.conflict)",
            "AUC difference (mean ± seed spread)",
        )
    save_figure(fig, path)


def markdown(points: list[tuple[float, Comparison]], res: dict) -> str:
    comp0 = points[0][1]
    cc, tasks = comp0.compare, res["tasks"]
    lines = [
        f"# Where PLE's gain appears: {comp0.job.name} over conflict strength",
        "",
        f"The comparison ran {len(points)} times on logs generated with the clickbait effect (it raises clicks "
        f"and lowers conversions) at strengths {', '.join(f'{c:g}' for c, _ in points)} "
        "(0: none; 1: the generator's default), everything else equal: "
        f"{len(cc.seeds)} seeds, {len(comp0.variants)} models each. A difference is PLE's validation AUC minus "
        "the other model's on the same seed, averaged over seeds; the spread is the larger of the two "
        "models' seed standard deviations; beyond it a win or a loss, within it a tie.",
        "",
        f"![PLE minus MMoE and shared-bottom against conflict strength]({FIGURE})",
        "",
    ]
    header = ["conflict", "task"] + [f"PLE − {label_of(comp0, o)}" for o in PLE_OPPONENTS if o in _keys(comp0)]
    rows = []
    for p in res["points"]:
        for task in tasks:
            cells = [
                f"{fmt(d['mean'], sign=True)} ± {fmt(d['spread'])} ({d['outcome']})"
                for d in p["differences"]
                if d["task"] == task
            ]
            rows.append([f"{p['conflict']:g}", task, *cells])
    lines += md_table(header, rows)
    lines += ["", "Each point's full report (every model, run, gate and curve):", ""]
    lines += [f"- conflict {c:g}: [conflict-{c:g}/report.md](conflict-{c:g}/report.md)" for c, _ in points]
    minutes = sum(p["seconds"] for p in res["points"]) / 60
    lines += ["", f"Training time: {minutes:.1f} min in all."]
    return "\n".join(lines) + "\n"


def _keys(comp: Comparison) -> set[str]:
    return {v.key for v in comp.variants}


def write_sweep_report(points: list[tuple[float, Comparison]], out_dir: str | Path) -> Path:
    """Every point's report under `out_dir`/conflict-<c>/, then the sweep's report.md, its
    results.json and conflict_sweep.png; returns the path of the sweep's report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for c, comp in points:
        write_report(comp, out / f"conflict-{c:g}")
    res = sweep_results(points)
    plot_sweep(res, out / FIGURE)
    write_text_atomic(out / "results.json", json.dumps(no_nan(res), indent=1, default=float))
    path = out / "report.md"
    write_text_atomic(path, markdown(points, res))
    return path
