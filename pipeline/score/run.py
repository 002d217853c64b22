"""Offline batch scoring with an exported model, exactly once per input row.

    plan    (driver, before any work) resolve the model and check it without loading it
            (weights' names and shapes), list the input files and check their footers against
            the model's own feature spec (columns, types; labels not needed) and the key
            columns, and read the output's manifest: what is already done, and whether the
            output belongs to another model version. Every problem fails here.
    score   Ray Data reads the pending files (streaming Parquet read tasks, on any node) and
            `map_batches` feeds a fixed pool of Scorer actors; each loads the export once and
            runs the training collate (same id hashing, same dense normalisation, from the
            export's spec) and the forward pass. Actors return only the key columns, the
            probabilities, and the input file and row hash each row came from.
    commit  (driver) rows are routed to one writer per input file. A file's output is written
            under a temporary name and renamed once every row of the input file has arrived:
            counted against the input's Parquet footer, with duplicates (a retried task
            delivering a batch twice) detected and removed by Ray's per-row hash of
            (file, row position). Then the manifest records the file.

Output layout mirrors the input: <out>/<path relative to the input root>, so
dt=YYYY-MM-DD/part-00001.parquet in gives dt=YYYY-MM-DD/part-00001.parquet out (day
partitioning kept, one output file per input file), with the key columns, p_<task> per task,
p_<product> (p_ctcvr = p_ctr * p_cvr) and model_version.

Exactly once, whatever is killed and when:
  - an output file appears under its final name only complete (os.replace is atomic), and
    the same input file always maps to the same output name;
  - <out>/_manifest.json (rewritten atomically) lists completed files; a re-run skips them.
    A file renamed but not yet listed is simply rescored and atomically replaced;
  - temporary files of a killed run are deleted by the next run; a lock file keeps two
    jobs on one host from writing the same output;
  - the outputs of input files gone from a folder scored now (a day written again upstream
    under other names) are deleted before the run, or that day's rows would be scored twice;
  - an output holding results of another model version (or Parquet files and no manifest)
    stops the job before any work, unless overwrite=True.
Why the driver writes: a file's rows reach several actors in batches that also mix files, so
no actor ever holds a whole file; only the single consumer of the stream sees every row of a
file and can commit it whole. What reaches it is small (keys and probabilities, no features).
Only the driver needs the output directory; the input files and the export must be readable
from every node (shared storage), as for training.

Modules: pipeline/score/plan.py plans, this one runs; pipeline/score/actor.py is the actor,
pipeline/score/output.py the output directory (per-file commit, manifest, lock).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.common.logs import duration, plural
from pipeline.data.validation import DataValidationError, describe_filled
from pipeline.score.actor import FILE_COLUMN, ROW_HASH, ActorStats, Scorer
from pipeline.score.config import ScoreConfig
from pipeline.score.errors import ScoringError
from pipeline.score.output import MANIFEST, FileOutput, lock_output, log_dir, remove_temp_files, write_json_atomic
from pipeline.score.plan import VERSION_COLUMN, InputFile, ScorePlan, output_columns, plan_scoring


# -- the run ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class ScoreSummary:
    model_version: str
    output_dir: str
    files_total: int
    files_scored: int
    files_skipped: int  # complete from an earlier run
    rows_scored: int
    seconds: float
    first_output_s: float | None  # start-up: actors created, model loaded, first batch back
    steady_rows_per_s: float | None  # after the first batch came back (start-up excluded)
    duplicates_dropped: int
    actors: list[dict]

    @property
    def rows_per_s(self) -> float:
        return self.rows_scored / self.seconds if self.seconds > 0 else 0.0

    @property
    def missing_filled(self) -> dict[str, int]:
        """feature -> rows whose missing values its `missing: default` policy filled (summed over
        actors; a batch retried after a failure counts again)."""
        total: dict[str, int] = {}
        for a in self.actors:
            for name, rows in a.get("missing", {}).items():
                total[name] = total.get(name, 0) + rows
        return total

    def format(self) -> str:
        peaks = [a["peak_rss_mb"] for a in self.actors]
        anon = [a["peak_anon_mb"] for a in self.actors]
        nodes = len({a["node"] for a in self.actors})
        allocators = "/".join(sorted({a["allocator"] for a in self.actors}))
        mem = (
            f", peak RSS per actor {min(peaks):.0f}-{max(peaks):.0f} MB (private {min(anon):.0f}-{max(anon):.0f} MB, "
            f"{allocators} malloc)"
            if peaks
            else ""
        )
        steady = (
            f" ({self.steady_rows_per_s:,.0f} rows/s after the first batch at {self.first_output_s:.1f} s)"
            if self.steady_rows_per_s
            else ""
        )
        dup = f"; {self.duplicates_dropped} rows delivered twice dropped" if self.duplicates_dropped else ""
        filled = self.missing_filled
        if filled:
            dup += f"; missing values filled: {describe_filled(filled)}"
        return (
            f"scored {plural(self.rows_scored, 'row')} in {plural(self.files_scored, 'file')} "
            f"({self.files_skipped} of {self.files_total} already complete) in {self.seconds:.1f} s: "
            f"{self.rows_per_s:,.0f} rows/s{steady}; {plural(len(self.actors), 'actor process', 'actor processes')} on "
            f"{plural(nodes, 'node')}"
            f"{mem}{dup}; model {self.model_version}; output {self.output_dir}"
        )


class _Commits:
    """The driver's side of a run: one FileOutput per input file in flight, the manifest, and
    the counters of the progress lines and the summary."""

    def __init__(self, plan: ScorePlan, cfg: ScoreConfig, out: Path, files: list[InputFile]):
        self.plan, self.cfg, self.out, self.files = plan, cfg, out, files
        self.manifest = plan.manifest
        self.run_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.writers: dict[int, FileOutput] = {}
        self.rows = self.duplicates = self.files_done = 0
        self.last_save = 0.0

    def save_manifest(self, force: bool = False) -> None:
        # Throttled: a file renamed but not yet listed is only rescored by a re-run, never lost.
        now = time.perf_counter()
        if force or now - self.last_save >= self.cfg.manifest_every_s:
            self.manifest["complete"] = all(f.rel in self.manifest["files"] for f in self.plan.files)
            write_json_atomic(self.out / MANIFEST, self.manifest)
            self.last_save = now

    def _record(self, f: InputFile) -> None:
        self.manifest["files"][f.rel] = {
            "input": f.path,
            "input_rows": f.rows,
            "input_size": f.size,
            "output": f.rel,
            "rows": f.rows,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.files_done += 1
        self.save_manifest()

    def write_empty(self, f: InputFile) -> None:
        """An input file without rows still gets its (empty) output: one output per input."""
        w = FileOutput(self.out / f.rel, self.plan.schema, 0, self.run_id, self.cfg.write_rows)
        w.commit()
        self._record(f)

    def add(self, block: pa.Table) -> None:
        """Route a block of scores to the writers of its files; commit the files it completes."""
        columns = self.plan.keys + output_columns(self.plan.spec, self.cfg)
        for i, part in _split_by_file(block):
            f = self.files[i]
            w = self.writers.get(i)
            if w is None:
                w = self.writers[i] = FileOutput(
                    self.out / f.rel, self.plan.schema, f.rows, self.run_id, self.cfg.write_rows
                )
            hashes = part.column(ROW_HASH).to_numpy()
            part = part.select(columns).append_column(
                VERSION_COLUMN, pa.repeat(pa.scalar(self.plan.version), part.num_rows)
            )
            w.add(part, hashes)
            self.rows += part.num_rows
            if w.complete():
                self.duplicates += w.commit()
                del self.writers[i]
                self._record(f)

    def check_all_committed(self) -> None:
        if self.writers:
            short = ", ".join(
                f"{self.files[i].rel} ({w.received} of {w.expected} rows received)"
                for i, w in list(self.writers.items())[:3]
            )
            raise ScoringError(
                f"{len(self.writers)} files incomplete when the input ended: {short}; rerun the job to finish them"
            )

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        self.writers.clear()
        self.save_manifest(force=True)


def run_scoring(
    plan: ScorePlan,
    cfg: ScoreConfig,
    *,
    on_progress: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> ScoreSummary:
    """Score plan.pending (Ray must be initialised when it has rows: pipeline/ray_utils.connect)
    and commit file by file. Raises if the job fails; what was committed stays committed."""
    out = Path(plan.output_dir)
    with lock_output(out):
        removed = remove_temp_files(out)
        if removed:
            log(f"[score] removed {removed} temporary files of an interrupted run")
        for rel in plan.stale_outputs:
            (out / rel).unlink(missing_ok=True)
        if plan.stale_outputs:
            log(
                f"[score] removed {plural(len(plan.stale_outputs), 'output')} whose input files are gone from the "
                f"folders scored now (rewritten upstream): {', '.join(plan.stale_outputs[:3])}"
                + (", ..." if len(plan.stale_outputs) > 3 else "")
            )
        return _run(plan, cfg, out, on_progress, log)


def _run(plan: ScorePlan, cfg: ScoreConfig, out: Path, on_progress, log) -> ScoreSummary:
    start = time.perf_counter()
    todo = [f for f in plan.pending if f.rows > 0]
    commits = _Commits(plan, cfg, out, todo)
    commits.save_manifest(force=True)  # the model version is on disk before any output file is
    log(
        f"[score] model {plan.version} ({plan.model_dir}); {len(plan.pending)} of {len(plan.files)} files "
        f"({plan.rows_pending:,} rows) to score into {out}"
    )
    for f in plan.pending:
        if f.rows == 0:
            commits.write_empty(f)

    first_output: float | None = None  # seconds until the first scores came back
    first_rows = 0  # rows in that first block
    actors: list[dict] = []
    if todo:
        import ray

        # Any: Ray's typing of remote classes does not follow ray.remote(**options)(cls).remote().
        stats: Any = ray.remote(num_cpus=0)(ActorStats).remote()
        ctx = ray.data.DataContext.get_current()
        saved = {k: getattr(ctx, k) for k in ("wait_for_min_actors_s", "raise_original_map_exception")}
        ctx.wait_for_min_actors_s = cfg.actor_start_timeout_s  # type: ignore[assignment]  # Ray says int; it takes seconds
        ctx.raise_original_map_exception = True  # a DataValidationError from the collate stays one
        try:
            last_progress = time.perf_counter()
            for block in _scores(plan, cfg, todo, stats).iter_batches(batch_size=None, batch_format="pyarrow"):
                if first_output is None:
                    first_output, first_rows = time.perf_counter() - start, block.num_rows
                commits.add(block)
                if time.perf_counter() - last_progress >= cfg.progress_every_s:
                    last_progress = time.perf_counter()
                    _progress(start, commits, len(plan.pending), plan.rows_pending, stats, on_progress, log)
            commits.check_all_committed()
            actors = ray.get(stats.get.remote())
            _warn_if_not_jemalloc(cfg, actors, log)
        except BaseException as exc:
            commits.abort()
            try:  # at once, not when the caller drops the error (ActorStats.stop_scorers)
                ray.get(stats.stop_scorers.remote(), timeout=60)
            except Exception as stop_error:  # the run's own error is the one to raise
                log(f"[score] could not stop the scoring actors: {stop_error!r}")
            cause = _user_error(exc)
            if cause is not None and cause is not exc:
                # E.g. a NaN found by an actor's collate: the same clear error (file, column,
                # rows) the plan raises, rather than Ray's wrapped traceback.
                raise cause from None
            raise
        finally:
            for key, value in saved.items():
                setattr(ctx, key, value)
            ray.kill(stats)  # it would live as long as the driver (a process per run)

    seconds = time.perf_counter() - start
    after_first = seconds - first_output if first_output is not None else 0.0
    summary = ScoreSummary(
        model_version=plan.version,
        output_dir=str(out),
        files_total=len(plan.files),
        files_scored=len(plan.pending),
        files_skipped=len(plan.files) - len(plan.pending),
        rows_scored=commits.rows - commits.duplicates,
        seconds=seconds,
        first_output_s=first_output,
        steady_rows_per_s=(commits.rows - first_rows) / after_first if after_first > 0 else None,
        duplicates_dropped=commits.duplicates,
        actors=actors,
    )
    commits.manifest["last_run"] = {
        **dataclasses.asdict(summary),
        "rows_per_s": summary.rows_per_s,
        "missing_filled": summary.missing_filled,
    }
    commits.save_manifest(force=True)
    log(f"[score] {summary.format()}")
    return summary


def _scores(plan: ScorePlan, cfg: ScoreConfig, todo: list[InputFile], stats):
    """The Ray Data pipeline: streaming Parquet reads of `todo` -> a fixed pool of Scorer actors."""
    import ray

    from pipeline.data.files import dictionary_columns, read_parquet_files
    from pipeline.score.allocator import jemalloc_env

    columns = list(dict.fromkeys(plan.keys + plan.spec.input_columns()))
    # String ids decode as dictionaries, except key columns: they are written out as they came.
    as_dictionary = dictionary_columns(plan.spec, keep_plain=tuple(plan.keys))
    # include_paths/include_row_hash: which file and which row of it every score belongs to.
    ds = read_parquet_files([f.path for f in todo], columns, as_dictionary, include_paths=True, include_row_hash=True)
    env = jemalloc_env() if cfg.actor_allocator == "jemalloc" else {}
    return ds.map_batches(
        Scorer,
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor or None,
        resources=cfg.actor_resources or None,
        runtime_env={"env_vars": env} if env else None,  # merged into the job's own runtime_env
        fn_constructor_kwargs=dict(
            model_dir=plan.model_dir,
            model_url=plan.model_url,
            version=plan.version,
            keys=plan.keys,
            products=cfg.products,
            file_index={f.path: i for i, f in enumerate(todo)},
            torch_threads=cfg.torch_threads or max(1, int(cfg.cpus_per_actor)),
            use_gpu=cfg.gpus_per_actor > 0,
            batch_delay_s=cfg.debug_batch_delay_s,
            stats=stats,
            log_dir=str(log_dir(plan.output_dir)),
            verbose=cfg.verbose,
        ),
    )


def _warn_if_not_jemalloc(cfg: ScoreConfig, actors: list[dict], log) -> None:
    system = [a for a in actors if a["allocator"] != "jemalloc"]
    if cfg.actor_allocator == "jemalloc" and system:
        log(
            f"[score] warning: {len(system)} of {len(actors)} scoring actors ran without jemalloc (Ray installed "
            f"without ray/core/libjemalloc.so, or elsewhere on their node than on this one): their peak "
            f"memory can creep up with the input (pipeline/score/allocator.py)"
        )


def _user_error(exc: BaseException) -> BaseException | None:
    """The DataValidationError or ScoringError inside Ray's exception chain, if any."""
    from ray.exceptions import RayError  # RayTaskError(X) subclasses X: skip the wrappers

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (DataValidationError, ScoringError)) and not isinstance(e, RayError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _split_by_file(block: pa.Table):
    """(file index, rows of that file) for each file present in a block of scores."""
    ids = block.column(FILE_COLUMN).to_numpy()
    if ids.size and (ids == ids[0]).all():  # the common case: one file per block
        yield int(ids[0]), block
        return
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bounds = np.flatnonzero(np.diff(sorted_ids)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(ids)], strict=True):
        yield int(sorted_ids[lo]), block.take(pa.array(order[lo:hi]))


