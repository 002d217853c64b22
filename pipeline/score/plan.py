"""Planning a scoring job (pipeline/score/run.py runs it): on the driver, before any work,
resolve the model and check it without loading it (weights' names and shapes), list the input
files and check their footers against the model's own feature spec (columns, types; labels not
needed) and the key columns, and read the output's manifest: what is already done, and whether
the output belongs to another model version. Every problem fails here, naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.config import differences
from pipeline.data.feature_spec import FeatureSpec
from pipeline.data.files import list_day_files, parse_days
from pipeline.data.validation import DataValidationError, validate_files
from pipeline.score.config import ScoreConfig
from pipeline.score.errors import ScoringError
from pipeline.score.output import MANIFEST, lock_output, output_parquet_files, read_manifest, remove_result
from pipeline.train.export import META, ExportError, check_export, read_export_meta

MANIFEST_FORMAT = 1
VERSION_COLUMN = "model_version"


# -- model references ------------------------------------------------------------------------------
def resolve_model(ref: str) -> tuple[str, str | None]:
    """(local export directory, its URL or None) for `ref`: an export directory itself, or a
    registry reference ('<registry root>@production', '<registry root>@v0003'; the root may be
    a URL, whose export is downloaded once per machine). Raises ExportError naming it."""
    from pipeline.registry.store import fetched_copy, is_url
    from pipeline.registry.versions import resolve_model_ref

    path = ref if os.path.isdir(ref) else resolve_model_ref(ref)
    if path is None:
        raise ExportError(
            f"model '{ref}': neither an export directory nor a registry reference "
            f"('<registry root>@production' or '<registry root>@vNNNN')"
        )
    url = path if is_url(path) else None
    if url:
        path = fetched_copy(url, "export")
    try:
        read_export_meta(path)  # not an export: "not an exported model (expected ...)"
    except ExportError as err:
        hint = _export_meant(Path(path), ref)
        raise ExportError(f"{err}; {hint}" if hint else str(err)) from None
    return os.path.abspath(path), url


def _export_meant(path: Path, ref: str) -> str | None:
    """What `--model` more likely meant, where `path` is one of the directories people confuse
    with an export: a training run's, a checkpoint, a registry."""
    from pipeline.registry.versions import POINTER

    if (path / "export" / META).is_file():
        return f"its export is --model {path / 'export'}"
    if (path / POINTER).is_file() and (path / "versions").is_dir():
        return f"it is a model registry: --model {ref}@production (or @vNNNN)"
    if (path / ".metadata").is_file():  # torch.distributed.checkpoint's index of a checkpoint
        run_export = path.parent / "export"
        if (run_export / META).is_file():
            return f"it is a training checkpoint: its run's export is --model {run_export}"
        return "it is a training checkpoint: export it first (pipeline.train.export.export_model)"
    return None


# -- input files -----------------------------------------------------------------------------------
def _parse_days(days: str) -> tuple[str, str]:
    try:
        return parse_days(days)
    except ValueError as e:
        raise ScoringError(str(e)) from None


