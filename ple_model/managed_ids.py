"""Managed-collision tables: raw ids mapped to embedding rows by TorchRec's MCH modules.

A hashed table sends every id to `hash(id) % rows`, so as an id space grows new ids pile onto
old ones' rows. A managed table keeps an id-to-row mapping instead (TorchRec's
`MCHManagedCollisionModule`): while training, the ids seen are profiled, and every
`eviction_interval` steps new ids are admitted into free rows or into the rows of the ids the
eviction policy ranks lowest (LFU: least often seen; LRU: least recently seen). An id with no row
(not admitted yet, or unseen at scoring) goes to the table's last row, which is never assigned.
In eval mode the mapping only remaps. The mapping and its eviction metadata are buffers, so they
are part of the state dict: checkpoints, exports and warm starts carry them.

Why not TorchRec's ManagedCollisionEmbeddingBagCollection: its sharded form needs row-wise
sharding, which TorchRec offers on CUDA only (docs/managed_collisions.md). Here the mapping
stays one replicated module in front of the (sharded) EmbeddingBagCollection. Each data-parallel
worker would otherwise profile only its own batches and the mappings would drift apart, so in
training every worker profiles the ids of all workers' batches (an all-gather of the managed
ids only) and the mappings stay identical; each worker then remaps its own batch.

Profiling only fills MCH's history; the mapping changes at the eviction steps alone, and
remapping reads nothing else. So a worker holds its steps' ids back and gathers them once, at
the step whose profile evicts (at the latest after MAX_HELD_STEPS steps, and before a
checkpoint: `flush_profile`), then profiles those steps in order with every worker's ids: the
same calls as gathering at every step, one gloo collective per eviction interval instead of one
per step (about a millisecond each on CPU).

An evicted row keeps its embedding (and optimizer state) for the id admitted into it: TorchRec's
unsharded module hands it over as it is. `take_reassigned_rows` tells training which rows changed
hands, and training starts them afresh (pipeline/train/reassigned_rows.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.distributed as dist
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.mc_modules import LFU_EvictionPolicy, LRU_EvictionPolicy, MCHManagedCollisionModule
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

Eviction = Literal["lfu", "lru"]
# MCH marks a free slot with the largest int64: raw ids must stay below it (pipeline/data/id_mapping.py).
FREE_SLOT = torch.iinfo(torch.int64).max
# TorchRec's buffer of the raw ids holding a row, sorted (tests/unit/test_torchrec_managed_collisions.py pins it).
MAPPING_BUFFER = "_mch_sorted_raw_ids"
# Steps whose ids a worker holds back at most before it gathers them, eviction step or not: bounds
# the memory (a count of steps, not of ids, so that every worker decides alike).
MAX_HELD_STEPS = 64
# TorchRec's buffer of the module's output range: its load hook resets it to the range the module
# was built with (an unsharded module's never changes).
SEGMENTS_BUFFER = "_output_segments_tensor"


@dataclass(frozen=True)
class ManagedTable:
    """How one table's ids are managed: the eviction policy and how often (training steps) it runs."""

    eviction: Eviction = "lfu"
    eviction_interval: int = 100


def _mch(rows: int, table: ManagedTable, device: torch.device) -> MCHManagedCollisionModule:
    policy = LFU_EvictionPolicy() if table.eviction == "lfu" else LRU_EvictionPolicy()
    return MCHManagedCollisionModule(
        zch_size=rows, device=device, eviction_policy=policy, eviction_interval=table.eviction_interval
    )


def _all_gather_ids(ids: list[torch.Tensor], capacity: int) -> tuple[list[torch.Tensor], int]:
    """(every worker's ids of each tensor in `ids` (a table's ids at one step), concatenated in
    rank order; the capacity for the next call). Ranks may hold different counts, and on gloo
    each collective costs about a millisecond whatever its size (benchmarks/bench_managed_step.py),
    so the counts travel in the same collective as the ids: each rank sends its counts, then its
    ids padded to `capacity`, which every rank knows. When some rank's ids outgrow it, every rank
    reads that in the gathered counts and all send again with room for the largest (plus a
    quarter, kept for the next calls): one collective a call once the capacity has settled, two
    until then."""
    world, tables = dist.get_world_size(), len(ids)
    counts = torch.tensor([t.numel() for t in ids], dtype=torch.int64, device=ids[0].device)
    mine = torch.cat(ids)

    def gather(room: int) -> list[torch.Tensor]:
        sent = torch.zeros(tables + room, dtype=torch.int64, device=mine.device)
        sent[:tables] = counts
        sent[tables : tables + min(room, mine.numel())] = mine[:room]
        parts = [torch.empty_like(sent) for _ in range(world)]
        dist.all_gather(parts, sent)
        return parts

    parts = gather(capacity)
    splits = [part[:tables].tolist() for part in parts]
    needed = max(sum(n) for n in splits)
    if needed > capacity:
        capacity = needed + needed // 4
        parts = gather(capacity)
    by_rank = [part[tables : tables + sum(n)].split(n) for part, n in zip(parts, splits, strict=True)]
    return [torch.cat([rank[i] for rank in by_rank]) for i in range(tables)], capacity


