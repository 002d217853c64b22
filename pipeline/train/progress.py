"""The lines a person follows while a run trains: one progress line now and then (epoch, step,
loss per task, rows/s, the epoch's ETA) and one compact line per evaluation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pipeline.common.logs import duration, plural
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
        if f"val/{t}/auc" in metrics:
            parts.append(f"{t} AUC {said_auc(metrics, f'val/{t}/')}")
    line = f"[eval] step {step}: " + ", ".join(parts)
    if BEST_KEY in metrics and STEP_KEY in metrics:  # with early stopping
        line += f"; best {metrics[BEST_KEY]:.4f} at step {int(metrics[STEP_KEY])}"
    return line


def summary_lines(metrics: Mapping[str, float], counts: bool = False) -> list[str]:
    """A line per task with an AUC in `metrics` (`val/ctr/auc` as training reports it, `ctr/auc`
    as TaskMetrics computes it), sorted by task: `ctr: AUC 0.7498 (best achievable 0.7641), GAUC
    0.7409, logloss 0.4244, calibration 1.000`; `counts`: then its rows and positive labels."""
    lines = []
    for key in sorted(k for k in metrics if k.endswith("/auc")):
        prefix = key[: -len("auc")]
        best = metrics.get(prefix + "best_auc")
        if math.isnan(metrics[key]):
            auc = f"AUC {said_auc(metrics, prefix)}"  # n/a, and why
        else:
            auc = (
                f"AUC {metrics[key]:.4f}"
                + (f" (best achievable {best:.4f})" if best and not math.isnan(best) else "")
                + (f", GAUC {said(metrics[prefix + 'gauc'])}" if prefix + "gauc" in metrics else "")
            )
        line = f"{key.split('/')[-2]}: {auc}, logloss {said(metrics[prefix + 'logloss'])}, "
        line += f"calibration {said(metrics[prefix + 'calibration'], 3)}"
        if counts:
            rows, positives = int(metrics[prefix + "count"]), int(metrics[prefix + "positives"])
            line += f"; {plural(rows, 'row')}, {plural(positives, 'positive')}"
        lines.append(line)
    return lines


def said_auc(metrics: Mapping[str, float], prefix: str) -> str:
    """A task's AUC and GAUC where measured (`0.7412 (GAUC 0.6100)`), else `n/a` and why: an
    evaluation set whose task has one label only (a rare conversion on a small day, say) has
    no AUC. `prefix`: `val/ctr/` as training reports it, `ctr/` as TaskMetrics computes it."""
    auc, gauc = metrics[prefix + "auc"], metrics.get(prefix + "gauc")
    if math.isnan(auc):
        why = undefined_because(metrics, prefix)
        return f"n/a ({why})" if why else "n/a"
    if gauc is None:
        return f"{auc:.4f}"
    if math.isnan(gauc):
        why = undefined_because(metrics, prefix, "gauc")
        return f"{auc:.4f} (GAUC n/a{': ' + why if why else ''})"
    return f"{auc:.4f} (GAUC {gauc:.4f})"


def said(value: float | None, digits: int = 4, sign: bool = False) -> str:
    """A metric (`sign`: with its + or -), `n/a` where the set could not measure it (NaN) or
    there is none (None)."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def undefined_because(metrics: Mapping[str, float], prefix: str, metric: str = "auc") -> str | None:
    """Why the labels of the set `metrics` were computed on leave a task's `metric` undefined
    (no rows; for AUC and GAUC also one label only, or no group with both), else None: a NaN
    they do not explain is the model's own."""
    count, positives = metrics.get(prefix + "count"), metrics.get(prefix + "positives")
    if count == 0:
        return "no rows"
    if metric not in ("auc", "gauc") or count is None or positives is None:
        return None
    if positives == 0:
        return f"no positive labels in {count:,.0f} rows"
    if positives == count:
        return f"no negative labels in {count:,.0f} rows"
    if metric == "gauc" and metrics.get(prefix + "gauc_groups") == 0:
        return "no group has both labels"
    return None
