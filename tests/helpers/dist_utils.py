"""Run a function on N CPU ranks (gloo) in spawned processes, and move sharded state between
ranks and plain full tensors. Test helpers only: no Ray.

`fn(rank, world_size, *args)` must be importable (a module-level function); its return value
comes back through a file (a queue would deadlock on large results while mp.spawn joins).

The ranks fork from a forkserver that has imported torch, torchrec and the project's training
modules once per pytest process: a spawned rank spent ~5 CPU-s (2 cores) importing them, and the
suite starts about 25 ranks. The server only imports (no thread pool or process group exists
before the fork). A rank sees the environment the server started with, not the caller's at the
call: pass what a rank needs as `args` (as with spawn, the caller's patched globals never reach it).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, out_dir: str, fn: Callable, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)  # N ranks share a few cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


# What every rank imports anyway (the test modules import from these): once, in the forkserver.
FORKSERVER_PRELOAD = ["torch", "torchrec.distributed", "pipeline.train.sharded_model", "pipeline.train.checkpoint"]


def run_on_ranks(fn: Callable, world_size: int, *args: Any) -> list[Any]:
    """[fn's return value on rank 0, rank 1, ...]; an exception on any rank fails the call."""
    mp.set_forkserver_preload(FORKSERVER_PRELOAD)  # read when the server starts: this process's first call
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(
            _entry,
            args=(world_size, _free_port(), out_dir, fn, args),
            nprocs=world_size,
            join=True,
            start_method="forkserver",
        )
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]


# -- sharded state <-> full tensors ----------------------------------------------------------------
def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def local_pieces(state: dict) -> dict[str, Any]:
    """{flattened key: ("full", tensor) | ("shards", global size, [(offsets, tensor)])} of this
    rank's view of a (nested) state dict, detached and cloned, to assemble in the parent."""
    out = {}
    for key, v in _flatten(state).items():
        if isinstance(v, ShardedTensor):
            shards = [(list(s.metadata.shard_offsets), s.tensor.detach().clone()) for s in v.local_shards()]
            out[key] = ("shards", list(v.size()), shards)
        elif isinstance(v, DTensor):
            out[key] = ("full", v.full_tensor().detach().clone())
        elif isinstance(v, torch.Tensor):
            out[key] = ("full", v.detach().clone())
    return out


def assemble(per_rank: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Full tensors from every rank's `local_pieces`; checks the shards cover each tensor exactly
    once and that replicated tensors agree across ranks."""
    out: dict[str, torch.Tensor] = {}
    covered: dict[str, torch.Tensor] = {}
    for pieces in per_rank:
        for key, piece in pieces.items():
            if piece[0] == "full":
                if key in out:
                    assert torch.equal(out[key], piece[1]), f"replicated {key} differs across ranks"
                out[key] = piece[1]
                continue
            _, size, shards = piece
            full = out.setdefault(key, torch.zeros(size, dtype=shards[0][1].dtype if shards else torch.float32))
            count = covered.setdefault(key, torch.zeros(size, dtype=torch.int32))
            for offsets, t in shards:
                region = tuple(slice(o, o + n) for o, n in zip(offsets, t.shape, strict=True))
                full[region] = t
                count[region] += 1
    for key, count in covered.items():
        assert bool((count == 1).all()), f"shards of {key} do not cover it exactly once"
    return out


def load_full_into(state: dict, full: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into this rank's (sharded or replicated) state in place."""
    with torch.no_grad():
        for key, v in _flatten(state).items():
            if isinstance(v, ShardedTensor):
                for s in v.local_shards():
                    offsets = s.metadata.shard_offsets
                    region = tuple(slice(o, o + n) for o, n in zip(offsets, s.tensor.shape, strict=True))
                    s.tensor.copy_(full[key][region])
            elif isinstance(v, torch.Tensor) and not isinstance(v, DTensor):
                v.copy_(full[key])
