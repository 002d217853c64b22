"""Experiment tracking: TensorBoard curves written by rank 0 while a run trains, and an optional
MLflow run logged by the driver once it is done (parameters, every evaluation, the final
metrics, the exported model as an artifact).

TensorBoard lives in the worker because the curves are per step (losses, learning rates,
rows/s); MLflow lives in the driver because what it records (the config, the evaluation
history, the export) is all there after the run, and the workers need no MLflow client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from pipeline.common.config import StrictModel

TENSORBOARD_DIR = "tensorboard"  # under the run's directory: <output_dir>/<name>/tensorboard/


class TrackingConfig(StrictModel):
    tensorboard: bool = Field(True, description="rank 0 writes event files under <output_dir>/<name>/tensorboard/")
    scalars_every_steps: int = Field(10, ge=1, description="training losses, learning rates and rows/s this often")
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (file:///path, http://host:5000); None: no MLflow"
    )
    mlflow_experiment: str | None = Field(None, description="MLflow experiment (default: the job's name)")
    mlflow_run_name: str | None = Field(None, description="MLflow run name (default: the run's name)")


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries (bools and NaN left out: neither tracker takes them as scalars)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


class TensorBoardWriter:
    """Rank 0's event files: `train/loss/<task>`, `train/lr/<group>`, `train/rows_per_s` every
    `scalars_every_steps` steps; every evaluation's `val/...` metrics; and the mean gate weight
    of each expert per level (`experts/level<l>/<gate>/expert<j>`) at each evaluation."""

    def __init__(self, log_dir: str | Path, every: int, rows_per_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.every, self.rows_per_step = every, rows_per_step
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self._seconds = 0.0  # inside training steps since the last write
        self._steps = 0

    def due(self, step: int, seconds: float) -> bool:
        """Count one training step of `seconds`; True when `train_step` should write this one."""
        self._seconds += seconds
        self._steps += 1
        return step % self.every == 0

    def train_step(self, step: int, losses: Mapping[str, float], lrs: Mapping[str, float]) -> None:
        rows_per_s = self._steps * self.rows_per_step / self._seconds if self._seconds > 0 else 0.0
        self._seconds, self._steps = 0.0, 0
        for task, loss in losses.items():
            self.writer.add_scalar(f"train/loss/{task}", loss, step)
        for group, lr in lrs.items():
            self.writer.add_scalar(f"train/lr/{group}", lr, step)
        if rows_per_s > 0:
            self.writer.add_scalar("train/rows_per_s", rows_per_s, step)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Every numeric entry of `values` at `step`, flushed."""
        for key, value in _finite(values).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def evaluation(self, step: int, metrics: Mapping[str, Any], experts: Sequence[Mapping[str, list]] = ()) -> None:
        self.scalars(step, {k: v for k, v in metrics.items() if k.startswith(("val/", "best/"))})
        for level, gates in enumerate(experts):
            for gate, weights in gates.items():
                for j, w in enumerate(weights):
                    self.writer.add_scalar(f"experts/level{level}/{gate}/expert{j}", w, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class GateMeter:
    """Mean gate weights of every PLE level over the batches forwarded while it is open (a
    forward hook on the model's PLE module: nothing in the model changes). `close()` removes the
    hook and returns, per level, {<task>: [k + S weights], "shared": [T*k + S weights]}: each
    task gate's own experts first, then the shared ones (shared: the last level has none)."""

    def __init__(self, model, tasks: Sequence[str]) -> None:
        from ple_model import PLE

        self.tasks = list(tasks)
        self.sums: list[list] | None = None
        self.rows = 0
        self.hooks = [m.register_forward_hook(self._record) for m in model.modules() if isinstance(m, PLE)]

    def _record(self, module, inputs, output) -> None:
        _, gates = output
        n = gates[0].task.shape[0]
        level_sums = [(g.task.sum(0), None if g.shared is None else g.shared.sum(0)) for g in gates]
        if self.sums is None:
            self.sums = [list(s) for s in level_sums]
        else:
            for acc, (task, shared) in zip(self.sums, level_sums, strict=True):
                acc[0] = acc[0] + task
                acc[1] = None if shared is None else acc[1] + shared
        self.rows += n

    def close(self) -> list[dict[str, list]]:
        for hook in self.hooks:
            hook.remove()
        if self.sums is None or not self.rows:
            return []
        levels = []
        for task, shared in self.sums:
            level = {name: (w / self.rows).tolist() for name, w in zip(self.tasks, task, strict=True)}
            if shared is not None:
                level["shared"] = (shared / self.rows).tolist()
            levels.append(level)
        return levels


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow parameters: {"train.batch_size": "512", ...}."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out


def log_mlflow_run(
    tracking: TrackingConfig,
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] = (),
    final: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, str] | None = None,
) -> str | None:
    """One MLflow run: `params` (nested, flattened), each of `history`'s evaluations at its
    step, the `final` metrics, and `artifacts` ({artifact path: local directory}). Returns the
    run's id (None when tracking.mlflow_uri is unset)."""
    if tracking.mlflow_uri is None:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.mlflow_uri)
    name = tracking.mlflow_experiment or experiment
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=tracking.mlflow_run_name or run_name)
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        items = sorted(flatten(params).items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in items[i : i + 100]])
        metrics = [
            Metric(k, v, 0, int(h.get("step", 0))) for h in history for k, v in _finite(h).items() if k != "step"
        ]
        if final:
            step = int(final.get("step", 0))
            metrics += [Metric(f"final/{k}", v, 0, step) for k, v in _finite(final).items()]
        for i in range(0, len(metrics), 1000):  # and at most 1000 metrics
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        for path, local in (artifacts or {}).items():
            client.log_artifacts(run_id, local, artifact_path=path)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id
