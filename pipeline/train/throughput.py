"""Rows/s of the training loop, measured over the time spent inside training steps.

Data waits count (they are what a user compares across data paths and worker counts);
evaluation and checkpoints do not. The first step of each epoch also waits for Ray Data to
start that epoch's reads (seconds on a busy small machine), so it is counted apart: the
steady rate says whether the data path keeps up.
"""

from __future__ import annotations


class ThroughputMeter:
    """Step times in, rates out: `window_rows_per_s()` since the previous call (progress lines),
    `summary()` over the whole run in this process (the final report)."""

    def __init__(self, rows_per_step: int) -> None:
        self.rows_per_step = rows_per_step
        self.seconds = 0.0
        self.steps = 0
        self.epoch_start_seconds = 0.0
        self.epoch_start_steps = 0
        self._window_seconds = 0.0
        self._window_steps = 0

    def record(self, seconds: float, first_of_epoch: bool) -> None:
        """One training step took `seconds` (the first step of its epoch if `first_of_epoch`)."""
        self.seconds += seconds
        self.steps += 1
        if first_of_epoch:
            self.epoch_start_seconds += seconds
            self.epoch_start_steps += 1
        self._window_seconds += seconds
        self._window_steps += 1

    def window_rows_per_s(self) -> float:
        """Rows/s over the steps since the previous call, which starts a new window."""
        rate = self._rate(self._window_steps, self._window_seconds)
        self._window_seconds, self._window_steps = 0.0, 0
        return rate

    def summary(self) -> dict[str, float]:
        """train/rows_per_s (every step), train/rows_per_s_steady (each epoch's first step left
        out) and train/epoch_start_s (the time those first steps took)."""
        return {
            "train/rows_per_s": self._rate(self.steps, self.seconds),
            "train/rows_per_s_steady": self._rate(
                self.steps - self.epoch_start_steps, self.seconds - self.epoch_start_seconds
            ),
            "train/epoch_start_s": self.epoch_start_seconds,
        }

    def _rate(self, steps: int, seconds: float) -> float:
        return steps * self.rows_per_step / seconds if seconds > 0 else 0.0