def _built_from_size(mch: MCHManagedCollisionModule) -> dict[str, torch.Tensor]:
    """The buffers TorchRec's MCH builds from its size alone: its output range (saved; a loaded
    one must match) and two it does not save. A module built on the meta device, as an export's
    model is so that its mapping is never allocated before the mapped one replaces it, takes them
    from here (tests/unit/test_managed_tables.py compares them with a module built on the CPU)."""
    start, rows = mch._output_global_offset, mch._zch_size
    segments = torch.full((getattr(mch, SEGMENTS_BUFFER).numel(),), -1, dtype=torch.int64)
    segments[:2] = torch.tensor([start, start + rows])
    return {
        SEGMENTS_BUFFER: segments,
        "_mch_slots": torch.tensor([rows - 1]),
        "_delimiter": torch.tensor([FREE_SLOT]),
    }


def _point_metadata(mch: MCHManagedCollisionModule) -> None:
    """The eviction policy reads its metadata (counts, last access) through this dict of
    TorchRec's, which still holds the buffers a module had when it was built: point it at the
    ones it has now (tests/unit/test_managed_tables.py checks the pinned version's names)."""
    metadata = mch._mch_metadata
    for meta_name in metadata:
        metadata[meta_name] = getattr(mch, f"_mch_{meta_name}")


def _assign(mch: MCHManagedCollisionModule, buffers: Mapping[str, torch.Tensor]) -> None:
    for key, tensor in buffers.items():
        setattr(mch, key, tensor)  # a registered buffer's name: the buffer is replaced
    mch._init_output_segments_tensor = getattr(mch, SEGMENTS_BUFFER)  # what TorchRec's load hook restores


