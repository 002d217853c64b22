"""What runs after a training step besides the step itself: a progress line, an evaluation, a
checkpoint. One place decides, from the train config, so that the worker loop only carries
out what it is told (and later schedules, early stopping or trackers plug in here)."""

from __future__ import annotations

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
    """`at(step)`: the actions due once global step `step` (1-based) has been trained."""

    def __init__(self, train: TrainConfig) -> None:
        self.train = train

    def at_start(self, step: int) -> StepActions:
        """Before the first step of a fresh run (a resumed one has reported its start already)."""
        return StepActions(evaluate=self.train.eval_at_start and step == 0)

    def at(self, step: int) -> StepActions:
        t = self.train
        evaluate, checkpoint = _every(step, t.eval_every_steps), _every(step, t.checkpoint_every_steps)
        if t.early_stopping is not None:
            # Every evaluation may be the best, so it is checkpointed; every checkpoint is scored.
            evaluate = checkpoint = evaluate or checkpoint
        return StepActions(log=_every(step, t.log_every_steps), evaluate=evaluate, checkpoint=checkpoint)


def _every(step: int, period: int | None) -> bool:
    """Whether `step` is a multiple of `period` (None: never)."""
    return period is not None and step % period == 0
