"""The comparison the report tests run, and a reader of the Markdown report's sections and tables."""

from __future__ import annotations

from pathlib import Path

from pipeline.report.compare import load_compare_config

REPO = Path(__file__).resolve().parents[2]
TASKS = ("ctr", "cvr")
SEEDS = [0, 1]
# Mechanics, not quality: a few thousand rows, one short epoch, two seeds (the least that has a
# spread). Every variant is trained: one Ray Train run per seed trains the six models in turn.
ALL_VARIANTS = ["ple", "cgc", "mmoe", "shared_bottom", "single_task"]


def compare_config(tmp: Path, *extra: str):
    """(job config, comparison settings) of the tests' small comparison, writing under `tmp`."""
    return load_compare_config(
        REPO / "configs/jobs/compare_local.yaml",
        [
            f"data.root={tmp}/data",
            f"output_dir={tmp}/runs",
            f"data.spec={REPO}/configs/features/synthetic.yaml",
            "data.generate.rows=6000",
            "train.epochs=1",
            "train.batch_size=256",
            "train.eval_every_steps=4",
            f"compare.seeds={SEEDS}",
            f"compare.variants=[{','.join(ALL_VARIANTS)}]",
            "compare.gate_rows=1000",
            *extra,
        ],
    )


def section(text: str, title: str) -> str:
    """The body of the report's `## title` section."""
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def table(text: str) -> list[dict]:
    """The rows of the first Markdown table in `text`, as {header: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True)) for row in lines[2:]]
