"""The embedded default of jobs.train, the masked loss and the metrics, end to end."""

from __future__ import annotations

import math

import torch

from jobs.train import main as train_main
from pipeline.train.losses import masked_bce_per_task
from pipeline.train.metrics import TaskMetrics


def test_masked_loss_ignores_rows_outside_the_sample_space():
    logits = torch.tensor([[0.0, 5.0], [0.0, -5.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    masks = torch.tensor([[True, False], [True, True]])  # row 0 is outside task 1's space
    loss = masked_bce_per_task(logits, labels, masks)
    assert math.isclose(loss[0].item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(loss[1].item(), torch.nn.functional.softplus(torch.tensor(-5.0)).item(), rel_tol=1e-5)
    empty = masked_bce_per_task(logits, labels, torch.zeros_like(masks))
    assert torch.equal(empty, torch.zeros(2))  # no NaN when a batch has no clicked row


def test_metrics_match_sklearn_definitions():
    from sklearn.metrics import log_loss, roc_auc_score

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 1, generator=g)
    labels = torch.bernoulli(torch.sigmoid(logits + 0.5 * torch.randn(2000, 1, generator=g)), generator=g)
    metrics = TaskMetrics(["ctr"])
    for part in range(4):  # several updates accumulate
        sl = slice(part * 500, (part + 1) * 500)
        metrics.update(logits[sl], labels[sl], torch.ones(500, 1, dtype=torch.bool))
    out = metrics.compute()
    p = torch.sigmoid(logits[:, 0]).numpy()
    assert abs(out["ctr/auc"] - roc_auc_score(labels[:, 0].numpy(), p)) < 2e-3
    assert math.isclose(out["ctr/logloss"], log_loss(labels[:, 0].numpy(), p), rel_tol=1e-4)
    assert math.isclose(out["ctr/calibration"], p.mean() / labels.mean().item(), rel_tol=1e-4)
    assert out["ctr/count"] == 2000


def test_what_a_set_cannot_measure_is_nan_and_said_why(capsys):
    """A validation day whose conversions are all 0 (a rare event on a small day) has no cvr
    AUC: the metrics say NaN, the lines say why; a task without rows has no log loss either."""
    from jobs.train import _print_metrics
    from pipeline.train.progress import eval_line

    logits = torch.tensor([[0.3, -1.0, 0.1], [-0.2, 0.5, 0.2], [1.0, 0.0, -0.4]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    masks = torch.tensor([[True, True, False], [True, True, False], [True, True, False]])
    metrics = TaskMetrics(["ctr", "cvr", "later"])
    metrics.update(logits, labels, masks)
    out = metrics.compute()
    assert out["ctr/positives"] == 2 and not math.isnan(out["ctr/auc"])
    assert out["cvr/positives"] == 0 and out["cvr/count"] == 3
    assert math.isnan(out["cvr/auc"]) and math.isnan(out["cvr/calibration"]) and not math.isnan(out["cvr/logloss"])
    assert out["later/count"] == 0 and math.isnan(out["later/logloss"])  # was 0.0: a perfect score for no rows

    val = {f"val/{k}": v for k, v in out.items()}
    assert eval_line(7, val, ["ctr", "cvr", "later"]) == (
        f"[eval] step 7: ctr AUC {out['ctr/auc']:.4f}, cvr AUC n/a (no positive labels in 3 rows), "
        "later AUC n/a (no rows)"
    )
    _print_metrics(val)
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:] == [
        f"cvr: AUC n/a (no positive labels in 3 rows), logloss {out['cvr/logloss']:.4f}, calibration n/a",
        "later: AUC n/a (no rows), logloss n/a, calibration n/a",
    ]


def test_default_job_trains_end_to_end():
    result = train_main(["--in-memory", "data.generate.rows=30000", "train.epochs=2"])
    for task in ("ctr", "cvr"):
        assert result[f"{task}/auc"] > 0.55, result  # learns something on 30k rows
        assert result[f"{task}/auc"] <= result[f"{task}/best_auc"] + 0.02
        assert 0.5 < result[f"{task}/calibration"] < 2.0