def progress_line(info: dict) -> str:
    """The console's progress line for `_progress`'s info: files and rows done of those planned,
    rows/s, the ETA they imply, the time elapsed, and the actors' peak memory."""
    eta = f", ETA {duration(info['eta_s'])}" if info["eta_s"] is not None else ""
    peak = max((a["peak_rss_mb"] for a in info["actors"]), default=0.0)
    return (
        f"[score] {info['files_done']}/{info['files']} files, {info['rows']:,}/{info['rows_total']:,} rows, "
        f"{info['rows_per_s']:,.0f} rows/s{eta}, {duration(info['elapsed_s'])} elapsed, "
        f"{len(info['actors'])} actors (peak RSS {peak:.0f} MB)"
    )


def _progress(start: float, commits: _Commits, files: int, total_rows: int, stats, on_progress, log) -> None:
    import ray

    elapsed = time.perf_counter() - start
    try:
        actors = ray.get(stats.get.remote(), timeout=5)
    except ray.exceptions.GetTimeoutError:
        actors = []
    info = {
        "elapsed_s": elapsed,
        "files_done": commits.files_done,
        "files": files,
        "rows": commits.rows,
        "rows_total": total_rows,
        "rows_per_s": commits.rows / elapsed if elapsed else 0.0,
        "actors": actors,
    }
    # The rows left are known from the inputs' Parquet footers (the plan).
    info["eta_s"] = (total_rows - commits.rows) / info["rows_per_s"] if info["rows_per_s"] else None
    log(progress_line(info))
    if on_progress is not None:
        on_progress(info)


def score(
    model: str,
    input_root: str,
    output_dir: str,
    cfg: ScoreConfig,
    *,
    days: str | None = None,
    overwrite: bool = False,
    address: str | None = None,
    on_progress: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> ScoreSummary:
    """The whole job: plan (all checks, before Ray starts), connect to Ray, score, commit."""
    from pipeline.common.cluster_fit import Request, check_cluster_fits
    from pipeline.common.ray_cluster import connect

    plan = plan_scoring(model, input_root, output_dir, cfg, days=days, overwrite=overwrite)
    if plan.rows_pending:
        connect(address, cfg.local_num_cpus)
        actors = Request(
            "actors",
            cfg.num_actors,
            cfg.cpus_per_actor,
            cfg.gpus_per_actor,
            count_key="num_actors",
            cpus_key="cpus_per_actor",
            gpus_key="gpus_per_actor",
            fewer_gpus="a lower gpus_per_actor",
            local_cpus_key="local_num_cpus",
        )
        check_cluster_fits(actors, address, log=lambda line: log(f"[score] {line}"))
    return run_scoring(plan, cfg, on_progress=on_progress, log=log)
