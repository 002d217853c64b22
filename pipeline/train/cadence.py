"""What runs after a training step besides the step itself: a progress line, an evaluation, a
checkpoint. One place decides, from the train config, so that the worker loop only carries
out what it is told (and later schedules, early stopping or trackers plug in here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.train.config import TrainConfig


@dataclass(frozen=True)
class StepActions:
    log: bool = False
    evaluate: bool = False
    checkpoint: bool = False

    @property
    def report(self) -> bool:
        """Whether Ray Train hears of this step (metrics, a checkpoint, or both)."""
        return self.evaluate or self.checkpoint


class Cadence:
    """`at(step)`: the actions due once global step `step` (1-based) has been trained. Progress
    lines come every train.log_every_steps steps and/or every train.log_every_s seconds (only
    rank 0 logs, so a clock that differs between workers changes nothing they do together)."""

    def __init__(self, train: TrainConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.train = train
        self._clock = clock
        self._last_log = clock()

    def at_start(self, step: int) -> StepActions:
        """Before the first step of a fresh run (a resumed one has reported its start already)."""
        return StepActions(evaluate=self.train.eval_at_start and step == 0)

    def at(self, step: int) -> StepActions:
        t = self.train
        evaluate, checkpoint = _every(step, t.eval_every_steps), _every(step, t.checkpoint_every_steps)
        if t.early_stopping is not None:
            # Every evaluation may be the best, so it is checkpointed; every checkpoint is scored.
            evaluate = checkpoint = evaluate or checkpoint
        return StepActions(log=self._log_due(step), evaluate=evaluate, checkpoint=checkpoint)

    def _log_due(self, step: int) -> bool:
        now = self._clock()
        seconds = self.train.log_every_s
        due = _every(step, self.train.log_every_steps) or (seconds is not None and now - self._last_log >= seconds)
        if due:
            self._last_log = now
        return due


def _every(step: int, period: int | None) -> bool:
    """Whether `step` is a multiple of `period` (None: never)."""
    return period is not None and step % period == 0
