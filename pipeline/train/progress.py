"""The lines a person follows while a run trains: one progress line now and then (epoch, step,
loss per task, rows/s, the epoch's ETA) and one compact line per evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.common.logs import duration
from pipeline.train.early_stopping import BEST_KEY, STEP_KEY


def progress_line(
    *,
    epoch: int,
    epochs: int,
    step: int,
    batch_in_epoch: int,
    steps_per_epoch: int | None,
    tasks: Sequence[str],
    losses: Sequence[float],
    rows_per_s: float,
    rows_per_step: int,
) -> str:
    """`[train] epoch 2/3 step 812 (batch 31/781) loss ctr=0.4012 cvr=0.3121, 25,300 rows/s, epoch ETA 0:42`.
    Without `steps_per_epoch` (data of unknown length) the batch count and ETA are left out."""
    loss = " ".join(f"{t}={v:.4f}" for t, v in zip(tasks, losses, strict=True))
    where = f"epoch {epoch + 1}/{epochs} step {step}"
    eta = ""
    if steps_per_epoch:
        where += f" (batch {batch_in_epoch}/{steps_per_epoch})"
        left = max(steps_per_epoch - batch_in_epoch, 0)
        if rows_per_s > 0:
            eta = f", epoch ETA {duration(left * rows_per_step / rows_per_s)}"
    return f"[train] {where} loss {loss}, {rows_per_s:,.0f} rows/s{eta}"


def eval_line(step: int, metrics: dict, tasks: Sequence[str]) -> str:
    """`[eval] step 400: ctr AUC 0.7412 (GAUC 0.61), cvr AUC 0.7511; best 0.7480 at step 400`."""
    parts = []
    for t in tasks:
        auc = metrics.get(f"val/{t}/auc")
        if auc is None:
            continue
        gauc = metrics.get(f"val/{t}/gauc")
        parts.append(f"{t} AUC {auc:.4f}" + (f" (GAUC {gauc:.4f})" if gauc is not None else ""))
    line = f"[eval] step {step}: " + ", ".join(parts)
    if BEST_KEY in metrics and STEP_KEY in metrics:  # with early stopping
        line += f"; best {metrics[BEST_KEY]:.4f} at step {int(metrics[STEP_KEY])}"
    return line
