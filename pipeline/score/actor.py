"""The scoring actor (pipeline/score/run.py runs a pool of them with Ray Data's map_batches):
loads the export once, then turns Arrow batches of input rows into Arrow batches of scores.
Imported in the actors' processes, so it keeps the driver's machinery out."""

from __future__ import annotations

import os
import resource
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.files import PATH_COLUMN
from pipeline.score.allocator import RELEASE_EVERY_S, release_freed_memory
from pipeline.score.errors import ScoringError

if TYPE_CHECKING:  # annotations only: the module imports Ray where it runs in an actor
    from ray.actor import ActorHandle

ROW_HASH = "row_hash"  # added by read_parquet(include_row_hash=True): hash of (file, row position)
FILE_COLUMN = "__file"  # internal: index of the input file, from the actors to the driver's writers


class Scorer:
    """Ray Data actor (map_batches with a class): loads the export once, then turns Arrow
    batches of input rows into Arrow batches of scores."""

    def __init__(
        self,
        model_dir: str,
        version: str,
        keys: list[str],
        products: dict[str, list[str]],
        file_index: dict[str, int],
        torch_threads: int,
        use_gpu: bool,
        batch_delay_s: float = 0.0,
        stats=None,
        model_url: str | None = None,
        log_dir: str | None = None,
        verbose: bool = False,
    ):
        import ray
        import torch

        from pipeline.common.logs import configure_logs

        # Before torchrec is imported (load_export): fbgemm logs each library it loads.
        configure_logs(f"{log_dir}/actor-{os.getpid()}.log" if log_dir else None, verbose)

        from pipeline.score.allocator import prepare_allocator
        from pipeline.train.export import load_export

        start = time.perf_counter()
        # jemalloc when preloaded through the runtime_env; else glibc's malloc, tuned so that a
        # fresh process's forward runs at full speed from its first batch.
        allocator = prepare_allocator()
        torch.set_num_threads(torch_threads)
        if model_url is not None:  # from a registry at a URL: this node's own cached copy
            from pipeline.registry.store import fetched_copy

            model_dir = fetched_copy(model_url, "export")
        import safetensors.torch  # noqa: F401  imported first, so that model_private_mb is the
        import torchrec  # noqa: F401  model's alone, not the code's (the load imports them)

        before_load = _resident_mb()[0]
        self.model, self.spec, meta = load_export(model_dir)
        # The buffers the model was built with, replaced by the export's mapped ones, go back now
        # (jemalloc keeps freed pages until asked; the scoring loop asks every RELEASE_EVERY_S).
        release_freed_memory()
        # The export is mapped, not copied: the private memory its load adds is the modules' own
        # bookkeeping, not the tables (those are the page cache's, shared by the node's actors).
        self.model_private_mb = _resident_mb()[0] - before_load
        if meta["version"] != version:
            # The export directory was replaced (a new training run) after the job was planned.
            raise ScoringError(
                f"{model_dir}: export changed during the job (planned version {version}, "
                f"found {meta['version']}); rerun the job"
            )
        if use_gpu and not torch.cuda.is_available():
            raise ScoringError("gpus_per_actor > 0 but this actor sees no CUDA device")
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.model.to(self.device)
        self.keys, self.products, self.file_index = keys, products, file_index
        self.tasks = self.spec.task_names
        self.delay, self.stats = batch_delay_s, stats
        self.last_release = time.perf_counter()
        self.rows = self.batches = 0
        self.missing: dict[str, int] = {}  # feature -> rows its missing-value policy filled
        self.peak_anon_mb = self.peak_shmem_mb = 0.0
        self.load_s, self.busy_s = time.perf_counter() - start, 0.0
        ctx = ray.get_runtime_context()
        self.info = {"actor": ctx.get_actor_id(), "node": ctx.get_node_id(), "pid": os.getpid(), "allocator": allocator}
        if stats is not None:  # so that a failed run can stop this actor (ActorStats.stop_scorers)
            stats.join.remote(self.info["actor"], ctx.current_actor)
        self._report()  # listed from the start, even if it never gets a batch

    def _file_ids(self, paths: pa.ChunkedArray) -> np.ndarray:
        enc = pc.dictionary_encode(paths.combine_chunks() if isinstance(paths, pa.ChunkedArray) else paths)
        try:
            ids = np.array([self.file_index[p] for p in enc.dictionary.to_pylist()], dtype=np.int32)
        except KeyError as e:
            raise ScoringError(f"row from unplanned file {e}") from None
        return ids[enc.indices.to_numpy(zero_copy_only=False)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        from pipeline.data.collate import collate

        start = time.perf_counter()
        if start - self.last_release >= RELEASE_EVERY_S:
            # jemalloc keeps freed pages (no purging of its own: pipeline/score/allocator.py); a no-op
            # under glibc. After the previous batch's memory sample: the peak counts what it frees.
            release_freed_memory()
            self.last_release = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        b = collate(batch, self.spec, with_labels=False)  # value errors name the file (path column)
        for name, rows in b.missing.items():
            self.missing[name] = self.missing.get(name, 0) + rows
        with torch.inference_mode():
            logits = self.model(b.sparse_features.to(self.device), b.dense_features.to(self.device))
            probs = torch.sigmoid(logits.float()).cpu().numpy()
        cols = {k: batch.column(k) for k in self.keys}
        by_task = {t: probs[:, j] for j, t in enumerate(self.tasks)}
        for t, p in by_task.items():
            cols[f"p_{t}"] = p
        for name, parts in self.products.items():
            joint = by_task[parts[0]].copy()
            for t in parts[1:]:
                joint *= by_task[t]
            cols[f"p_{name}"] = joint
        cols[FILE_COLUMN] = self._file_ids(batch.column(PATH_COLUMN))
        cols[ROW_HASH] = batch.column(ROW_HASH)
        self.rows += batch.num_rows
        self.batches += 1
        self.busy_s += time.perf_counter() - start
        self._report()
        return pa.table(cols)

    def _report(self) -> None:
        # peak_anon_mb (private memory, sampled after each batch) is what the actor holds itself.
        # peak_rss_mb (the kernel's high-water mark) also counts the pages of Ray's shared object
        # store (the node's fixed object_store_memory) that this process has mapped, peak_shmem_mb:
        # more of them as more blocks pass through it, up to that fixed budget.
        anon, shmem = _resident_mb()
        self.peak_anon_mb, self.peak_shmem_mb = max(self.peak_anon_mb, anon), max(self.peak_shmem_mb, shmem)
        if self.stats is not None:  # fire and forget: a few bytes per batch
            self.stats.report.remote(
                {
                    **self.info,
                    "rows": self.rows,
                    "batches": self.batches,
                    "missing": dict(self.missing),
                    "load_s": self.load_s,
                    "model_private_mb": self.model_private_mb,
                    "busy_s": self.busy_s,
                    "peak_anon_mb": self.peak_anon_mb,
                    "peak_shmem_mb": self.peak_shmem_mb,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )


def _resident_mb() -> tuple[float, float]:
    """(private, shared-memory) resident MB of this process (RssAnon, RssShmem); zeros where
    /proc is unavailable."""
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    found[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found.get("RssAnon", 0.0), found.get("RssShmem", 0.0)


class ActorStats:
    """Latest report of every scoring actor process (rows, peak memory, node), for progress
    lines and the summary, and the scoring actors' handles, for a failed run to stop them.
    A Ray actor with no CPU: created with ray.remote(num_cpus=0)."""

    def __init__(self):
        self.reports: dict[str, dict] = {}
        self.scorers: dict[str, ActorHandle] = {}  # actor id -> handle (a restarted actor joins again)

    def join(self, actor_id: str, handle: ActorHandle) -> None:
        self.scorers[actor_id] = handle

    def stop_scorers(self) -> None:
        """Kill every scoring actor that joined. When a run fails, Ray Data
        only drops its references to the actors, and the error's traceback keeps one alive
        through Ray Data's frames for as long as the caller holds the error (until Python's
        cycle collector runs): the actors would keep their CPUs from the driver's next job."""
        import ray

        for handle in self.scorers.values():
            ray.kill(handle)
        self.scorers = {}

    def report(self, info: dict) -> None:
        self.reports[f"{info['actor']}:{info['pid']}"] = info

    def get(self) -> list[dict]:
        return list(self.reports.values())