class ManagedIds(nn.Module):
    """KJT of raw ids -> the same KJT with the managed tables' ids replaced by their rows.
    Features of other tables pass through unchanged (their ids are rows already)."""

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        managed: Mapping[str, ManagedTable],
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        by_name = {t.name: t for t in tables}
        unknown = sorted(set(managed) - set(by_name))
        if unknown:
            raise ValueError(f"managed tables {unknown} are not among the tables {sorted(by_name)}")
        device = torch.device(device or "cpu")
        self.tables = nn.ModuleDict({n: _mch(by_name[n].num_embeddings, m, device) for n, m in managed.items()})
        self.table_features = {n: list(by_name[n].feature_names) for n in managed}
        self._intervals = sorted({m.eviction_interval for m in managed.values()})
        self._gather_capacity = 0  # ids a rank sends per all-gather (_all_gather_ids); not state
        self._held: list[list[torch.Tensor]] = []  # this rank's ids per step, not profiled yet
        self._profiled = 0  # profile calls so far: MCH evicts at every multiple of its interval

    def forward(self, sparse: KeyedJaggedTensor) -> KeyedJaggedTensor:
        if not self.table_features:
            return sparse
        values, offsets = sparse.values(), sparse.offset_per_key()
        spans = {k: (offsets[i], offsets[i + 1]) for i, k in enumerate(sparse.keys())}
        # A table's features share its rows: they are profiled and remapped together.
        ids = [torch.cat([values[slice(*spans[f])] for f in fs]) for fs in self.table_features.values()]
        if self.training and dist.is_initialized() and dist.get_world_size() > 1:
            self._held.append(ids)
            steps = self._profiled + len(self._held)
            if len(self._held) == MAX_HELD_STEPS or any(steps % interval == 0 for interval in self._intervals):
                self.flush_profile()  # this step's profile evicts: the mapping must be current
        elif self.training:
            self._profile(ids)
        remapped = values.clone()  # the batch's own KJT stays as it was (validation batches are reused)
        for (name, mch), table_ids in zip(self._by_table(), ids, strict=True):
            rows = mch.remap({name: JaggedTensor(values=table_ids, lengths=table_ids.new_ones(table_ids.numel()))})
            offset = 0
            for f in self.table_features[name]:
                start, end = spans[f]
                remapped[start:end] = rows[name].values()[offset : offset + end - start]
                offset += end - start
        return KeyedJaggedTensor(
            keys=sparse.keys(),
            values=remapped,
            lengths=sparse.lengths(),
            weights=sparse.weights_or_none(),
            stride=sparse.stride(),
            length_per_key=sparse.length_per_key(),
        )

    def flush_profile(self) -> None:
        """Collective on every worker (a no-op when none holds ids back): profile the steps this
        worker has held back, each with every worker's ids of that step. The checkpoint calls it
        first, so that the saved step counter and metadata are those of per-step profiling."""
        if not self._held:
            return
        held, self._held = self._held, []
        tables = len(self.table_features)
        flat = [table_ids for step in held for table_ids in step]
        gathered, self._gather_capacity = _all_gather_ids(flat, self._gather_capacity)
        for start in range(0, len(flat), tables):
            self._profile(gathered[start : start + tables])

    def _profile(self, ids: Sequence[torch.Tensor]) -> None:
        for (name, mch), seen in zip(self._by_table(), ids, strict=True):
            mch.profile({name: JaggedTensor(values=seen, lengths=seen.new_ones(seen.numel()))})
        self._profiled += 1

    def _by_table(self) -> list[tuple[str, MCHManagedCollisionModule]]:
        return [(name, cast(MCHManagedCollisionModule, mch)) for name, mch in self.tables.items()]

    def take_reassigned_rows(self) -> dict[str, torch.Tensor]:
        """{table: the rows (int64) MCH has given to other ids since the last call: an evicted
        id's row, or a free one filled for the first time}; tables with none are left out. It
        reads TorchRec's public `evict()`, which collects them at every eviction and empties on
        reading. Every worker gets the same rows (the mappings are identical)."""
        out = {}
        for name, mch in self._by_table():
            rows = mch.evict()
            if rows is not None and rows.numel():
                out[name] = rows.long()
        return out

    def mapping_bytes(self) -> dict[str, int]:
        """{table: bytes of its mapping and eviction metadata} (about 24 a row), which every
        worker holds in full: the planner reserves them beside the tables' shards."""
        return {name: sum(b.numel() * b.element_size() for b in mch.buffers()) for name, mch in self.tables.items()}

    @torch.no_grad()
    def assign_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load this module's state dict by making its tensors the buffers (no copy), for an
        inference model loaded from memory-mapped files, so that the processes mapping one file
        share its pages. `load_state_dict` would run TorchRec's load hook, which re-sorts the
        mapping in place and so writes a private copy of every page into each process. A mapping
        saved from training is sorted already (MCH re-sorts it after every eviction), so it is
        checked here instead; one that is not is copied into this module's own buffers and
        re-sorted there, as `load_state_dict` does. A module built on the meta device (an
        export's) gets the buffers the state dict lacks from its tables' sizes; it is for
        inference: training starts from a checkpoint, into a module built on a real device."""
        own = self.state_dict()
        if set(state) != set(own):
            raise KeyError(
                f"managed-id state: missing {sorted(set(own) - set(state))}, unexpected {sorted(set(state) - set(own))}"
            )
        for name, mch in self._by_table():
            prefix = f"tables.{name}."
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            raw, segments = part[MAPPING_BUFFER], part.pop(SEGMENTS_BUFFER)
            built, on_meta = _built_from_size(mch), getattr(mch, MAPPING_BUFFER).is_meta
            if not (torch.equal(segments, built[SEGMENTS_BUFFER]) and bool((raw[1:] >= raw[:-1]).all())):
                if on_meta:
                    mch.to_empty(device=raw.device)
                    _assign(mch, built)
                    _point_metadata(mch)
                mch.load_state_dict({**part, SEGMENTS_BUFFER: segments})
                continue
            if on_meta:  # an export's model: the buffers the state dict lacks, from the table's size
                _assign(mch, built)
            for key, tensor in part.items():
                if tensor.shape != own[prefix + key].shape or tensor.dtype != own[prefix + key].dtype:
                    raise ValueError(
                        f"managed-id state {prefix + key}: {tuple(tensor.shape)} {tensor.dtype}, "
                        f"expected {tuple(own[prefix + key].shape)} {own[prefix + key].dtype}"
                    )
                setattr(mch, key, tensor)  # a registered buffer's name: the buffer is replaced
            _point_metadata(mch)

    @torch.no_grad()
    def live_ids(self) -> dict[str, torch.Tensor]:
        """{table: the raw ids that hold a row now}, sorted."""
        out = {}
        for name, mch in self.tables.items():
            raw = getattr(mch, MAPPING_BUFFER)
            out[name] = raw[raw != FREE_SLOT].clone()
        return out


def id_turnover(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> dict[str, dict[str, int]]:
    """{table: {admitted, evicted, live}}: the ids that gained a row between two `live_ids()`,
    those that lost theirs, and how many hold one now."""
    out = {}
    for name, now in after.items():
        then = before.get(name, now[:0])
        out[name] = {
            "admitted": int((~torch.isin(now, then)).sum()),
            "evicted": int((~torch.isin(then, now)).sum()),
            "live": int(now.numel()),
        }
    return out
