"""What each Ray Train worker runs: build the sharded model, resume, train, evaluate,
checkpoint. Ray Train owns the process group (it is already initialised here).

torchrec and fbgemm are imported inside the worker function: the driver never needs them
and workers on other nodes import them in their own process.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import torch

from pipeline.common.logs import plural
from pipeline.data.feature_spec import FeatureSpec, spec_from_dict
from pipeline.data.validation import FILLED_PREFIX
from pipeline.train.balancing import DynamicWeightAverage
from pipeline.train.cadence import Cadence, StepActions
from pipeline.train.config import JobConfig
from pipeline.train.early_stopping import BestTracker
from pipeline.train.id_turnover import short_run_warnings, turnover_metrics
from pipeline.train.progress import eval_line, progress_line
from pipeline.train.schedule import lr_factor, set_learning_rates
from pipeline.train.throughput import ThroughputMeter
from pipeline.train.tracking import TENSORBOARD_DIR, GateMeter, TensorBoardWriter

if TYPE_CHECKING:
    from ple_model.managed_ids import ManagedIds

# Ray Train routes workers' logging (and print) to the driver's log once; print would show twice.
log = logging.getLogger("ple.train")


def _device(cfg: JobConfig) -> torch.device:
    if cfg.cluster.use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")


def _skip(batches: Iterator, n: int) -> Iterator:
    # Ray Data shards cannot seek: on resume, pass over the batches already trained on in
    # the interrupted epoch (cheap: they are read, not trained on).
    for _ in range(n):
        next(batches, None)
    return batches


def _count_nodes(world: int) -> int:
    import ray
    import torch.distributed as dist

    nodes: list = [None] * world
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    return len(set(nodes))


def loss_weights_at(cfg: JobConfig, step: int) -> torch.Tensor:
    base = torch.tensor(cfg.train.loss_weights or [1.0] * cfg.model.num_tasks)
    return base * (1.0 - cfg.train.loss_weight_decay) ** step


class _EarlyFirstBatch:
    """The first batch of a fresh run's first epoch, fetched in a background thread while the
    sharded model is built: starting an epoch's reads (Ray Data's split coordinator launching
    read tasks) took seconds on a busy machine, and the model build hides most of it."""

    def __init__(self, batches: Iterator) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.batches = batches
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="first-batch")
        self._first = self._pool.submit(next, batches, None)

    def iterator(self) -> Iterator:
        first = self._first.result()  # a read or validation error is raised here, as it would be
        self._pool.shutdown()
        if first is not None:
            yield first
        yield from self.batches


class WorkerTrainer:
    """One training run in a Ray Train worker. `group_run`: this run's name when it is one of
    several runs trained in sequence by one Ray Train run (launch.run_training_group): its
    reports carry the name, its checkpoint directories start with it, and Ray Train's restored
    checkpoint (another run's) is ignored."""

    early_first_batch = True  # see _EarlyFirstBatch (benchmarks' in-memory trainer turns it off)

    def __init__(
        self,
        cfg: JobConfig,
        spec: FeatureSpec,
        files: dict[str, list[str]] | None = None,
        group_run: str | None = None,
        storage: str | None = None,
    ) -> None:
        import ray.train

        log.setLevel(logging.INFO)
        self.cfg, self.spec = cfg, spec
        self.files = files or {}  # behind each dataset: lets a bad batch's error name its file
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = _device(cfg)
        self.num_nodes = _count_nodes(self.world)
        torch.manual_seed(cfg.train.seed)  # same initial dense weights on every worker
        self.group_run = group_run
        # Set when Ray Train restarts or resumes the run.
        self.checkpoint = None if group_run else ray.train.get_checkpoint()
        self.step, self.epoch, self.batches_in_epoch = 0, 0, 0
        self._steps_per_epoch: int | None = None  # see steps_per_epoch
        es = cfg.train.early_stopping
        self.tracker = BestTracker(es, spec.task_names) if es is not None else None
        self.stopped_early = False
        t = cfg.train
        self.dwa = (
            DynamicWeightAverage(len(spec.tasks), t.dwa_window, t.dwa_temperature)
            if t.loss_balancing == "dwa"
            else None
        )
        self.missing: Counter[str] = Counter()  # feature -> training rows its missing policy filled
        # A resumed run starts mid-epoch at a position known only after loading: no early start.
        self._early = (
            _EarlyFirstBatch(self.train_batches()) if self.early_first_batch and self.checkpoint is None else None
        )
        from pipeline.train.sharded_model import build_sharded_model  # imports torchrec and fbgemm (seconds)
        from pipeline.train.sharding import worker_memory_budget

        self.table_configs = spec.embedding_bag_configs()
        self.sm = build_sharded_model(
            spec,
            cfg.model,
            cfg.train,
            self.device,
            sharding_type=cfg.train.sharding_type or self._saved_sharding(),
            memory_budget=worker_memory_budget(cfg.cluster.worker_memory_gb, self.device, ctx.get_local_world_size()),
        )
        self.history: list[dict] = []  # every evaluation's metrics, for curves and reports
        self.resumed_at: list[int] = []  # the steps this run recovered from after failures
        self.pipeline = None
        self.checkpointed_step: int | None = None  # the step of this run's last checkpoint
        self.resumed_final = False  # resumed from the final checkpoint of a run that had finished
        self.val_cache: list | None = None  # collated validation batches (see val_batches)
        self.tensorboard = self._tensorboard(storage)

    def _tensorboard(self, storage: str | None) -> TensorBoardWriter | None:
        """Rank 0's event files in <output_dir>/<name>/tensorboard/. A run that starts afresh
        (not resumed from a checkpoint) replaces those of an earlier run of the same name."""
        tracking = self.cfg.tracking
        if not (tracking.tensorboard and storage and self.rank == 0):
            return None
        path = f"{storage}/{self.cfg.name}/{TENSORBOARD_DIR}"
        if self.checkpoint is None:
            shutil.rmtree(path, ignore_errors=True)
        return TensorBoardWriter(
            path, tracking.scalars_every_steps, rows_per_step=self.cfg.train.batch_size * self.world
        )

    # -- state --------------------------------------------------------------------------------
    def _saved_sharding(self) -> dict[str, str] | None:
        """The table sharding types of the checkpoint this run starts from: planning with them
        lets it load on a different number of workers (see pipeline/train/checkpoint.py)."""
        from pipeline.train.checkpoint import saved_sharding_types
        from pipeline.train.sharding import allowed_sharding_types

        if self.checkpoint is not None:
            with self.checkpoint.as_directory() as d:
                types = saved_sharding_types(d)
        elif self.cfg.train.init_from:
            types = saved_sharding_types(self.cfg.train.init_from)
        else:
            return None
        allowed = allowed_sharding_types(self.device.type)  # e.g. row_wise saved on GPU, resumed on CPU
        return {table: kind for table, kind in (types or {}).items() if kind in allowed} or None

    def resume(self) -> None:
        ckpt = self.checkpoint
        if ckpt is None:
            self._warm_start()
            return
        with ckpt.as_directory() as d:
            extra = self._load(
                d, "A run resumes from its own checkpoints: give this one another name= to train it anew"
            )
        self.step, self.epoch, self.batches_in_epoch = extra["step"], extra["epoch"], extra["batches_in_epoch"]
        self.checkpointed_step = self.step
        # Final checkpoints are marked "done"; an earlier version's is recognised by its name.
        named_final = PurePosixPath(ckpt.path).name == self._checkpoint_name(final=True)
        self.resumed_final = bool(extra.get("done")) or named_final
        self.history = extra.get("history", [])
        self.resumed_at = extra.get("resumed_at", []) + [self.step]
        if self.dwa is not None and "dwa" in extra:
            self.dwa.load(extra["dwa"])
        if self.tracker is not None:
            self.stopped_early = self.tracker.replay([h for h in self.history if h["step"] > 0])
        if self.rank == 0:
            log.info(
                f"[train] resumed from {ckpt.path} at step {self.step} (epoch {self.epoch}, "
                f"{plural(extra['world_size'], 'worker')} then, {self.world} now)"
            )

    def _warm_start(self) -> None:
        """A new run starting from another run's weights and optimizer state (daily retraining):
        unlike a resume, the step, epoch and history start afresh."""
        path = self.cfg.train.init_from
        if path is None:
            return
        extra = self._load(
            path,
            "A warm start (train.init_from) needs the tables, features, tasks and model it was trained with: "
            "restore those, or train without it",
        )
        if self.rank == 0:
            log.info(f"[train] warm start from {path} (its step {extra['step']})")

    def _load(self, path: str, if_changed: str) -> dict:
        """load_checkpoint with this run's settings; a mismatch they explain says `if_changed`,
        what to do about it."""
        from pipeline.train.checkpoint import CheckpointMismatchError, load_checkpoint

        try:
            return load_checkpoint(path, self.sm.model, self.sm.optimizer, self._settings())
        except CheckpointMismatchError as err:
            if not err.changed:
                raise
            raise CheckpointMismatchError(f"{err} {if_changed}.", err.changed) from None

    def _settings(self) -> dict:
        """This run's config and feature spec, as its checkpoints record them."""
        return {"config": self.cfg.model_dump(mode="json"), "spec": self.spec.model_dump(mode="json")}

    def _checkpoint_name(self, final: bool = False) -> str:
        """The checkpoint directory's name. The final checkpoint at a step that has one already
        (the last evaluation's, or the one this run resumed from) needs a name of its own."""
        suffix = "-final" if final and self.checkpointed_step == self.step else ""
        return f"{self.group_run + '-' if self.group_run else ''}step_{self.step:08d}{suffix}"

    def report(self, metrics: dict, with_checkpoint: bool, final: bool = False) -> None:
        import ray.train

        from pipeline.train.checkpoint import save_shards

        metrics = {**metrics, "step": self.step, "epoch": self.epoch}
        if self.group_run:
            metrics["run"] = self.group_run
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        extra = {
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "world_size": self.world,
            "history": self.history,
            "resumed_at": self.resumed_at,
            **self._settings(),
            "plan": str(self.sm.plan),
            "done": final,
            **({"dwa": self.dwa.state()} if self.dwa is not None else {}),
        }
        # Each worker writes its own shards locally; Ray merges the workers' directories in
        # storage and registers the checkpoint only once every worker has reported, so a
        # worker dying mid-write never replaces the last good checkpoint.
        name = self._checkpoint_name(final)
        self.checkpointed_step = self.step
        with tempfile.TemporaryDirectory(prefix="ple-ckpt-") as tmp:
            save_shards(tmp, self.sm.model, self.sm.optimizer, extra)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=name,
            )

    # -- loops --------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        from pipeline.train.metrics import TaskMetrics

        metrics = TaskMetrics.for_spec(self.spec, self.device)
        # The train pipeline rewrote the tables' forward for pipelining; detach restores it
        # (in-flight training batches are kept) and the next progress() re-attaches.
        if self.pipeline is not None:
            self.pipeline.detach()
        self.sm.model.eval()
        gates = GateMeter(self.sm.model, self.spec.task_names) if self.tensorboard is not None else None
        with torch.no_grad():
            for batch in self.val_batches():
                batch = batch.to(self.device)
                _, (_, logits, labels, masks) = self.sm.model(batch)
                metrics.update(logits, labels, masks, batch.groups)
        self.sm.model.train()
        result = {f"val/{k}": v for k, v in metrics.compute().items()}
        result["train/lr_factor"] = self.lr_factor_at(max(self.step - 1, 0))  # of the last step trained
        weights = self.sm.train_module.task_weights().tolist()
        result.update({f"train/loss_weight/{t}": w for t, w in zip(self.spec.task_names, weights, strict=True)})
        # A warm start's evaluation at step 0 is of production's weights, and is not checkpointed.
        if self.tracker is not None and self.step > 0:
            if self.tracker.update(self.step, result) and not self.stopped_early:
                self.stopped_early = True
                if self.rank == 0:
                    log.info(
                        f"[train] early stopping at step {self.step}: no better {self.tracker.cfg.metric} "
                        f"than step {self.tracker.best_step} for {self.tracker.since_best} evaluations"
                    )
            result.update(self.tracker.report())
        self.history.append({"step": self.step, "epoch": self.epoch, **result})
        if self.rank == 0 and not self.group_run:  # a group's (comparison's) driver prints one line per seed
            log.info(eval_line(self.step, result, self.spec.task_names))
        if self.tensorboard is not None and gates is not None:
            self.tensorboard.evaluation(self.step, result, gates.close())
        return result

    def val_batches(self) -> Iterator:
        """This worker's validation batches. A shard of at most train.val_cache_rows rows is
        kept in memory after the first full pass: re-reading it through Ray Data cost ~1 s per
        evaluation on the small validation sets of frequent mid-epoch evaluations."""
        from pipeline.data.reader import iter_ray_batches

        if self.val_cache is not None:
            yield from self.val_cache
            return
        limit = self.cfg.train.val_cache_rows
        cache: list | None = [] if limit else None
        rows = 0
        for batch in iter_ray_batches(
            "val", self.spec, self.cfg.train.batch_size, drop_last=False, files=self.files.get("val")
        ):
            if cache is not None:
                rows += len(batch)
                if rows <= limit:
                    cache.append(batch)
                else:
                    cache = None
            yield batch
        self.val_cache = cache

    def train_batches(self) -> Iterator:
        """This worker's training batches for the current epoch (benchmarks override it)."""
        from pipeline.data.reader import iter_ray_batches

        t = self.cfg.train
        # drop_last: every worker must take the same number of steps (collectives).
        batches = iter_ray_batches(
            "train",
            self.spec,
            t.batch_size,
            drop_last=True,
            files=self.files.get("train"),
            local_shuffle_rows=8 * t.batch_size,
            local_shuffle_seed=t.seed + self.epoch,
        )
        return self._counting_missing(batches)

    def _counting_missing(self, batches: Iterator) -> Iterator:
        for batch in batches:
            self.missing.update(batch.missing)
            yield batch

    def missing_metrics(self) -> dict[str, int]:
        """`missing/{feature}`: training rows (all workers, every epoch) whose missing values the
        feature's `missing: default` policy filled; every such feature is listed, 0 included."""
        names = [f.name for f in self.spec.sparse if f.missing == "default"]
        names += [d.name for d in self.spec.dense if d.missing == "default"]
        if not names:
            return {}
        counts = torch.tensor([self.missing[n] for n in names], dtype=torch.int64)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)  # on CPU: gloo takes CPU tensors
        return {f"{FILLED_PREFIX}{n}": int(c) for n, c in zip(names, counts.tolist(), strict=True)}

    def fit(self) -> None:
        """Train to the end of the configured epochs (or train.max_steps, or until early stopping),
        then evaluate and checkpoint once more (stopped early: that was the last evaluation's).
        The export starts from the final checkpoint, or with early stopping from the best one."""
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        t = self.cfg.train
        if self.resumed_final and self._trained_out():
            # A rerun of a finished run: its final checkpoint stands. Writing it again would cost a
            # model's bytes, and Ray Train deleted a directory registered twice under one name.
            if self.rank == 0:
                how = "stopped early" if self.stopped_early else "finished"
                on = "" if self.stopped_early else "raise train.epochs (or train.max_steps) to train on, or "
                log.info(
                    f"[train] this run {how} at step {self.step} already: nothing to train; "
                    f"{on}give a new name= to start afresh"
                )
            if self.tensorboard is not None:
                self.tensorboard.close()
            return
        # Managed tables remap ids in front of the EBC (ple_model/managed_ids.py): without
        # pipeline_postproc TorchRec would not pipeline the EBC's input distribution behind it.
        self.pipeline = TrainPipelineSparseDist(
            self.sm.model,
            self.sm.optimizer,
            self.device,
            execute_all_batches=True,
            pipeline_postproc=bool(self.spec.managed_tables),
        )
        rows_per_step = t.batch_size * self.world
        if self.rank == 0:
            for line in short_run_warnings(self.spec, self.run_steps):
                log.warning(f"[train] {line}")
        meter, cadence = ThroughputMeter(rows_per_step), Cadence(t)
        self._carry_out(cadence.at_start(self.step))
        while not self._trained_out():
            batches = self._epoch_batches()
            first_of_epoch = True
            while not self._done():
                per_task = self._train_step(batches, meter, first_of_epoch)
                if per_task is None:  # the epoch's data is exhausted
                    break
                first_of_epoch = False
                self._carry_out(cadence.at(self.step), per_task, meter)
            if self._done() and self.batches_in_epoch:
                break
            self.epoch += 1
            self.batches_in_epoch = 0
        # The last evaluation was at this very step (stopped early, or the cadence evaluated at the
        # epoch's last step): its metrics are the final ones, the same weights are not evaluated again.
        evaluated_here = bool(self.history) and self.history[-1]["step"] == self.step
        final = self.history[-1] if evaluated_here else self.evaluate()
        self.report(
            {
                **final,
                "train/rows": self.step * rows_per_step,
                **meter.summary(),
                "resumed_at": self.resumed_at,
                "cluster/workers": self.world,
                "cluster/nodes": self.num_nodes,
                **self.missing_metrics(),
                **turnover_metrics(self.sm.train_module.model, self.cfg.train.init_from),
                "train/stopped_early": int(self.stopped_early),
                "done": 1,
            },
            with_checkpoint=True,
            final=True,
        )
        if self.tensorboard is not None:
            self.tensorboard.close()

    def lr_factor_at(self, step: int) -> float:
        """The learning-rate schedule's factor at `step` (train.lr_schedule). Only a schedule
        that needs the run's length reads the training files' footers for it."""
        schedule = self.cfg.train.lr_schedule
        return lr_factor(schedule, step, self.run_steps if schedule.needs_run_steps else None)

    @property
    def steps_per_epoch(self) -> int | None:
        """A worker's drop_last batches of its share of the training rows, from the files' footers
        (read once; None without files, as in the benchmarks' in-memory trainer)."""
        if self._steps_per_epoch is None and self.files.get("train"):
            import pyarrow.parquet as pq

            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files["train"])
            self._steps_per_epoch = max(rows // (self.world * self.cfg.train.batch_size), 1)
        return self._steps_per_epoch

    @property
    def run_steps(self) -> int | None:
        """Steps of the whole run: epochs x steps per epoch, capped by train.max_steps."""
        per_epoch, max_steps = self.steps_per_epoch, self.cfg.train.max_steps
        if per_epoch is None:
            return max_steps
        run = per_epoch * self.cfg.train.epochs
        return min(run, max_steps) if max_steps else run

    def _trained_out(self) -> bool:
        """Nothing left to train: the configured epochs are done, or _done() says stop."""
        return self.epoch >= self.cfg.train.epochs or self._done()

    def _done(self) -> bool:
        max_steps = self.cfg.train.max_steps
        return self.stopped_early or (max_steps is not None and self.step >= max_steps)

    def _epoch_batches(self) -> Iterator:
        """The current epoch's batches from where this run stands in it (resumed mid-epoch: the
        batches already trained on are skipped)."""
        early, self._early = self._early, None
        if early is not None and self.epoch == 0 and self.batches_in_epoch == 0:
            return early.iterator()
        return _skip(self.train_batches(), self.batches_in_epoch)

    def _train_step(self, batches: Iterator, meter: ThroughputMeter, first_of_epoch: bool) -> torch.Tensor | None:
        """One step of the train pipeline: the per-task losses, or None at the end of the data."""
        assert self.pipeline is not None
        weights = loss_weights_at(self.cfg, self.step)
        self.sm.train_module.set_loss_weights(weights if self.dwa is None else weights * self.dwa.weights())
        set_learning_rates(self.sm.lr_groups, self.lr_factor_at(self.step))
        began = time.perf_counter()
        try:
            per_task, _, _, _ = self.pipeline.progress(batches)  # the model output, loss excluded
        except StopIteration:
            return None
        seconds = time.perf_counter() - began
        meter.record(seconds, first_of_epoch)
        self.step += 1
        if self.spec.managed_tables:  # rows handed to new ids start afresh before their next lookup
            from pipeline.train.reassigned_rows import reset_reassigned_rows, sharded_tables

            tables = sharded_tables(self.sm)
            reset_reassigned_rows(self._managed_ids, self.table_configs, self.cfg.train.seed, self.step, tables)
        if self.tensorboard is not None and self.tensorboard.due(self.step, seconds):
            losses = dict(zip(self.spec.task_names, per_task.tolist(), strict=True))
            lrs = {"sparse": self.sm.lr_groups[0][0][0]["lr"], "dense": self.sm.lr_groups[-1][0][0]["lr"]}
            self.tensorboard.train_step(self.step, losses, lrs)
        if self.dwa is not None:
            self.dwa.observe(per_task)
            if self.step % self.dwa.window == 0:
                self.dwa.close_window()
        self.batches_in_epoch += 1
        return per_task

    @functools.cached_property
    def _managed_ids(self) -> ManagedIds:
        """The model's ManagedIds. The train pipeline wraps it (TorchRec's PipelinedPostproc runs it
        ahead of the step), so it is looked up among the modules rather than by attribute."""
        from ple_model.managed_ids import ManagedIds

        return next(m for m in self.sm.model.modules() if isinstance(m, ManagedIds))

    def _carry_out(
        self, actions: StepActions, per_task: torch.Tensor | None = None, meter: ThroughputMeter | None = None
    ) -> None:
        """What the cadence decided for this step: a progress line (rank 0), an evaluation, a
        checkpoint (an evaluation and a checkpoint at the same step are one report)."""
        # A group's runs (the comparison's, tens of short runs) print no progress lines.
        if actions.log and self.rank == 0 and not self.group_run and per_task is not None and meter is not None:
            line = progress_line(
                epoch=self.epoch,
                epochs=self.cfg.train.epochs,
                step=self.step,
                batch_in_epoch=self.batches_in_epoch,
                steps_per_epoch=self.steps_per_epoch,
                tasks=self.spec.task_names,
                losses=per_task.tolist(),
                rows_per_s=meter.window_rows_per_s(),
                rows_per_step=meter.rows_per_step,
            )
            log.info(line)
        if actions.report:
            self.report(self.evaluate() if actions.evaluate else {}, with_checkpoint=actions.checkpoint)


def configure_worker_logs(loop_config: dict, verbose: bool) -> None:
    """Library logs to <run>/logs/worker-<rank>.log, off the console unless verbose; set before
    torchrec and fbgemm are imported (fbgemm logs each library it loads). Rank 0 of a single
    run says when the worker group started (a restart after a fault shows); a group's runs (the
    comparison's) leave their console to the driver's one line per seed."""
    import ray.train

    from pipeline.common.logs import configure_logs

    log_dir = loop_config.get("log_dir")
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    configure_logs(f"{log_dir}/worker-{rank}.log" if log_dir else None, verbose)
    if rank == 0 and "job" in loop_config:  # once per start of the worker group
        log.info(f"[train] {plural(ctx.get_world_size(), 'worker')} started")


def train_loop_per_worker(loop_config: dict) -> None:
    """One run ("job"), or a group of runs ("jobs", see launch.run_training_group) trained one
    after the other on the same data, sharing the cached validation batches."""
    first = loop_config["job"] if "job" in loop_config else loop_config["jobs"][0]
    configure_worker_logs(loop_config, bool(first.get("verbose")))
    if "job" in loop_config:
        cfg = JobConfig.model_validate(loop_config["job"])
        trainer = WorkerTrainer(
            cfg,
            spec_from_dict(loop_config["spec"], source=cfg.data.spec),
            loop_config.get("files"),
            storage=loop_config.get("storage"),
        )
        trainer.resume()
        trainer.fit()
        return
    val_cache = None
    for job in loop_config["jobs"]:
        cfg = JobConfig.model_validate(job)
        trainer = WorkerTrainer(
            cfg,
            spec_from_dict(loop_config["spec"], source=cfg.data.spec),
            loop_config.get("files"),
            group_run=cfg.name,
            storage=loop_config.get("storage"),
        )
        trainer.val_cache = val_cache  # the same validation days for every run
        trainer.resume()  # a warm start (train.init_from) if configured
        trainer.fit()
        val_cache = trainer.val_cache
        del trainer  # its sharded model and optimizer state before the next run's
