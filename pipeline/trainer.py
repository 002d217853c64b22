"""What each Ray Train worker runs: build the sharded model, resume, train, evaluate,
checkpoint. Ray Train owns the process group (it is already initialised here).

torchrec and fbgemm are imported inside the worker function: the driver never needs them
and workers on other nodes import them in their own process.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Iterator

import torch

from pipeline.config import JobConfig
from pipeline.feature_spec import FeatureSpec, spec_from_dict

LOG_EVERY_STEPS = 50


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


def loss_weights_at(cfg: JobConfig, step: int) -> torch.Tensor:
    base = torch.tensor(cfg.train.loss_weights or [1.0] * cfg.model.num_tasks)
    return base * (1.0 - cfg.train.loss_weight_decay) ** step


class WorkerTrainer:
    def __init__(self, cfg: JobConfig, spec: FeatureSpec) -> None:
        import ray.train
        from pipeline.sharded_model import build_sharded_model

        self.cfg, self.spec = cfg, spec
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = _device(cfg)
        torch.manual_seed(cfg.train.seed)  # same initial dense weights on every worker
        t = cfg.train
        self.sm = build_sharded_model(
            spec, cfg.model, self.device, sparse_optimizer=t.sparse_optimizer, sparse_lr=t.sparse_lr,
            dense_lr=t.dense_lr, sharding_type=t.sharding_type, loss_weights=loss_weights_at(cfg, 0).tolist(),
            esmm=t.esmm, batch_size=t.batch_size,
        )
        self.step, self.epoch, self.batches_in_epoch = 0, 0, 0
        self.pipeline = None

    # -- state --------------------------------------------------------------------------------
    def resume(self) -> None:
        import ray.train
        from pipeline.checkpoint import load_checkpoint

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return
        with ckpt.as_directory() as d:
            extra = load_checkpoint(d, self.sm.model, self.sm.optimizer)
        self.step, self.epoch, self.batches_in_epoch = extra["step"], extra["epoch"], extra["batches_in_epoch"]
        if self.rank == 0:
            print(f"[train] resumed from {ckpt.path} at step {self.step} (epoch {self.epoch})", flush=True)

    def report(self, metrics: dict, with_checkpoint: bool) -> None:
        import ray.train
        from pipeline.checkpoint import save_shards

        metrics = {**metrics, "step": self.step, "epoch": self.epoch}
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        extra = {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
                 "world_size": self.world, "config": self.cfg.model_dump(mode="json"),
                 "spec": self.spec.model_dump(mode="json"), "plan": str(self.sm.plan)}
        # Each worker writes its own shards locally; Ray merges the workers' directories in
        # storage and registers the checkpoint only once every worker has reported, so a
        # worker dying mid-write never replaces the last good checkpoint.
        with tempfile.TemporaryDirectory(prefix="ple-ckpt-") as tmp:
            save_shards(tmp, self.sm.model, self.sm.optimizer, extra)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"step_{self.step:08d}")

    # -- loops --------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        from pipeline.metrics import TaskMetrics
        from pipeline.reader import iter_ray_batches

        metrics = TaskMetrics(self.spec.task_names, self.device)
        # The train pipeline rewrote the tables' forward for pipelining; detach restores it
        # (in-flight training batches are kept) and the next progress() re-attaches.
        if self.pipeline is not None:
            self.pipeline.detach()
        self.sm.model.eval()
        with torch.no_grad():
            for batch in iter_ray_batches("val", self.spec, self.cfg.train.batch_size, drop_last=False):
                _, (_, logits, labels, masks) = self.sm.model(batch.to(self.device))
                metrics.update(logits, labels, masks)
        self.sm.model.train()
        return {f"val/{k}": v for k, v in metrics.compute().items()}

    def fit(self) -> None:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
        from pipeline.reader import iter_ray_batches

        cfg, t = self.cfg, self.cfg.train
        self.pipeline = pipeline = TrainPipelineSparseDist(self.sm.model, self.sm.optimizer, self.device,
                                                           execute_all_batches=True)
        train_module = self.sm.train_module
        done = lambda: t.max_steps is not None and self.step >= t.max_steps
        rows_per_step = t.batch_size * self.world
        while self.epoch < t.epochs and not done():
            # drop_last: every worker must take the same number of steps (collectives).
            batches = iter_ray_batches("train", self.spec, t.batch_size, drop_last=True,
                                       local_shuffle_buffer_size=8 * t.batch_size, local_shuffle_seed=t.seed + self.epoch)
            batches = _skip(batches, self.batches_in_epoch)
            start, start_step = time.perf_counter(), self.step
            while not done():
                train_module.set_loss_weights(loss_weights_at(cfg, self.step))
                try:
                    per_task, _, _, _ = pipeline.progress(batches)  # the model output, loss excluded
                except StopIteration:
                    break
                self.step += 1
                self.batches_in_epoch += 1
                if self.rank == 0 and self.step % LOG_EVERY_STEPS == 0:
                    rate = (self.step - start_step) * rows_per_step / (time.perf_counter() - start)
                    losses = " ".join(f"{n}={v:.4f}" for n, v in zip(self.spec.task_names, per_task.tolist()))
                    print(f"[train] epoch {self.epoch} step {self.step} loss {losses} {rate:,.0f} rows/s", flush=True)
                if t.eval_every_steps and self.step % t.eval_every_steps == 0:
                    ckpt = bool(t.checkpoint_every_steps) and self.step % t.checkpoint_every_steps == 0
                    self.report(self.evaluate(), with_checkpoint=ckpt)
                elif t.checkpoint_every_steps and self.step % t.checkpoint_every_steps == 0:
                    self.report({}, with_checkpoint=True)
            if done() and self.batches_in_epoch:
                break
            self.epoch += 1
            self.batches_in_epoch = 0
        # The final evaluation and checkpoint, always: scoring and export start from here.
        elapsed_rows = self.step * rows_per_step
        self.report({**self.evaluate(), "train/rows": elapsed_rows, "done": 1}, with_checkpoint=True)


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = JobConfig.model_validate(loop_config["job"])
    spec = spec_from_dict(loop_config["spec"], source=cfg.data.spec)
    trainer = WorkerTrainer(cfg, spec)
    trainer.resume()
    trainer.fit()
