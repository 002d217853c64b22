"""How a run changed its managed tables' id mappings (ple_model/managed_ids.py), as metrics:
`ids/<table>/admitted` (ids that gained a row), `ids/<table>/evicted` (ids that lost theirs),
`ids/<table>/live` (ids holding a row at the end) and `ids/<table>/rows` (rows ids can hold,
the table's rows less the last, which takes the ids without one).

Counted against the mapping the run started from: the warm start's checkpoint
(`train.init_from`, as in daily retraining) or an empty one, so a run resumed after a failure
still counts from its true start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IDS_PREFIX = "ids/"
_FIELDS = ("admitted", "evicted", "live", "rows")


def turnover_metrics(model, init_from: str | None) -> dict[str, int]:
    """`ids/...` metrics of a RecModel (in a TrainModule, the key prefix `model.`)."""
    from pipeline.train.dcp_reader import read_tensors
    from ple_model.managed_ids import FREE_SLOT, MAPPING_BUFFER, id_turnover

    managed = model.managed
    if managed is None:
        return {}
    now = managed.live_ids()
    before = {name: ids[:0] for name, ids in now.items()}
    if init_from:
        # Only the mapping buffers of the start checkpoint are read: TrainModule's state is under
        # "model", RecModel's keys under "model.".
        keys = {f"model.model.managed.tables.{name}.{MAPPING_BUFFER}": name for name in now}
        part = read_tensors(init_from, {k: getattr(managed.tables[name], MAPPING_BUFFER) for k, name in keys.items()})
        before = {name: part[k][part[k] != FREE_SLOT] for k, name in keys.items()}
    out = {}
    for name, counts in id_turnover(before, now).items():
        counts["rows"] = managed.tables[name].output_size() - 1
        out.update({f"{IDS_PREFIX}{name}/{field}": counts[field] for field in _FIELDS})
    return out


def turnover_from_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """{table: {admitted, evicted, live, rows}} from a run's metrics."""
    out: dict[str, dict[str, int]] = {}
    for key, value in metrics.items():
        if key.startswith(IDS_PREFIX) and key.count("/") == 2:
            _, table, field = key.split("/")
            out.setdefault(table, {})[field] = int(value)
    return out


def describe_turnover(turnover: Mapping[str, Mapping[str, int]]) -> str:
    """`user: 1,204 ids admitted, 310 evicted, 4,095 of 4,095 rows in use`; tables by name."""
    return "; ".join(
        f"{table}: {t['admitted']:,} ids admitted, {t['evicted']:,} evicted, {t['live']:,} of {t['rows']:,} rows in use"
        for table, t in sorted(turnover.items())
    )


def short_run_warnings(spec, run_steps: int | None) -> list[str]:
    """A line for each managed table whose eviction interval is longer than the run: TorchRec's
    module admits ids only when an interval completes, so such a run admits none."""
    if run_steps is None:
        return []
    return [
        f"managed table {t.name}: this run's {run_steps} steps are fewer than its eviction interval "
        f"({t.eviction_policy.interval_steps} steps), so it admits no id; lower eviction.interval_steps"
        for t in spec.managed_tables
        if t.eviction_policy.interval_steps > run_steps
    ]