def list_input_files(root: str, days: str | None = None, exclude: str | None = None) -> list[str]:
    """Absolute paths of the Parquet files to score, sorted. `days` ("2026-01-01" or
    "2026-01-01..2026-01-03") restricts to those dt=... partitions; otherwise every .parquet
    under root is taken (names starting with '.' or '_' skipped, and the `exclude` directory,
    e.g. an output directory placed inside the input root)."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ScoringError(f"input '{root}': not a directory")
    if days:
        start, end = _parse_days(days)
        return [os.path.abspath(f) for f in list_day_files(root, start, end)]
    exclude = os.path.abspath(exclude) if exclude else None
    files: list[str] = []
    for d, subdirs, names in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if s[0] not in "._" and os.path.join(d, s) != exclude)
        files.extend(os.path.join(d, n) for n in sorted(names) if n.endswith(".parquet") and n[0] not in "._")
    if not files:
        raise DataValidationError("no Parquet files", file=root)
    return files


@dataclasses.dataclass
class InputFile:
    path: str  # absolute
    rel: str  # relative to the input root; also the output file's path under the output dir
    rows: int
    size: int


@dataclasses.dataclass
class ScorePlan:
    model_dir: str  # on the driver's machine
    version: str
    spec: FeatureSpec
    model_meta: dict
    input_root: str
    output_dir: str
    keys: list[str]
    schema: pa.Schema  # of every output file
    files: list[InputFile]  # all input files of this run
    pending: list[InputFile]  # still to score
    manifest: dict  # as it will be written; `files` holds completed entries
    model_url: str | None = None  # where model_dir was downloaded from: actors on other nodes fetch it too
    # Outputs (relative paths) of input files gone from a folder this run scores: that folder
    # was rewritten upstream, and their rows would sit beside the new files' scores.
    stale_outputs: list[str] = dataclasses.field(default_factory=list)

    @property
    def rows_pending(self) -> int:
        return sum(f.rows for f in self.pending)


def _check_keys(files: list[str], keys: list[str]) -> tuple[list[InputFile], dict[str, pa.DataType]]:
    types: dict[str, tuple[pa.DataType, str]] = {}
    out = []
    for path in files:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        for k in keys:
            i = schema.get_field_index(k)
            if i < 0:
                names = schema.names
                has = ", ".join(names[:8]) + (f", ... ({len(names)} columns)" if len(names) > 8 else "")
                raise DataValidationError(
                    f"missing key column: --keys COL,... (key_columns) names the input columns copied "
                    f"beside each row's scores; this file has {has}",
                    file=path,
                    column=k,
                )
            t = schema.field(i).type
            if k not in types:
                types[k] = (t, path)
            elif t != types[k][0]:
                raise DataValidationError(
                    f"key column type {t} differs from {types[k][0]} in {types[k][1]}", file=path, column=k
                )
        out.append(InputFile(path, "", pf.metadata.num_rows, os.path.getsize(path)))
    return out, {k: t for k, (t, _) in types.items()}


def output_columns(spec: FeatureSpec, cfg: ScoreConfig) -> list[str]:
    return [f"p_{t}" for t in spec.task_names] + [f"p_{name}" for name in cfg.products]


def plan_scoring(
    model_ref: str,
    input_root: str,
    output_dir: str,
    cfg: ScoreConfig,
    *,
    days: str | None = None,
    overwrite: bool = False,
) -> ScorePlan:
    """Every check that can fail before work starts; the list of files still to score.
    Reads only the export's metadata and the inputs' footers. Removes nothing unless
    overwrite=True and the output belongs to another model or input."""
    model_dir, model_url = resolve_model(model_ref)
    spec, meta = check_export(model_dir)
    version = meta["version"]
    tasks = set(spec.task_names)
    for name, parts in cfg.products.items():
        unknown = [t for t in parts if t not in tasks]
        if unknown:
            raise ScoringError(
                f"products.{name} uses tasks {unknown} that model {model_dir} does not have "
                f"(its tasks: {spec.task_names}); override `products`: 'products={{}}' for none, or with "
                f"this model's tasks, e.g. 'products={{{name}: [{', '.join(spec.task_names)}]}}'"
            )
    produced = output_columns(spec, cfg) + [VERSION_COLUMN]
    clash = [k for k in cfg.key_columns if k in produced]
    if clash:
        raise ScoringError(f"key columns {clash} collide with output columns {produced}")

    out = Path(output_dir).resolve()
    paths = list_input_files(input_root, days, exclude=str(out))
    # Footer checks against the model's spec: missing feature columns, wrong types, nulls and
    # negative ids (statistics), non-Parquet files. Labels are not required.
    validate_files(paths, spec, labels=False)
    files, key_types = _check_keys(paths, cfg.key_columns)
    root = os.path.abspath(input_root)
    for f in files:
        f.rel = os.path.relpath(f.path, root)
    schema = pa.schema(
        [pa.field(k, key_types[k]) for k in cfg.key_columns]
        + [pa.field(c, pa.float32()) for c in output_columns(spec, cfg)]
        + [pa.field(VERSION_COLUMN, pa.string())],
        metadata={"model_version": version, "model_dir": model_dir},
    )

    identity = {
        "model_version": version,
        "input_root": root,
        "key_columns": list(cfg.key_columns),
        "columns": schema.names,
    }
    manifest = read_manifest(out) if out.exists() else None
    if manifest is None and out.exists():
        stray = output_parquet_files(out)
        if stray:
            raise ScoringError(
                f"output {out} holds Parquet files ({stray[0]}, ...) but no {MANIFEST}: not "
                f"written by this job; choose an empty or new output directory"
            )
    if manifest is not None:
        differs = differences({k: manifest.get(k) for k in identity}, identity)
        if differs:
            held = len(manifest.get("files", {})) or len(output_parquet_files(out))
            what = "; ".join(differs)
            if held and not overwrite:
                state = "a complete" if manifest.get("complete") else "a partial"
                raise ScoringError(
                    f"output {out} holds {state} result ({held} files) of another run ({what}); "
                    f"refusing to mix them. Use a new output directory, or overwrite=True "
                    f"(--overwrite) to delete that result first"
                )
            if held:
                with lock_output(out):  # not while another job is writing there
                    remove_result(out, manifest)
            manifest = None

    done = dict(manifest["files"]) if manifest else {}
    scored_here, present = {os.path.dirname(f.rel) for f in files}, {f.rel for f in files}
    gone = [rel for rel in done if rel not in present and os.path.dirname(rel) in scored_here]
    stale_outputs = sorted(done.pop(rel)["output"] for rel in gone if not os.path.exists(os.path.join(root, rel)))
    pending = []
    for f in files:
        entry = done.get(f.rel)
        if (
            entry
            and entry.get("input_rows") == f.rows
            and entry.get("input_size") == f.size
            and (out / entry["output"]).is_file()
        ):
            continue
        done.pop(f.rel, None)  # changed input or lost output: rescored
        pending.append(f)
    manifest = {
        "format": MANIFEST_FORMAT,
        **identity,
        "model_dir": model_dir,
        "model": {k: meta.get(k) for k in ("step", "created", "checkpoint") if k in meta},
        "files": done,
        "complete": False,
    }
    return ScorePlan(
        model_dir=model_dir,
        version=version,
        spec=spec,
        model_meta=meta,
        input_root=root,
        output_dir=str(out),
        keys=list(cfg.key_columns),
        schema=schema,
        files=files,
        pending=pending,
        manifest=manifest,
        model_url=model_url,
        stale_outputs=stale_outputs,
    )
