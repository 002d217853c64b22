"""The promotion gate: evaluate exported models on the same held-out rows, in this process,
with the same code, and decide whether a candidate may replace production.

Both models go through `evaluate_export` (pipeline/score/evaluate.py, which `jobs.evaluate`
uses too): the two see exactly the same rows of the day, each mapped with its own feature spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.retrain.config import RetrainSettings
from pipeline.score.evaluate import evaluate
from pipeline.train.progress import undefined_because


def evaluate_export(export_dir: str, files: list[str], settings: RetrainSettings) -> dict[str, float]:
    """{task}/auc|logloss|calibration|count|positives of an exported model on `files` (their first
    settings.eval_max_rows rows, in batches of settings.eval_batch_size)."""
    return evaluate(export_dir, files, settings.eval_batch_size, settings.eval_max_rows).metrics


@dataclass
class Decision:
    accepted: bool
    reasons: list[str] = field(default_factory=list)  # why rejected (empty when accepted)
    checks: list[dict] = field(default_factory=list)  # every comparison made, for the record
    not_compared: list[str] = field(default_factory=list)  # metrics the held-out rows cannot measure, and why

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def decide(
    candidate: dict[str, float], production: dict[str, float] | None, tasks: list[str], settings: RetrainSettings
) -> Decision:
    """Accept unless, for some task, the candidate's AUC is lower than production's by more than
    the task's max_auc_drop, or (when set) its log loss higher by more than max_logloss_rise, or
    its GAUC lower by more than max_gauc_drop. Without a production model (first run) the
    candidate is accepted. A metric the held-out rows cannot measure (AUC of a task with one
    label only there) is not compared, and said so; with nothing measurable at all, or a NaN
    that the labels do not explain (a model's NaN output), the candidate is rejected."""
    if production is None:
        return Decision(True, checks=[{"note": "no production model: first version"}])
    decision = Decision(True)
    for task in tasks:
        tol = settings.tolerance.get(task, settings.default_tolerance)
        limits = [("auc", -1, tol.max_auc_drop)]  # -1: higher is better
        if tol.max_logloss_rise is not None:
            limits.append(("logloss", +1, tol.max_logloss_rise))
        if tol.max_gauc_drop is not None:
            limits.append(("gauc", -1, tol.max_gauc_drop))
        for metric, sign, allowed in limits:
            key = f"{task}/{metric}"
            if key not in candidate or key not in production:
                raise ValueError(f"the gate compares {key}, which an evaluation lacks (GAUC needs the spec's group_by)")
            cand, prod = candidate[key], production[key]
            unmeasurable = undefined_because(candidate, f"{task}/", metric)  # the labels': the same for both
            if (math.isnan(cand) or math.isnan(prod)) and unmeasurable:
                decision.checks.append({"task": task, "metric": metric, "ok": None, "not_compared": unmeasurable})
                decision.not_compared.append(f"{task} {metric} ({unmeasurable})")
                continue
            worse_by = sign * (cand - prod)  # > 0: candidate worse; NaN (a model's NaN output): not ok
            ok = worse_by <= allowed
            decision.checks.append(
                {
                    "task": task,
                    "metric": metric,
                    "candidate": cand,
                    "production": prod,
                    "worse_by": worse_by,
                    "tolerance": allowed,
                    "ok": ok,
                }
            )
            if not ok:
                decision.accepted = False
                decision.reasons.append(
                    f"{task} {metric} {cand:.4f} vs production {prod:.4f}: worse by "
                    f"{worse_by:.4f} > tolerance {allowed:.4f}"
                )
    if not any(c["ok"] is not None for c in decision.checks):
        decision.accepted = False
        decision.reasons.append(f"nothing the held-out rows can measure: {', '.join(decision.not_compared)}")
    return decision
