"""The multi-task comparison: train PLE and the models users compare it with on the
same data, seeds and embedding configuration, at a comparable dense parameter budget, each
through the real training path (Ray Train, sharded tables, the training job's worker loop; one
Ray Train run per seed trains every variant in turn, `pipeline.train.launch.run_training_group`).

A comparison config is a training config (as for jobs.train) plus a `compare:` section:

    name: compare            # run names: <name>-<variant>-s<seed>-<config hash>
    data: ...                # the same days and embedding tables for every variant
    model: ...               # the PLE reference: its dense parameter count is the budget
    train: ...               # the same for all; seed and loss weights are set per run
    cluster: ...
    compare: {variants: [ple, cgc, mmoe, shared_bottom, single_task], seeds: [0, 1, 2], ...}

Variants (every expert width is rescaled so the dense parameter count matches the reference):
    ple            the reference as configured (num_levels levels)
    cgc            PLE with one level: the same network as "PLE, 1 level"
    mmoe           one level, only shared experts (as many as a CGC level holds), a gate per task
    shared_bottom  one shared expert feeding every tower
    single_task    one model per task: a shared-bottom trained on that task's loss alone
                   (loss weight 1 for it, 0 for the others, whose towers stay untrained and are
                   ignored); its budget counts the bottom and its one tower
    ple_uncertainty, ple_dwa
                   the PLE reference trained with train.loss_balancing uncertainty or dwa
                   (learned or loss-rate task weights instead of the configured fixed ones)

Each finished run leaves `compare_result.json` in its run directory; a re-run with the same
config (hence the same run name) reads it instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.common.config import ConfigError, read_config_dict, validated
from pipeline.common.files import write_text_atomic
from pipeline.common.logs import duration
from pipeline.data.feature_spec import FeatureSpec, load_spec
from pipeline.train.config import JobConfig, tasks_from_spec
from ple_model import ModelConfig

VariantKind = Literal["ple", "cgc", "mmoe", "shared_bottom", "single_task", "ple_uncertainty", "ple_dwa"]
BASE_VARIANTS: list[VariantKind] = ["ple", "cgc", "mmoe", "shared_bottom", "single_task"]
RESULT_FILE = "compare_result.json"


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[VariantKind] = Field(default_factory=lambda: list(BASE_VARIANTS), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    param_tolerance: float = Field(0.05, gt=0, description="allowed relative gap to the reference's dense parameters")
    unused_gate_weight: float = Field(
        0.05,
        gt=0,
        lt=1,
        description=("an expert whose mean weight is below this in every gate that can pick it is flagged unused"),
    )
    gate_rows: int = Field(20_000, ge=1, description="validation rows the gate weights are averaged over")
    conflict: list[float] | None = Field(
        None,
        min_length=1,
        description=(
            "a sweep over the generator's conflict strength (data.generate.conflict): one comparison per value, "
            "each on its own generated logs (pipeline/report/sweep.py)"
        ),
    )


class _CompareSection(BaseModel):
    # Wraps the section so that validation errors name keys as written: compare.seeds.
    compare: CompareConfig = CompareConfig()


def load_compare_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[JobConfig, CompareConfig]:
    """(training config, comparison settings). Overrides: `compare.seeds=[0,1]` set the
    comparison, anything else (`train.epochs=3`) the training config, as in jobs.train."""
    data = read_config_dict(path, overrides)
    compare = data.pop("compare", None) or {}
    tasks_from_spec(data, path)
    job = validated(JobConfig, data, path)
    if job.train.esmm:
        raise ConfigError(f"{path}: train.esmm couples the tasks; the comparison trains every variant without it")
    cc = validated(_CompareSection, {"compare": compare}, path, "compare section").compare
    if cc.conflict is not None and job.data.generate is None:
        raise ConfigError(f"{path}: compare.conflict sweeps the generator's knob; it needs a data.generate section")
    return job, cc


# -- variants at a comparable parameter budget -------------------------------------------------


@dataclass
class Variant:
    key: str  # ple, cgc, mmoe, shared_bottom, single_<task>
    label: str  # as shown in the report
    kind: str
    model: ModelConfig
    loss_weights: list[float] | None  # None: the training config's
    task: str | None  # single-task models: the one task they learn and are judged on
    params: int  # dense parameters that count toward the budget
    reference_params: int
    balancing: str | None = None  # train.loss_balancing of its runs; None: the training config's

    @property
    def budget_gap(self) -> float:
        return self.params / self.reference_params - 1.0


def input_dim(spec: FeatureSpec) -> int:
    """Width of the dense model's input: pooled embeddings + dense features (as RecModel)."""
    return sum(t.embedding_dim * len(t.feature_names) for t in spec.embedding_bag_configs()) + spec.num_dense


