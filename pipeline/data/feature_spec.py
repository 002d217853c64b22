"""Feature specification: which Parquet columns feed which embedding tables, dense inputs and tasks.

A spec is a YAML file (see configs/) validated on load by pydantic; every error names the
offending key, e.g. `sparse[2].table: unknown table 'itme'`. The same spec object drives the
generator, the converters' configs, the validator, the collate and the model's embedding
tables, so training and scoring cannot disagree on the id mapping or dense normalisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.common.config import unknown_key
from pipeline.common.errors import BadInputError
from pipeline.data.id_mapping import MISSING_RAW_ID


class FeatureSpecError(BadInputError):
    """A feature spec file is malformed; the message names the file and the bad key."""


class _Strict(BaseModel):
    # extra="forbid": a misspelt key (`hash_bucket:`) must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvictionSpec(_Strict):
    """A managed table's eviction: `lfu` keeps the ids seen most often, `lru` those seen most
    recently (better when yesterday's popular ids fade); it runs every `interval_steps` steps."""

    policy: Literal["lfu", "lru"] = "lfu"
    interval_steps: int = Field(default=100, gt=0)


class TableSpec(_Strict):
    """One embedding table. Exactly one of `vocab_size` / `hash_buckets` sets its row count.

    vocab_size: integer ids in [0, vocab_size) are used as row numbers unchanged; larger ids and
        all strings are hashed into the range (pipeline/data/id_mapping.py).
    hash_buckets: every id (int or string) is hashed into [0, hash_buckets).
    collision: `hash` (the default) maps ids to rows as above, so ids share rows once there are
        more ids than rows; `managed` (with hash_buckets as the row count) gives each id a row of
        its own while there is one, admitting new ids and evicting cold ones as training sees
        them, with TorchRec's managed-collision modules (ple_model/managed_ids.py). The table's
        last row takes the ids that hold no row.
    eviction: the managed table's eviction policy (default: lfu every 100 steps).
    """

    name: str = Field(min_length=1)
    vocab_size: int | None = Field(default=None, gt=0)
    hash_buckets: int | None = Field(default=None, gt=0)
    dim: int = Field(gt=0)
    pooling: Literal["sum", "mean"] = "sum"
    collision: Literal["hash", "managed"] = "hash"
    eviction: EvictionSpec | None = None

    @model_validator(mode="after")
    def _one_size(self) -> TableSpec:
        if (self.vocab_size is None) == (self.hash_buckets is None):
            raise ValueError("set exactly one of vocab_size or hash_buckets")
        if self.managed and self.hash_buckets is None:
            raise ValueError("collision 'managed' needs hash_buckets (the rows ids are managed into), not vocab_size")
        if self.managed and self.hash_buckets is not None and self.hash_buckets < 2:
            raise ValueError("collision 'managed' needs hash_buckets >= 2 (the last row takes unmapped ids)")
        if self.eviction is not None and not self.managed:
            raise ValueError("eviction applies to collision: managed only")
        return self

    @property
    def managed(self) -> bool:
        return self.collision == "managed"

    @property
    def eviction_policy(self) -> EvictionSpec:
        return self.eviction or EvictionSpec()

    @property
    def num_embeddings(self) -> int:
        size = self.vocab_size if self.vocab_size is not None else self.hash_buckets
        assert size is not None  # _one_size: exactly one is set
        return size

    @property
    def hash_all(self) -> bool:
        return self.hash_buckets is not None


Missing = Literal["error", "default"]


class SparseFeature(_Strict):
    """A categorical input: one id per row (int64 / string) or a list of ids.

    Ids may be any int64, negative ones included (64-bit hashed ids are negative half the time):
    they hash into the table's range like ids beyond it (pipeline/data/id_mapping.py).
    missing: `error` rejects a null id; `default` maps nulls, empty lists and nulls inside lists
        to a row of the table reserved for them (its last row), and the collate counts them.
    """

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    table: str = Field(min_length=1)
    type: Literal["int64", "string", "list<int64>", "list<string>"] = "int64"
    missing: Missing = "error"

    @property
    def multi_valued(self) -> bool:
        return self.type.startswith("list<")

    @property
    def value_type(self) -> str:
        """The type of one id: "int64" or "string"."""
        return self.type.removeprefix("list<").removesuffix(">")


class DenseFeature(_Strict):
    """A numeric input. `transform` is applied by the collate, so scoring uses the same mapping.

    none: x; log1p: log(1 + max(x, 0)) for heavy-tailed non-negative values such as prices;
    standard: (x - mean) / std with mean/std stored here (`python -m jobs.inspect` fits them).
    bucketize: the index of x among sorted `boundaries` (x < b[0] is bucket 1, b[i-1] <= x < b[i]
        is bucket i + 1, x >= b[-1] the last) looked up in an embedding table of its own, of
        `dim` columns, inside the same EmbeddingBagCollection (so sharded like any table).
        Row 0 is the missing bucket.
    piecewise_linear: one dense column per bin [b[i], b[i+1]): 0 below the bin, 1 above it,
        the position inside it in between (Gorishniy et al., NeurIPS 2022).
    keep_raw (bucketize, piecewise_linear): also feed x itself, standardised when mean/std are set.
    missing: `error` rejects null and NaN; `default` fills them with `fill` (default: `mean` when
        set, else 0) and, for bucketize, looks up the missing bucket. The collate counts them.
    """

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    transform: Literal["none", "log1p", "standard", "bucketize", "piecewise_linear"] = "none"
    mean: float | None = None
    std: float | None = Field(default=None, gt=0)
    boundaries: list[float] | None = None
    dim: int | None = Field(default=None, gt=0, description="bucketize: the bucket embedding's width")
    keep_raw: bool = False
    missing: Missing = "error"
    fill: float | None = None

    @model_validator(mode="after")
    def _settings_fit_transform(self) -> DenseFeature:
        t = self.transform
        if (self.mean is None) != (self.std is None):
            raise ValueError("set both mean and std, or neither")
        if t == "standard" and self.mean is None:
            raise ValueError("transform 'standard' needs mean and std")
        if t in ("none", "log1p") and self.mean is not None:
            raise ValueError(f"mean/std are not used by transform '{t}'")
        binned = t in ("bucketize", "piecewise_linear")
        if binned != (self.boundaries is not None):
            raise ValueError(
                f"transform '{t}' needs boundaries" if binned else f"boundaries are not used by transform '{t}'"
            )
        if self.boundaries is not None:
            _check_boundaries(self.boundaries, 2 if t == "piecewise_linear" else 1)
        if (t == "bucketize") != (self.dim is not None):
            raise ValueError("transform 'bucketize' needs dim" if t == "bucketize" else "dim is used by bucketize only")
        if self.keep_raw and not binned:
            raise ValueError(f"keep_raw applies to bucketize and piecewise_linear, not '{t}'")
        if self.fill is not None and self.missing != "default":
            raise ValueError("fill is used by missing: default only")
        if self.fill is not None and t == "bucketize" and not self.keep_raw:
            raise ValueError("a bucketized value's missing rows use the missing bucket, not fill")
        return self

    @property
    def embedded(self) -> bool:
        """Looked up in a bucket table (a key of the KJT) rather than fed as a dense column."""
        return self.transform == "bucketize"

    @property
    def width(self) -> int:
        """Dense columns this feature feeds the model."""
        if self.transform == "bucketize":
            return int(self.keep_raw)
        if self.transform == "piecewise_linear":
            assert self.boundaries is not None  # the validator requires them
            return len(self.boundaries) - 1 + int(self.keep_raw)
        return 1

    @property
    def num_buckets(self) -> int:
        """Rows of the bucket table: the missing bucket, then len(boundaries) + 1 buckets."""
        assert self.boundaries is not None
        return len(self.boundaries) + 2

    @property
    def table_name(self) -> str:
        return f"{self.name}_buckets"

    @property
    def fill_value(self) -> float:
        if self.fill is not None:
            return self.fill
        return self.mean if self.mean is not None else 0.0


def _check_boundaries(b: list[float], at_least: int) -> None:
    if len(b) < at_least:
        raise ValueError(f"needs at least {at_least} boundaries, got {len(b)}")
    if not all(math.isfinite(x) for x in b):
        raise ValueError("boundaries must be finite numbers")
    out_of_order = sum(1 for x, y in zip(b[:-1], b[1:], strict=True) if not x < y)
    if out_of_order:
        raise ValueError(f"boundaries must be strictly increasing ({out_of_order} of {len(b) - 1} pairs are not)")


class TaskSpec(_Strict):
    """A prediction task. sample_space 'all' trains on every impression; naming another label
    (e.g. 'click') trains only on rows where that label is 1, as CVR is observed only on clicks."""

    name: str = Field(min_length=1)
    label: str = Field(min_length=1)
    sample_space: str = "all"


class TableConfig(NamedTuple):
    """Plain data for one torchrec EmbeddingBagConfig (no torchrec import needed)."""

    name: str
    num_embeddings: int
    dim: int
    feature_names: list[str]
    pooling: str  # "sum" | "mean"


class FeatureSpec(_Strict):
    name: str = Field(min_length=1)
    tables: list[TableSpec] = Field(min_length=1)
    sparse: list[SparseFeature] = Field(min_length=1)
    dense: list[DenseFeature] = Field(default_factory=list)
    labels: list[str] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    group_by: str | None = Field(
        default=None, min_length=1, description="a column (e.g. user_id) whose groups validation's GAUC is over"
    )

    @model_validator(mode="after")
    def _cross_references(self) -> FeatureSpec:
        _unique("tables", [t.name for t in self.tables])
        _unique("sparse", [f.name for f in self.sparse])
        _unique("dense", [f.name for f in self.dense])
        _unique("labels", self.labels)
        _unique("tasks", [t.name for t in self.tasks])
        tables = {t.name for t in self.tables}
        for i, f in enumerate(self.sparse):
            if f.table not in tables:
                raise ValueError(f"sparse[{i}].table: unknown table '{f.table}' (tables: {sorted(tables)})")
        used = {f.table for f in self.sparse}
        for i, t in enumerate(self.tables):
            if t.name not in used:
                raise ValueError(f"tables[{i}]: table '{t.name}' is used by no sparse feature")
        labels = set(self.labels)
        for i, task in enumerate(self.tasks):
            if task.label not in labels:
                raise ValueError(f"tasks[{i}].label: '{task.label}' is not in labels {self.labels}")
            if task.sample_space != "all":
                if task.sample_space not in labels:
                    raise ValueError(
                        f"tasks[{i}].sample_space: must be 'all' or a label in {self.labels}, got '{task.sample_space}'"
                    )
                if task.sample_space == task.label:
                    raise ValueError(f"tasks[{i}].sample_space: a task cannot be conditioned on its own label")
        # A label used as an input would leak the answer into the model.
        inputs = {f.column for f in self.sparse} | {f.column for f in self.dense}
        for i, label in enumerate(self.labels):
            if label in inputs:
                raise ValueError(f"labels[{i}]: label column '{label}' is also used as an input feature")
        if self.group_by in labels:
            raise ValueError(f"group_by: '{self.group_by}' is a label")
        # Sparse and bucketized names are the KJT's keys; bucket tables sit beside the tables.
        _unique("sparse + bucketized dense", self.feature_names)
        _unique("tables + bucket tables", [c.name for c in self.table_configs()])
        return self

    # -- derived views used by the reader, the collate and the trainer ---------------------
    def resized(self, rows: dict[str, int], dims: dict[str, int] | None = None) -> FeatureSpec:
        """This spec with each table in `rows` hashed into that many rows (hash_buckets) and
        each in `dims` that wide: the same features and data behind a model of another size
        (the benchmarks' and tests' big tables)."""
        dims = dims or {}
        unknown = sorted((set(rows) | set(dims)) - {t.name for t in self.tables})
        if unknown:
            raise FeatureSpecError(f"resized: unknown tables {unknown}")
        tables = []
        for t in self.tables:
            update: dict = {"dim": dims[t.name]} if t.name in dims else {}
            if t.name in rows:
                update.update(vocab_size=None, hash_buckets=rows[t.name])
            tables.append(TableSpec.model_validate({**t.model_dump(), **update}))
        return self.model_copy(update={"tables": tables})

    @property
    def table_by_name(self) -> dict[str, TableSpec]:
        return {t.name: t for t in self.tables}

    @property
    def feature_names(self) -> list[str]:
        """KJT keys, in order: the sparse features, then the bucketized dense ones."""
        return [f.name for f in self.sparse] + [d.name for d in self.bucketized]

    @property
    def bucketized(self) -> list[DenseFeature]:
        return [d for d in self.dense if d.embedded]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    def null_row(self, table: str) -> int | None:
        """The row reserved for missing ids of `table` (its last), or None when no feature of it
        has `missing: default`. A managed table has no reserved row: a missing id becomes one
        reserved raw id (id_mapping.MISSING_RAW_ID), which is admitted like any other id."""
        if any(f.table == table and f.missing == "default" for f in self.sparse):
            t = self.table_by_name[table]
            return MISSING_RAW_ID if t.managed else t.num_embeddings
        return None

    @property
    def managed_tables(self) -> list[TableSpec]:
        return [t for t in self.tables if t.managed]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def num_dense(self) -> int:
        """Width of the dense input the collate builds."""
        return sum(d.width for d in self.dense)

    def columns(self) -> list[str]:
        """Every Parquet column the collate reads with labels, without duplicates, in a stable order."""
        cols = self.input_columns() + list(self.labels) + ([self.group_by] if self.group_by else [])
        return list(dict.fromkeys(cols))

    def input_columns(self) -> list[str]:
        """The model's inputs only (no labels): what scoring needs from a file."""
        cols = [f.column for f in self.sparse] + [f.column for f in self.dense]
        return list(dict.fromkeys(cols))

    def table_configs(self) -> list[TableConfig]:
        """The tables, each with its reserved missing-id row where it has one, then one bucket
        table per bucketized dense feature."""
        tables = [
            TableConfig(
                name=t.name,
                num_embeddings=t.num_embeddings + (self.null_row(t.name) is not None and not t.managed),
                dim=t.dim,
                feature_names=[f.name for f in self.sparse if f.table == t.name],
                pooling=t.pooling,
            )
            for t in self.tables
        ]
        buckets = [TableConfig(d.table_name, d.num_buckets, d.dim or 0, [d.name], "sum") for d in self.bucketized]
        return tables + buckets

    def embedding_bag_configs(self) -> list:
        """torchrec EmbeddingBagConfigs for an EmbeddingBagCollection (torchrec imported lazily)."""
        from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType

        pooling = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}
        return [
            EmbeddingBagConfig(
                name=c.name,
                num_embeddings=c.num_embeddings,
                embedding_dim=c.dim,
                feature_names=c.feature_names,
                pooling=pooling[c.pooling],
            )
            for c in self.table_configs()
        ]


def _unique(section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"{section}[{i}]: duplicate name '{n}'")
        seen.add(n)


def _format_errors(err: ValidationError) -> str:
    def where(loc: tuple) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")

    lines = []
    for e in err.errors():
        loc = where(e["loc"])
        if e["type"] == "extra_forbidden":
            msg = unknown_key(FeatureSpec, e["loc"], where(e["loc"][:-1]))
        else:
            msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


def spec_from_dict(data: dict, source: str = "<dict>") -> FeatureSpec:
    try:
        return FeatureSpec.model_validate(data)
    except ValidationError as e:
        raise FeatureSpecError(f"{source}: {_format_errors(e)}") from None


def load_spec(path: str | Path) -> FeatureSpec:
    """Load and validate a YAML feature spec; raises FeatureSpecError naming file and key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise FeatureSpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise FeatureSpecError(f"{path}: expected a mapping at the top level")
    return spec_from_dict(data, source=str(path))
