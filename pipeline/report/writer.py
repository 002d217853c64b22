"""The comparison's report: report.md (tables and a plain-language verdict), results.json (every
number the runs reported, and the ones derived from them), and matplotlib PNGs.

Judging against the seed spread: a difference between two models is the mean over seeds of the
per-seed differences (same seed: same initial weights' draw and shuffle order), and the seed
spread is the larger of the two models' standard deviations over seeds. A difference beyond the
spread is a win or a loss; within it, a tie. With one seed there is no spread: differences are
reported, not judged.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path

from pipeline.common.files import no_nan, write_text_atomic
from pipeline.report.compare import Comparison
from pipeline.train.progress import said as fmt  # n/a for what a set could not measure

METRICS = ("auc", "logloss", "calibration")
METRIC_LABELS = {"auc": "AUC", "logloss": "log loss", "calibration": "calibration", "gauc": "GAUC"}
PLE_OPPONENTS = ("mmoe", "shared_bottom")


# -- numbers ---------------------------------------------------------------------------------


def values(comp: Comparison, key: str, task: str, metric: str = "auc") -> list[float]:
    """The metric of every seed's run of a variant, in seed order, as the runs reported it."""
    return [float(r.metrics[f"val/{task}/{metric}"]) for r in comp.runs_of(key)]


def reported_metrics(comp: Comparison) -> tuple[str, ...]:
    """The metrics every run reports: GAUC too when the spec names a group_by column."""
    return METRICS + (("gauc",) if comp.spec.group_by else ())


def stats(xs: list[float]) -> dict:
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else float("nan"),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
    }


def judged_tasks(comp: Comparison, key: str) -> list[str]:
    """Tasks a variant is judged on: a single-task model only on its own task."""
    v = next(v for v in comp.variants if v.key == key)
    return [v.task] if v.task else comp.spec.task_names


def difference(comp: Comparison, a: str, b: str, task: str) -> dict:
    """a minus b on the task's AUC: per seed, mean, the seed spread and the outcome."""
    xa, xb = values(comp, a, task), values(comp, b, task)
    diffs = [p - q for p, q in zip(xa, xb, strict=False)]
    mean = statistics.fmean(diffs)
    spread = max(stats(xa)["std"], stats(xb)["std"])
    if math.isnan(spread):
        outcome = "higher" if mean > 0 else "lower" if mean < 0 else "equal"
    else:
        outcome = "beats" if mean > spread else "loses" if mean < -spread else "ties"
    return {
        "task": task,
        "a": a,
        "b": b,
        "per_seed": diffs,
        "mean": mean,
        "spread": spread,
        "a_higher_on": sum(d > 0 for d in diffs),
        "seeds": len(diffs),
        "outcome": outcome,
    }


def ple_verdict(comp: Comparison) -> list[dict]:
    keys = {v.key for v in comp.variants}
    # A one-level PLE is listed only as CGC (the same network): then CGC speaks for PLE.
    ple = "ple" if "ple" in keys else "cgc" if "cgc" in keys else None
    if ple is None:
        return []
    return [
        difference(comp, ple, other, task) for task in comp.spec.task_names for other in PLE_OPPONENTS if other in keys
    ]


def seesaw(comp: Comparison) -> list[dict]:
    """Per multi-task model: each task's AUC gain over that task's single-task model."""
    singles = {v.task: v.key for v in comp.variants if v.task}
    rows = []
    for v in comp.variants:
        if v.task or not singles:
            continue
        gains = {t: difference(comp, v.key, singles[t], t) for t in comp.spec.task_names if t in singles}
        up = [t for t, g in gains.items() if g["outcome"] in ("beats", "higher")]
        down = [t for t, g in gains.items() if g["outcome"] in ("loses", "lower")]
        if up and down:
            verdict = f"seesaw: gains on {', '.join(up)}, loses on {', '.join(down)}"
        elif down:
            verdict = f"loses on {', '.join(down)}" + (", ties on the rest" if len(down) < len(gains) else "")
        elif up:
            verdict = (
                f"gains on {' and '.join(up)}" + (", ties on the rest" if len(up) < len(gains) else "") + ": no seesaw"
            )
        else:
            verdict = "ties with the single-task models on every task"
        rows.append({"variant": v.key, "gains": gains, "verdict": verdict})
    return rows