def dense_params(cfg: ModelConfig, in_dim: int, towers_used: int | None = None) -> int:
    """Dense parameters of MultiTaskModel (experts, gates, towers); `towers_used`: count only
    that many of the task towers (a single-task model's other towers are never trained)."""
    import torch

    from ple_model import MultiTaskModel

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = MultiTaskModel(cfg, in_dim)
    total = sum(p.numel() for p in model.parameters())
    if towers_used is not None:
        towers = sum(p.numel() for p in model.towers.parameters())
        total -= towers * (cfg.num_tasks - towers_used) // cfg.num_tasks
    return total


def _scaled(cfg: ModelConfig, width: int) -> ModelConfig:
    # Every expert layer scaled with the first, so deeper experts keep their shape.
    first = cfg.expert_hidden[0]
    return cfg.model_copy(update={"expert_hidden": [max(1, round(h * width / first)) for h in cfg.expert_hidden]})


def match_budget(cfg: ModelConfig, in_dim: int, target: int, towers_used: int | None = None) -> ModelConfig:
    """`cfg` with the expert width whose dense parameter count is closest to `target` (the
    count grows with the width, so a bisection finds it)."""
    count = lambda w: dense_params(_scaled(cfg, w), in_dim, towers_used)
    lo, hi = 1, max(2, cfg.expert_hidden[0])
    while count(hi) < target and hi < 1 << 16:
        hi *= 2
    while lo < hi:  # smallest width with count >= target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(mid) < target else (lo, mid)
    best = min({max(1, lo - 1), lo}, key=lambda w: abs(count(w) - target))
    return _scaled(cfg, best)


def build_variants(job: JobConfig, cc: CompareConfig, spec: FeatureSpec) -> list[Variant]:
    ref = job.model.model_copy(update={"architecture": "ple"})
    d, t = input_dim(spec), ref.num_tasks
    target = dense_params(ref, d)
    experts = t * ref.task_experts + ref.shared_experts  # experts of one PLE/CGC level

    def make(key, label, kind, cfg, weights=None, task=None, towers=None, balancing=None):
        cfg = cfg if cfg is ref else match_budget(cfg, d, target, towers)  # the reference is the budget
        return Variant(key, label, kind, cfg, weights, task, dense_params(cfg, d, towers), target, balancing)

    out = []
    for kind in cc.variants:
        if kind == "ple":
            levels = ref.num_levels
            if levels == 1 and "cgc" in cc.variants:
                continue  # the same network as CGC: one row, labelled as both
            out.append(make("ple", f"PLE ({levels} level{'s' if levels > 1 else ''})", kind, ref))
        elif kind == "cgc":
            out.append(
                make(
                    "cgc", "CGC (= PLE, 1 level)", kind, ref.model_copy(update={"architecture": "cgc", "num_levels": 1})
                )
            )
        elif kind == "mmoe":
            out.append(
                make(
                    "mmoe",
                    "MMoE",
                    kind,
                    ref.model_copy(
                        update={"architecture": "mmoe", "num_levels": 1, "task_experts": 0, "shared_experts": experts}
                    ),
                )
            )
        elif kind == "shared_bottom":
            out.append(
                make(
                    "shared_bottom",
                    "Shared-bottom",
                    kind,
                    ref.model_copy(
                        update={
                            "architecture": "shared_bottom",
                            "num_levels": 1,
                            "task_experts": 0,
                            "shared_experts": 1,
                        }
                    ),
                )
            )
        elif kind in ("ple_uncertainty", "ple_dwa"):
            method = kind.removeprefix("ple_")
            label = f"PLE + {'uncertainty weighting' if method == 'uncertainty' else 'DWA'}"
            out.append(make(kind, label, kind, ref, balancing=method))
        elif kind == "single_task":
            bottom = ref.model_copy(
                update={"architecture": "shared_bottom", "num_levels": 1, "task_experts": 0, "shared_experts": 1}
            )
            for i, task in enumerate(spec.task_names):
                weights = [1.0 if j == i else 0.0 for j in range(t)]
                out.append(make(f"single_{task}", f"Single-task {task}", kind, bottom, weights, task, towers=1))
    return out


