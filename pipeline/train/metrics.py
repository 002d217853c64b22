"""Validation metrics per task: AUC, log loss, calibration (predicted / observed rate) and,
when the spec names a `group_by` column, GAUC (pipeline/train/gauc.py).

Built from torchmetrics so that, under torch.distributed, `compute()` gathers the state of
every worker: the numbers are those of the whole validation set, not of one shard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection, SumMetric

from pipeline.train.binned_auc import BinnedAUROC
from pipeline.train.gauc import GroupAUROC

if TYPE_CHECKING:
    from pipeline.data.feature_spec import FeatureSpec


class TaskMetrics:
    def __init__(self, task_names: list[str], device: torch.device | str = "cpu", gauc: bool = False) -> None:
        self.task_names = list(task_names)
        # GAUC keeps every validation row (3 numbers each) until compute(): only when asked for.
        self.gauc = [GroupAUROC().to(device) for _ in self.task_names] if gauc else None
        self.per_task = [
            MetricCollection(
                {
                    # exact AUC would keep every prediction; 1,000 bins is exact to ~1e-3 and
                    # costs constant memory however large the set.
                    "auc": BinnedAUROC(thresholds=1000),
                    "loss_sum": SumMetric(),
                    "pred_sum": SumMetric(),
                    "label_sum": SumMetric(),
                    "count": SumMetric(),
                }
            ).to(device)
            for _ in self.task_names
        ]

    @classmethod
    def for_spec(cls, spec: FeatureSpec, device: torch.device | str = "cpu") -> TaskMetrics:
        """Metrics of the spec's tasks, with GAUC where the spec names a group column."""
        return cls(spec.task_names, device, gauc=spec.group_by is not None)

    @torch.no_grad()
    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, groups: torch.Tensor | None = None
    ) -> None:
        """groups: int64 [B] group ids (Batch.groups), required when built with gauc=True."""
        probs = torch.sigmoid(logits.float())
        if self.gauc is not None and groups is None:
            raise ValueError("GAUC needs the batch's groups (the spec's group_by column)")
        for t, metrics in enumerate(self.per_task):
            keep = masks[:, t]
            p, y, z = probs[keep, t], labels[keep, t], logits[keep, t].float()
            if self.gauc is not None:
                assert groups is not None
                # Every worker must update every metric at least once (torchmetrics' list states
                # are gathered with a collective), so an empty slice is added too.
                self.gauc[t].update(p, y, groups[keep])
            if p.numel() == 0:
                continue
            metrics["auc"].update(p, y.long())
            metrics["loss_sum"].update(F.binary_cross_entropy_with_logits(z, y, reduction="sum"))
            metrics["pred_sum"].update(p.sum())
            metrics["label_sum"].update(y.sum())
            metrics["count"].update(torch.tensor(float(p.numel()), device=p.device))

    def compute(self) -> dict[str, float]:
        """Flat dict: `{task}/auc`, `{task}/logloss`, `{task}/calibration`, `{task}/count`,
        `{task}/positives`, and with GAUC `{task}/gauc` and `{task}/gauc_groups` (the groups that
        have both labels). What a set cannot measure is NaN: AUC without both labels, log loss
        without rows, calibration without positives (progress.undefined_because says why)."""
        out: dict[str, float] = {}
        for t, (name, metrics) in enumerate(zip(self.task_names, self.per_task, strict=True)):
            if self.gauc is not None:
                g = self.gauc[t].compute()
                out[f"{name}/gauc"], out[f"{name}/gauc_groups"] = float(g["gauc"]), float(g["groups"])
            m = {k: float(v) for k, v in metrics.compute().items()}
            out[f"{name}/auc"] = m["auc"]
            out[f"{name}/logloss"] = m["loss_sum"] / m["count"] if m["count"] else float("nan")
            # mean prediction / observed rate: 1.0 is calibrated, > 1 over-predicts.
            out[f"{name}/calibration"] = m["pred_sum"] / m["label_sum"] if m["label_sum"] else float("nan")
            out[f"{name}/count"] = m["count"]
            out[f"{name}/positives"] = m["label_sum"]
        return out

    def reset(self) -> None:
        for metrics in self.per_task:
            metrics.reset()
        for gauc in self.gauc or []:
            gauc.reset()