def expert_matrix(level: dict, tasks: list[str]) -> tuple[list[str], list[str], list[list[float]]]:
    """(gate names, expert names, weights [gate][expert], NaN where a gate cannot pick the
    expert). Experts are ordered as the level's shared gate sees them: every task's own, then
    the shared ones."""
    k, s, t = level["task_experts"], level["shared_experts"], len(tasks)
    experts = [f"{task}/{i}" for task in tasks for i in range(k)] + [f"shared/{i}" for i in range(s)]
    rows, gates = [], []
    for ti, task in enumerate(tasks):
        row = [math.nan] * (t * k + s)
        w = level["task"][ti]
        row[ti * k : (ti + 1) * k] = w[:k]
        row[t * k :] = w[k:]
        rows.append(row)
        gates.append(f"{task} gate")
    if level["shared"] is not None:
        rows.append(list(level["shared"]))
        gates.append("shared gate")
    return gates, experts, rows


def unused_experts(level: dict, tasks: list[str], threshold: float) -> list[str]:
    _, experts, rows = expert_matrix(level, tasks)
    best = [max(r[j] for r in rows if not math.isnan(r[j])) for j in range(len(experts))]
    return [e for e, w in zip(experts, best, strict=True) if w < threshold]


def results(comp: Comparison) -> dict:
    """Everything report.md shows, as numbers (results.json)."""
    tasks = comp.spec.task_names
    first = comp.runs[0].metrics
    summary = {
        v.key: {
            t: {m: stats(values(comp, v.key, t, m)) for m in reported_metrics(comp)} for t in judged_tasks(comp, v.key)
        }
        for v in comp.variants
    }
    unused = {
        r.name: [unused_experts(lvl, tasks, comp.compare.unused_gate_weight) for lvl in r.utilisation]
        for r in comp.runs
        if r.utilisation
    }
    return {
        "config": comp.job.model_dump(mode="json"),
        "compare": comp.compare.model_dump(mode="json"),
        "seconds": comp.seconds,
        "variants": [
            {**asdict(v), "model": v.model.model_dump(mode="json"), "budget_gap": v.budget_gap} for v in comp.variants
        ],
        "runs": [asdict(r) for r in comp.runs],
        "best_auc": {t: first[f"val/{t}/best_auc"] for t in tasks if f"val/{t}/best_auc" in first},
        "summary": summary,
        "ple_verdict": ple_verdict(comp),
        "seesaw": seesaw(comp),
        "unused_experts": unused,
    }


# -- Markdown ----------------------------------------------------------------------------------


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def label_of(comp: Comparison, key: str) -> str:
    return next(v.label for v in comp.variants if v.key == key)


def _sentence(comp: Comparison, d: dict) -> str:
    a, b = label_of(comp, d["a"]), label_of(comp, d["b"])
    how = (
        f"{fmt(d['mean'], sign=True)} AUC (mean of the per-seed differences), seed spread {fmt(d['spread'])}; "
        f"higher on {d['a_higher_on']} of {d['seeds']} seeds"
    )
    if d["outcome"] == "beats":
        return f"{a} **beats** {b} by {how}."
    if d["outcome"] == "loses":
        return f"{a} **loses** to {b}: {how}."
    if d["outcome"] == "ties":
        return f"{a} **ties** with {b} within the seed spread: {how}."
    return (
        f"{a} is {d['outcome']} than {b}: {fmt(d['mean'], sign=True)} AUC on the one seed "
        "(no spread measured, not judged)."
    )


