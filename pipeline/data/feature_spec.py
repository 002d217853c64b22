"""Feature specification: which Parquet columns feed which embedding tables, dense inputs and tasks.

A spec is a YAML file (see configs/) validated on load by pydantic; every error names the
offending key, e.g. `sparse[2].table: unknown table 'itme'`. The same spec object drives the
generator, the converters' configs, the validator, the collate and the model's embedding
tables, so training and scoring cannot disagree on the id mapping or dense normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class FeatureSpecError(ValueError):
    """A feature spec file is malformed; the message names the file and the bad key."""


class _Strict(BaseModel):
    # extra="forbid": a misspelt key (`hash_bucket:`) must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSpec(_Strict):
    """One embedding table. Exactly one of `vocab_size` / `hash_buckets` sets its row count.

    vocab_size: integer ids in [0, vocab_size) are used as row numbers unchanged; larger ids and
        all strings are hashed into the range (pipeline/data/id_mapping.py).
    hash_buckets: every id (int or string) is hashed into [0, hash_buckets).
    """

    name: str = Field(min_length=1)
    vocab_size: int | None = Field(default=None, gt=0)
    hash_buckets: int | None = Field(default=None, gt=0)
    dim: int = Field(gt=0)
    pooling: Literal["sum", "mean"] = "sum"

    @model_validator(mode="after")
    def _one_size(self) -> TableSpec:
        if (self.vocab_size is None) == (self.hash_buckets is None):
            raise ValueError("set exactly one of vocab_size or hash_buckets")
        return self

    @property
    def num_embeddings(self) -> int:
        size = self.vocab_size if self.vocab_size is not None else self.hash_buckets
        assert size is not None  # _one_size: exactly one is set
        return size

    @property
    def hash_all(self) -> bool:
        return self.hash_buckets is not None


class SparseFeature(_Strict):
    """A categorical input: one id per row (int64 / string) or a list of ids (list<int64>)."""

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    table: str = Field(min_length=1)
    type: Literal["int64", "string", "list<int64>"] = "int64"

    @property
    def multi_valued(self) -> bool:
        return self.type == "list<int64>"


class DenseFeature(_Strict):
    """A float input. `transform` is applied by the collate, so scoring uses the same mapping.

    none: x; log1p: log(1 + max(x, 0)) for heavy-tailed non-negative values such as prices;
    standard: (x - mean) / std with mean/std stored here (fit once, e.g. on the first day).
    """

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    transform: Literal["none", "log1p", "standard"] = "none"
    mean: float | None = None
    std: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _stats_for_standard(self) -> DenseFeature:
        if self.transform == "standard" and (self.mean is None or self.std is None):
            raise ValueError("transform 'standard' needs mean and std")
        if self.transform != "standard" and (self.mean is not None or self.std is not None):
            raise ValueError(f"mean/std are only used by transform 'standard', not '{self.transform}'")
        return self


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
        return self

    # -- derived views used by the reader, the collate and the trainer ---------------------
    @property
    def table_by_name(self) -> dict[str, TableSpec]:
        return {t.name: t for t in self.tables}

    @property
    def feature_names(self) -> list[str]:
        """KJT keys, in spec order."""
        return [f.name for f in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def num_dense(self) -> int:
        return len(self.dense)

    def columns(self) -> list[str]:
        """Every Parquet column the collate reads, without duplicates, in a stable order."""
        cols = [f.column for f in self.sparse] + [f.column for f in self.dense] + list(self.labels)
        return list(dict.fromkeys(cols))

    def input_columns(self) -> list[str]:
        """The model's inputs only (no labels): what scoring needs from a file."""
        cols = [f.column for f in self.sparse] + [f.column for f in self.dense]
        return list(dict.fromkeys(cols))

    def table_configs(self) -> list[TableConfig]:
        return [
            TableConfig(
                name=t.name,
                num_embeddings=t.num_embeddings,
                dim=t.dim,
                feature_names=[f.name for f in self.sparse if f.table == t.name],
                pooling=t.pooling,
            )
            for t in self.tables
        ]

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
    lines = []
    for e in err.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
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