# -- training runs -----------------------------------------------------------------------------


@dataclass
class RunRecord:
    variant: str
    seed: int
    name: str
    metrics: dict  # TrainingResult.metrics, as the run reported them
    history: list[dict]  # TrainingResult.history: every evaluation
    export_dir: str
    run_dir: str
    seconds: float  # wall time of the run (training, export, gate weights)
    utilisation: list[dict] | None = field(default=None)  # per level: mean gate weights
    reused: bool = False  # read back from an earlier comparison's finished run


def run_config(job: JobConfig, variant: Variant, seed: int) -> JobConfig:
    data = job.model_dump(mode="json")
    data["model"] = variant.model.model_dump(mode="json")
    data["train"]["seed"] = seed
    if variant.loss_weights is not None:
        data["train"]["loss_weights"] = variant.loss_weights
    if variant.balancing is not None:
        data["train"]["loss_balancing"] = variant.balancing
    stopping = data["train"].get("early_stopping")
    if variant.task and stopping and stopping["metric"] in ("mean_auc", "mean_gauc"):
        # A single-task model is judged on its task alone: the mean would count the untrained towers.
        stopping["metric"] = f"val/{variant.task}/{stopping['metric'].removeprefix('mean_')}"
    # The name carries a hash of everything else: re-running the same comparison finds its
    # finished runs, a changed config gets fresh runs (the same name would resume the old one).
    digest = hashlib.sha1(json.dumps({k: v for k, v in data.items() if k != "name"}, sort_keys=True).encode())
    data["name"] = f"{job.name}-{variant.key}-s{seed}-{digest.hexdigest()[:8]}"
    return JobConfig.model_validate(data)


def gate_utilisation(export_dir: str, job: JobConfig, rows: int) -> list[dict]:
    """Mean gate weights of an exported model over the first `rows` validation rows, per level:
    `task` [T][k + S] (each task gate: its k experts, then the S shared ones) and `shared`
    [T*k + S] or None (the shared gate; the last level has none). Every row counts, clicked
    or not: the gates run on all of them at serving time."""
    import torch

    from pipeline.data.files import list_day_files
    from pipeline.data.reader import iter_file_batches
    from pipeline.train.export import load_export
    from pipeline.train.tracking import GateMeter

    model, spec, _ = load_export(export_dir)
    files = list_day_files(job.data.root, *job.data.val_days)
    meter = GateMeter(model, spec.task_names)  # the same averaging as TensorBoard's gate scalars
    with torch.no_grad():
        for batch in iter_file_batches(files, spec, min(job.train.batch_size, rows), validate=False):
            model(batch.sparse_features, batch.dense_features)
            if meter.rows >= rows:
                break
    levels = meter.close()
    if not levels:
        raise ValueError(f"no validation rows in {files} to measure the gates on")
    cfg = model.dense.ple.cfg  # resolved: the expert counts the layers were built with
    return [
        {
            "task": [level[t] for t in spec.task_names],
            "shared": level.get("shared"),
            "task_experts": cfg.task_experts,
            "shared_experts": cfg.shared_experts,
        }
        for level in levels
    ]


def _cached_run(cfg: JobConfig, rerun: bool) -> RunRecord | None:
    """The record of a finished earlier run of this exact config, unless `rerun`."""
    cached = Path(cfg.output_dir) / cfg.name / RESULT_FILE
    if cached.is_file() and not rerun:
        print(f"[compare] {cfg.name}: finished earlier, reading {cached}", flush=True)
        return RunRecord(**{**json.loads(cached.read_text()), "reused": True})
    return None