def markdown(comp: Comparison, res: dict, images: dict[str, str]) -> str:
    job, tasks, cc = comp.job, comp.spec.task_names, comp.compare
    best = res["best_auc"]
    d = job.data
    lines = [f"# Multi-task quality report: {job.name}", ""]
    reused = sum(r.reused for r in comp.runs)
    lines += [
        f"Trained {len(comp.variants)} models x {len(cc.seeds)} seeds ({', '.join(map(str, cc.seeds))}): "
        f"{len(comp.runs)} runs, {sum(r.seconds for r in comp.runs) / 60:.1f} min in all"
        + (f" ({reused} of them read back from an earlier comparison)" if reused else "")
        + f", each through the training job's path (Ray Train, "
        f"{job.cluster.num_workers} workers, sharded TorchRec tables; one Ray Train run per seed trains the "
        f"models in turn), on the same data "
        f"(`{d.root}`, train {d.train_days[0]}..{d.train_days[1]}, validation {d.val_days[0]}..{d.val_days[1]}), "
        f"the same embedding tables (`{d.spec}`), the same training settings and the same seeds. "
        + (
            "Numbers are validation metrics of each run's best evaluation (early stopping on "
            f"`{job.train.early_stopping.metric}`), the checkpoint it exported."
            if job.train.early_stopping
            else "Numbers are validation metrics of the final evaluation of each run."
        )
    ]
    if best:
        conflict = job.data.generate.conflict if job.data.generate else None
        lines += [
            "",
            "The data is generated with a planted ground truth (`pipeline/data/synthetic.py`): some signals "
            "are shared by the tasks, and one conflicts (clickbait raises clicks and lowers conversions"
            + (f", at strength {conflict:g}" if conflict is not None else "")
            + "). *Best achievable* is the AUC of the true probabilities on the same validation rows.",
        ]

    lines += [
        "",
        "## Verdict: PLE against MMoE and shared-bottom",
        "",
        "Difference: PLE's validation AUC minus the other model's on the same seed, averaged over seeds. "
        "Seed spread: the larger of the two models' AUC standard deviations over seeds. A difference "
        "beyond the spread is a win or a loss; within it, a tie.",
        "",
    ]
    if not res["ple_verdict"]:
        lines.append("Not measured: the comparison's variants do not include PLE and MMoE or shared-bottom.")
    for task in tasks:
        for v in (x for x in res["ple_verdict"] if x["task"] == task):
            lines.append(f"- **{task}**: {_sentence(comp, v)}")
    if res["ple_verdict"] and len(cc.seeds) > 1:
        count = lambda word: sum(v["outcome"] == word for v in res["ple_verdict"])
        lines += [
            "",
            f"Overall, over {len(tasks)} tasks x {len(res['ple_verdict']) // len(tasks)} opponents: PLE beats "
            f"the other model {count('beats')} times, ties {count('ties')} times and loses {count('loses')} times.",
        ]
    if len(cc.seeds) == 1:
        lines.append("- Only one seed was run: there is no seed spread to judge the differences against.")

    if res["seesaw"]:
        lines += [
            "",
            "## Seesaw check: AUC gain over the single-task models",
            "",
            "Each multi-task model's AUC minus that of the single-task model of the same task (means over "
            "seeds; the seed spread in brackets). A model that gains on one task and loses on another "
            "shows the seesaw.",
            "",
        ]
        rows = [
            [label_of(comp, s["variant"])]
            + [f"{fmt(g['mean'], sign=True)} ({fmt(g['spread'])})" for g in s["gains"].values()]
            + [s["verdict"]]
            for s in res["seesaw"]
        ]
        lines += md_table(["model"] + [f"{t} ΔAUC" for t in res["seesaw"][0]["gains"]] + ["verdict"], rows)

    lines += [
        "",
        "## Per-task quality (mean ± std over seeds)",
        "",
        "Calibration is mean prediction / observed rate (1 is calibrated). A single-task model is shown "
        "only on its task.",
        "",
    ]
    rows = []
    shown = reported_metrics(comp)
    for v in comp.variants:
        row = [v.label]
        for t in tasks:
            s = res["summary"][v.key].get(t)
            row += ["—"] * len(shown) if s is None else [f"{fmt(s[m]['mean'])} ± {fmt(s[m]['std'])}" for m in shown]
        rows.append(row)
    if best:
        blank = [""] * (len(shown) - 1)
        rows.append(["Best achievable (planted truth)"] + sum(([fmt(best[t]), *blank] for t in tasks), []))
    lines += md_table(["model"] + [f"{t} {METRIC_LABELS[m]}" for t in tasks for m in shown], rows)

    lines += ["", "## Every run", "", "The final validation metrics each training run reported.", ""]
    rows = []
    for v in comp.variants:
        for r in comp.runs_of(v.key):
            row = [v.label, str(r.seed), str(int(r.metrics.get("step", 0)))]
            for t in tasks:
                row += [fmt(float(r.metrics[f"val/{t}/{m}"])) if t in judged_tasks(comp, v.key) else "—" for m in shown]
            rows.append(row + [f"{r.seconds:.0f}", f"`{r.name}`"])
    lines += md_table(
        ["model", "seed", "steps"] + [f"{t} {m}" for t in tasks for m in shown] + ["seconds", "run"], rows
    )

    lines += [
        "",
        f"## Parameter budget (dense parameters, tolerance ±{cc.param_tolerance:.0%})",
        "",
        "Experts are rescaled so every model has about as many dense parameters (experts, gates, towers) "
        "as the configured PLE; embeddings are identical for all. A single-task model counts its bottom "
        "and its one trained tower: each task's model gets the whole budget.",
        "",
    ]
    rows = [
        [
            v.label,
            v.model.architecture,
            str(v.model.resolved().num_levels),
            f"{v.model.resolved().task_experts} per task + {v.model.resolved().shared_experts} shared",
            str(v.model.expert_hidden),
            f"{v.params:,}",
            f"{v.budget_gap:+.1%}" + ("" if abs(v.budget_gap) <= cc.param_tolerance else " **outside tolerance**"),
        ]
        for v in comp.variants
    ]
    lines += md_table(
        ["model", "architecture", "levels", "experts per level", "expert hidden", "dense params", "vs PLE"], rows
    )

    gated = [v for v in comp.variants if any(r.utilisation for r in comp.runs_of(v.key))]
    if gated:
        lines += [
            "",
            "## Expert utilisation",
            "",
            f"Mean gate weight per gate and expert over {cc.gate_rows:,} validation rows, per level "
            f"(seed {cc.seeds[0]}'s model; expert identities do not carry over between seeds). An expert "
            f"whose mean weight is below {cc.unused_gate_weight} in every gate that can pick it is flagged "
            f"**unused**; `·`: the gate cannot pick that expert.",
        ]
        for v in gated:
            runs = [r for r in comp.runs_of(v.key) if r.utilisation]
            lines += ["", f"### {v.label}", ""]
            if v.key in images:
                lines += [f"![{v.label} gate weights]({images[v.key]})", ""]
            for i, level in enumerate(runs[0].utilisation or []):
                gates, experts, matrix = expert_matrix(level, tasks)
                unused = set(unused_experts(level, tasks, cc.unused_gate_weight))
                lines += [f"Level {i + 1}:", ""]
                lines += md_table(
                    ["gate"] + [f"{e} **(unused)**" if e in unused else e for e in experts],
                    [
                        [g] + ["·" if math.isnan(w) else f"{w:.3f}" for w in row]
                        for g, row in zip(gates, matrix, strict=True)
                    ],
                )
                lines.append("")
            for r in runs:
                flagged = [f"level {i + 1}: {', '.join(u)}" for i, u in enumerate(res["unused_experts"][r.name]) if u]
                lines.append(f"- seed {r.seed}: unused experts: {'; '.join(flagged) if flagged else 'none'}")

    if "curves" in images:
        lines += [
            "",
            "## Validation AUC during training",
            "",
            "Mean over seeds (band: lowest to highest seed); dashed: best achievable.",
            "",
            f"![validation AUC]({images['curves']})",
        ]
    lines += [
        "",
        "## How the models were built",
        "",
        "- PLE with one level is the same network as CGC: it appears once, as *CGC (= PLE, 1 level)*.",
        "- MMoE: one level of shared experts only (as many as a CGC level has), one gate per task.",
        "- Shared-bottom: one shared expert feeding every task tower.",
        "- Single-task models: a shared-bottom network trained on one task's loss alone (loss weight 1 "
        "for it, 0 for the others); the other towers are never trained and their numbers are not shown.",
    ]
    if any(v.balancing for v in comp.variants):
        lines.append(
            "- PLE + uncertainty weighting / PLE + DWA: the PLE reference trained with `train.loss_balancing` "
            "uncertainty (Kendall et al., CVPR 2018) or dwa (Liu et al., CVPR 2019) instead of fixed task weights."
        )
    lines.append("- Raw numbers: `results.json` (every run's metrics and evaluation history).")
    return "\n".join(lines) + "\n"


