"""The training job's embedded default (configs/jobs/train_local.yaml) made small for a test: 20k
generated rows under the test's temporary directory, 512 rows per worker and step, no retries."""

from __future__ import annotations

from pathlib import Path

from pipeline.train.config import JobConfig, load_config

REPO = Path(__file__).resolve().parents[2]
ROWS = 20_000  # over 3 generated days: 2 train, 1 validation
BATCH_SIZE = 512


def small_job_config(tmp_path: Path, *overrides: str) -> JobConfig:
    """train_local.yaml with the small run's settings; `overrides` come last and win."""
    return load_config(
        REPO / "configs/jobs/train_local.yaml",
        [
            f"data.root={tmp_path}/data",
            f"output_dir={tmp_path}/runs",
            f"data.generate.rows={ROWS}",
            f"train.batch_size={BATCH_SIZE}",
            "cluster.max_failures=0",
            *overrides,
        ],
    )
