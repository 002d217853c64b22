"""Read tensors out of a DCP checkpoint holding one copy of each, for the export.

`torch.distributed.checkpoint.load` fills tensors the caller allocated: its FileSystemReader
`torch.load`s every saved item (a table, or one shard of it) and then copies it into place, so
exporting a table needs its memory twice. `read_tensors` runs DCP's own planning with
targets of the right shapes that hold no memory, and a reader that keeps what
`torch.load` made when a saved item is a whole tensor, and otherwise assembles the shards into
one tensor: the peak is one table (plus one shard while a sharded table is put together).

The reader follows FileSystemReader.read_data of the pinned torch (2.13) and uses its
attributes `storage_data`, `fs`, `path`, `transforms` and `_slice_file`;
tests/unit/test_export_format.py checks they are still there.
"""

from __future__ import annotations

import io

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.futures import Future

READER_ATTRIBUTES = ("storage_data", "fs", "path", "transforms", "_slice_file")


class _KeepLoaded(FileSystemReader):
    def __init__(self, path: str, like: dict[str, torch.Tensor]) -> None:
        super().__init__(path)
        self.like = like  # the full shape and dtype of every key read
        self.tensors: dict[str, torch.Tensor] = {}

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        per_file: dict[str, list[ReadItem]] = {}
        for req in plan.items:
            per_file.setdefault(self.storage_data[req.storage_index].relative_path, []).append(req)
        for relative_path, reqs in per_file.items():
            with self.fs.create_stream(self.fs.concat_path(self.path, relative_path), "rb") as stream:
                for req in reqs:
                    if req.type == LoadItemType.BYTE_IO:
                        raise ValueError(f"{req.dest_index.fqn}: not a tensor in the checkpoint")
                    info = self.storage_data[req.storage_index]
                    data = self.transforms.transform_load_stream(
                        req, info.transform_descriptors or (), self._slice_file(stream, info)
                    )
                    if not data.seekable():  # torch.load needs to seek
                        data = io.BytesIO(data.read(-1))
                    piece = torch.load(data, map_location="cpu", weights_only=True)
                    self._place(req, piece)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def _place(self, req: ReadItem, piece: torch.Tensor) -> None:
        for dim, (start, length) in enumerate(zip(req.storage_offsets, req.lengths, strict=True)):
            piece = piece.narrow(dim, start, length)
        fqn = req.dest_index.fqn
        target = self.like[fqn]
        whole = tuple(piece.shape) == tuple(target.shape) and not any(req.dest_offsets)
        if whole:
            self.tensors[fqn] = piece if piece.is_contiguous() else piece.contiguous()
            return
        if fqn not in self.tensors:
            self.tensors[fqn] = torch.empty(target.shape, dtype=target.dtype)
        region = self.tensors[fqn]
        for dim, (start, length) in enumerate(zip(req.dest_offsets, req.lengths, strict=True)):
            region = region.narrow(dim, start, length)
        region.copy_(piece)


def read_tensors(checkpoint_dir: str, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{key: tensor} of the checkpoint's `like` keys (tensors on any device, meta included, whose
    shapes and dtypes say what to read); DCP reassembles sharded ones. No process group."""
    import torch.distributed.checkpoint as dcp

    # Targets of the right shapes that hold no memory (one element, expanded): DCP plans the reads
    # with them, and the reader never writes into them (DCP would allocate meta tensors itself).
    targets = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in like.items()}
    reader = _KeepLoaded(checkpoint_dir, targets)
    dcp.load(targets, storage_reader=reader, no_dist=True)
    missing = sorted(set(like) - set(reader.tensors))
    if missing:
        raise KeyError(f"{checkpoint_dir}: the checkpoint does not hold {missing[:3]}")
    return {k: reader.tensors[k] for k in like}