# -- plots -------------------------------------------------------------------------------------


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster or CI machine
    import matplotlib.pyplot as plt

    return plt


def plot_curves(comp: Comparison, res: dict, path: Path) -> None:
    plt = pyplot()
    tasks = comp.spec.task_names
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        for v in comp.variants:
            if task not in judged_tasks(comp, v.key):
                continue
            by_step: dict[int, list[float]] = {}
            for r in comp.runs_of(v.key):
                last = {int(h["step"]): float(h[f"val/{task}/auc"]) for h in r.history}  # last eval per step
                for step, auc in last.items():
                    by_step.setdefault(step, []).append(auc)
            steps = sorted(by_step)
            mean = [statistics.fmean(by_step[s]) for s in steps]
            (line,) = ax.plot(steps, mean, marker=".", label=v.label)
            if len(comp.compare.seeds) > 1:
                ax.fill_between(
                    steps,
                    [min(by_step[s]) for s in steps],
                    [max(by_step[s]) for s in steps],
                    color=line.get_color(),
                    alpha=0.15,
                )
        if task in res["best_auc"]:
            ax.axhline(res["best_auc"][task], color="black", linestyle="--", linewidth=1, label="best achievable")
        label_axes(ax, f"{task}: validation AUC", "training step", "AUC")
    save_figure(fig, path)


