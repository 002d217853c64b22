"""Learning-rate schedules: linear warm-up, then constant, cosine or step decay, as a factor of
each optimizer's configured learning rate (`train.dense_lr` for the dense layers, `train.sparse_lr`
for the tables, fused or not).

The factor is a pure function of the global step, and the step is in every checkpoint, so a
resumed run continues the schedule exactly where it stopped (and a warm start, whose step
starts at 0, warms up again). It is applied before every step: the fused table optimizer reads
its param group's lr when the train pipeline calls zero_grad, before the backward that updates
the tables."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, model_validator

from pipeline.common.config import StrictModel


class LRSchedule(StrictModel):
    """`train.lr_schedule`. cosine decays from 1 to `min_factor` over the steps after warm-up (to
    `total_steps`, by default the run's own: epochs x steps per epoch, or train.max_steps); step
    multiplies by `gamma` every `step_every` steps after warm-up."""

    kind: Literal["constant", "cosine", "step"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="linear from 1/warmup_steps of the rate to all of it")
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="cosine: the last step's share of the rate")
    total_steps: int | None = Field(None, ge=1, description="cosine: decay over this many steps (default: the run)")
    step_every: int | None = Field(None, ge=1, description="step: decay every this many steps")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="step: the factor of each decay")

    @property
    def needs_run_steps(self) -> bool:
        """Whether the factor depends on the run's length (cosine without total_steps)."""
        return self.kind == "cosine" and self.total_steps is None

    @model_validator(mode="after")
    def _step_needs_a_period(self) -> LRSchedule:
        if self.kind == "step" and self.step_every is None:
            raise ValueError("kind 'step' needs step_every")
        return self


def lr_factor(s: LRSchedule, step: int, run_steps: int | None) -> float:
    """The share of the configured learning rate used by step `step` (0-based)."""
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    after = step - s.warmup_steps
    if s.kind == "step":
        assert s.step_every is not None  # the validator requires it
        return s.gamma ** (after // s.step_every)
    if s.kind == "cosine":
        total = s.total_steps or run_steps
        if total is None:
            raise ValueError("train.lr_schedule: cosine needs total_steps when the run's length is unknown")
        span = max(total - s.warmup_steps, 1)
        progress = min(after / span, 1.0)
        return s.min_factor + (1.0 - s.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def set_learning_rates(groups: Iterable[tuple[list[dict], float]], factor: float) -> None:
    """Every param group of each (param_groups, configured lr) pair at lr * factor."""
    for param_groups, lr in groups:
        for group in param_groups:
            group["lr"] = lr * factor
