"""What the scoring tests score: a randomly initialised export (scoring does not care whether
it was trained) and 2 days x 3 files of synthetic logs, with the job's small test settings."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from pipeline.data.feature_spec import load_spec
from pipeline.data.synthetic import write_file
from pipeline.score.config import ScoreConfig
from pipeline.train.export import write_export
from pipeline.train.module import rec_model
from ple_model import ModelConfig

REPO = Path(__file__).resolve().parents[2]

DAYS, FILES_PER_DAY, ROWS_PER_FILE = 2, 3, 2000
KEYS = ["impression_id", "user_id", "item_id"]
# Small batches and fractional CPUs: the 2-CPU test cluster keeps room for Ray Data's reads.
BASE = dict(
    batch_size=1000, num_actors=2, cpus_per_actor=0.5, torch_threads=1, progress_every_s=0.2, manifest_every_s=0
)


def score_config(**overrides) -> ScoreConfig:
    return ScoreConfig(**{**BASE, **overrides})


def random_export(
    path: Path | str,
    seed: int = 0,
    spec_file: str = "synthetic.yaml",
    rows: dict[str, int] | None = None,
    dims: dict[str, int] | None = None,
) -> str:
    """An export of the demo's model (train_local.yaml's model section) with random weights
    (seeded), at `path`: for configs/features/`spec_file`, its tables resized to `rows` and
    `dims` where given (a managed table's mapping included). The benchmarks use it too."""
    spec = load_spec(REPO / "configs" / "features" / spec_file)
    spec = spec.resized(rows or {}, dims) if rows or dims else spec
    cfg = ModelConfig.model_validate(
        yaml.safe_load((REPO / "configs" / "jobs" / "train_local.yaml").read_text())["model"]
    )
    torch.manual_seed(seed)
    return write_export(str(path), rec_model(spec, cfg).state_dict(), cfg, spec, extra={"step": seed})


def write_logs(root: Path) -> Path:
    """DAYS x FILES_PER_DAY files of ROWS_PER_FILE rows under root/dt=2026-01-0N/."""
    for d in range(DAYS):
        for f in range(FILES_PER_DAY):
            path = root / f"dt=2026-01-0{d + 1}" / f"part-{f:05d}.parquet"
            write_file(str(path), ROWS_PER_FILE, seed=3, day_index=d, file_index=f, chunk_rows=ROWS_PER_FILE // 2)
    return root


def input_files(root: Path) -> list[Path]:
    return sorted(root.glob("dt=*/*.parquet"))
