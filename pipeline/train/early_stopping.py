"""Early stopping on a validation metric, and which evaluation was the best: the checkpoint
made at that evaluation is kept (Ray Train's checkpoint_score_attribute) and exported.

Every worker computes the same validation metrics (torchmetrics gathers them), so every worker
reaches the same decision at the same step: none is left waiting in a collective."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from pipeline.common.config import StrictModel

SCORE_KEY = "val/score"  # this evaluation's score, in its report: what Ray Train keeps checkpoints by
BEST_KEY, STEP_KEY = "best/score", "best/step"  # the best evaluation so far


class EarlyStopping(StrictModel):
    """`train.early_stopping`. metric: `mean_auc` / `mean_gauc` (over the tasks), or any key an
    evaluation reports, e.g. `val/ctr/auc` or `val/cvr/logloss` (then mode: min)."""

    metric: str = "mean_auc"
    mode: Literal["max", "min"] = "max"
    patience: int | None = Field(
        3, ge=1, description="stop after this many evaluations without improvement (None: never stop, keep the best)"
    )
    min_delta: float = Field(0.0, ge=0.0, description="an improvement smaller than this does not count")


def selection_score(cfg: EarlyStopping, metrics: dict[str, float], tasks: list[str]) -> float:
    """The metric early stopping watches, oriented so that higher is better. `mean_auc` and
    `mean_gauc` average the tasks the validation set can measure: one whose labels there are all
    0 (say) has no AUC at any evaluation, and would make every score NaN, the first one best."""
    if cfg.metric in ("mean_auc", "mean_gauc"):
        name = cfg.metric.removeprefix("mean_")
        keys = [f"val/{t}/{name}" for t in tasks]
    else:
        keys = [cfg.metric]
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise ValueError(f"train.early_stopping.metric {cfg.metric!r}: the evaluation reports no {missing[0]}")
    values = [metrics[k] for k in keys]
    if len(keys) > 1:
        values = [v for v in values if not math.isnan(v)] or [math.nan]
    value = sum(values) / len(values)
    return value if cfg.mode == "max" else -value


class BestTracker:
    """Follows the evaluations of one run: the best score and its step (the checkpoint to
    export: the highest score, as Ray Train keeps them), and whether to stop (no gain of more
    than min_delta over the last evaluation that had one, for `patience` evaluations)."""

    def __init__(self, cfg: EarlyStopping, tasks: list[str]) -> None:
        self.cfg, self.tasks = cfg, tasks
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.reference = -math.inf  # the score of the last evaluation that improved by > min_delta
        self.since_best = 0  # evaluations since then
        self.last_score = -math.inf

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record an evaluation at `step`; True when the run should stop here."""
        score = selection_score(self.cfg, metrics, self.tasks)
        if math.isnan(score):
            score = -math.inf  # a NaN metric (say, one label only) is never the best
        self.last_score = score
        if self.best_step is None or score > self.best_score:
            self.best_score, self.best_step = score, step
        if score > self.reference + self.cfg.min_delta or self.reference == -math.inf:
            self.reference, self.since_best = score, 0
        else:
            self.since_best += 1
        return self.cfg.patience is not None and self.since_best >= self.cfg.patience

    def replay(self, history: list[dict]) -> bool:
        """Rebuild the state of a resumed run from its evaluation history; True if it had stopped."""
        stop = False
        for h in history:
            stop = self.update(int(h["step"]), h)
        return stop

    def report(self) -> dict[str, float]:
        """For the latest evaluation's report: its own score, and the best so far."""
        best_step = float(self.best_step if self.best_step is not None else -1)
        return {SCORE_KEY: self.last_score, BEST_KEY: self.best_score, STEP_KEY: best_step}