def seed_line(seed: int, variants: list[Variant], records: list, seconds: float) -> str:
    """One console line per seed of a comparison (its runs print none of their own): each
    model's final validation AUC per task, `—` for a single-task model's other task."""
    keys = (k for r in records for k in r.metrics if k.startswith("val/") and k.endswith("/auc"))
    tasks = list(dict.fromkeys(k.split("/")[1] for k in keys))  # in the spec's order
    cells = []
    for v, r in zip(variants, records, strict=True):
        aucs = "/".join("—" if v.task not in (None, t) else f"{r.metrics[f'val/{t}/auc']:.4f}" for t in tasks)
        cells.append(f"{v.label} {aucs}")
    return f"[compare] seed {seed} done in {duration(seconds)}, val AUC {'/'.join(tasks)}: {', '.join(cells)}"


def run_seed(
    job: JobConfig,
    cc: CompareConfig,
    variants: list[Variant],
    seed: int,
    address: str | None = None,
    rerun: bool = False,
) -> list[RunRecord]:
    """Every variant with one seed: the runs not finished earlier are trained one after the other
    in one Ray Train run (launch.run_training_group: each its own sharded model, evaluations,
    checkpoint and export; Ray Train's start-up is paid once per seed, not once per model)."""
    from pipeline.train.launch import run_training_group

    cfgs = {v.key: run_config(job, v, seed) for v in variants}
    records: dict[str, RunRecord | None] = {key: _cached_run(cfg, rerun) for key, cfg in cfgs.items()}
    todo = [v for v in variants if records[v.key] is None]
    if todo:
        print(f"[compare] seed {seed}: training {', '.join(v.label for v in todo)}", flush=True)
        began = time.perf_counter()
        group = f"{job.name}-s{seed}-group"
        results = run_training_group([cfgs[v.key] for v in todo], group, address)
        seconds = (time.perf_counter() - began) / len(todo)  # the group's wall time, shared out
        for v, result in zip(todo, results, strict=True):
            cfg = cfgs[v.key]
            record = RunRecord(
                v.key, seed, cfg.name, result.metrics, result.history, result.export_dir, result.run_dir, seconds
            )
            if v.kind not in ("shared_bottom", "single_task"):  # their one gate is constant 1
                record.utilisation = gate_utilisation(result.export_dir, cfg, cc.gate_rows)
            # Whole or absent: a rerun reads it back as the run's result (_cached_run).
            write_text_atomic(Path(result.run_dir, RESULT_FILE), json.dumps(asdict(record), default=float))
            records[v.key] = record
        print(seed_line(seed, todo, [records[v.key] for v in todo], time.perf_counter() - began), flush=True)
    return [done for v in variants if (done := records[v.key]) is not None]  # every one, by now


@dataclass
class Comparison:
    job: JobConfig
    compare: CompareConfig
    spec: FeatureSpec
    variants: list[Variant]
    runs: list[RunRecord]
    seconds: float

    def runs_of(self, key: str) -> list[RunRecord]:
        return sorted((r for r in self.runs if r.variant == key), key=lambda r: r.seed)


def run_comparison(
    job: JobConfig, cc: CompareConfig, address: str | None = None, rerun: bool = False, describe: bool = True
) -> Comparison:
    """Every variant x seed in one Ray session: one Ray Train run per seed (see run_seed).
    `describe`: print each model's size first."""
    spec = load_spec(job.data.spec)
    variants = build_variants(job, cc, spec)
    for v in variants if describe else []:
        print(
            f"[compare] {v.label}: {v.params:,} dense parameters ({v.budget_gap:+.1%} vs the PLE budget), "
            f"experts {v.model.expert_hidden}",
            flush=True,
        )
    began = time.perf_counter()
    runs = [r for seed in cc.seeds for r in run_seed(job, cc, variants, seed, address, rerun)]
    return Comparison(job, cc, spec, variants, runs, time.perf_counter() - began)