def label_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, a light grid and the legend: every line plot of the reports."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def plot_gates(comp: Comparison, key: str, utilisation: list[dict], path: Path) -> None:
    import numpy as np

    plt = pyplot()
    tasks, threshold = comp.spec.task_names, comp.compare.unused_gate_weight
    fig, axes = plt.subplots(
        1,
        len(utilisation),
        figsize=(1.3 + 1.1 * max(len(expert_matrix(level, tasks)[1]) for level in utilisation) * len(utilisation), 3.2),
        squeeze=False,
    )
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")  # grey: the gate cannot pick that expert
    for i, (ax, level) in enumerate(zip(axes[0], utilisation, strict=False)):
        gates, experts, matrix = expert_matrix(level, tasks)
        unused = set(unused_experts(level, tasks, threshold))
        data = np.ma.masked_invalid(np.array(matrix, dtype=float))
        im = ax.imshow(data, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (r, c), w in np.ndenumerate(np.array(matrix, dtype=float)):
            if not math.isnan(w):
                ax.text(c, r, f"{w:.2f}", ha="center", va="center", fontsize=8, color="white" if w < 0.6 else "black")
        ax.set_xticks(
            range(len(experts)), [e + ("\nUNUSED" if e in unused else "") for e in experts], rotation=0, fontsize=8
        )
        for tick, e in zip(ax.get_xticklabels(), experts, strict=False):
            if e in unused:
                tick.set_color("red")
        ax.set_yticks(range(len(gates)), gates, fontsize=8)
        ax.set_title(f"level {i + 1}", fontsize=10)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="mean gate weight")
    fig.suptitle(f"{label_of(comp, key)}: expert utilisation (seed {comp.compare.seeds[0]})", fontsize=10, y=1.05)
    fig.text(
        0.5,
        -0.08,
        f"grey: the gate cannot pick that expert; red UNUSED: mean weight < {threshold} in every gate that can",
        ha="center",
        fontsize=8,
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_report(comp: Comparison, out_dir: str | Path) -> Path:
    """report.md, results.json and the PNGs in `out_dir`; returns the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = results(comp)
    images: dict[str, str] = {"curves": "auc_curves.png"}
    plot_curves(comp, res, out / images["curves"])
    for v in comp.variants:
        utilisations = [r.utilisation for r in comp.runs_of(v.key) if r.utilisation]
        if utilisations:
            images[v.key] = f"gates_{v.key}.png"
            plot_gates(comp, v.key, utilisations[0], out / images[v.key])
    write_text_atomic(out / "results.json", json.dumps(no_nan(res), indent=1, default=float))
    path = out / "report.md"
    write_text_atomic(path, markdown(comp, res, images))
    return path
