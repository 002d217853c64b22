"""What the pinned TorchRec's managed-collision modules do on CPU, which the design of managed
tables rests on (docs/managed_collisions.md): unsharded, they admit new ids into free rows,
keep frequent ids (LFU), send ids that found no row to the table's last row, remap the same way
in eval mode and after a state-dict round trip, and change their mapping only at every
`eviction_interval`-th profile call (ple_model/managed_ids.py holds ids back until then);
sharded, they offer no sharding type on CPU.
scripts/probe_managed_collisions.py checks the row-wise sharded case on a GPU."""

from __future__ import annotations

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mc_embedding_modules import ManagedCollisionEmbeddingBagCollection
from torchrec.modules.mc_modules import LFU_EvictionPolicy, ManagedCollisionCollection, MCHManagedCollisionModule
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

ROWS = 8
OLD, NEW = 10**12, 5 * 10**12  # raw ids far beyond the table's rows: no modulo anywhere


def _mc_ebc(device: str = "cpu") -> ManagedCollisionEmbeddingBagCollection:
    tables = [EmbeddingBagConfig(name="user", embedding_dim=4, num_embeddings=ROWS, feature_names=["user_id"])]
    mch = MCHManagedCollisionModule(
        zch_size=ROWS,
        device=torch.device(device),
        eviction_policy=LFU_EvictionPolicy(),
        eviction_interval=1,
        input_hash_size=2**62,
    )
    mcc = ManagedCollisionCollection({"user": mch}, embedding_configs=tables)
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device(device))
    return ManagedCollisionEmbeddingBagCollection(ebc, mcc, return_remapped_features=True)


def _rows(module, ids: list[int]) -> list[int]:
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id"], values=torch.tensor(ids), lengths=torch.ones(len(ids), dtype=torch.int32)
    )
    pooled, remapped = module(kjt)
    if module.training:
        pooled["user_id"].sum().backward()
    return remapped["user_id"].values().tolist()


def test_unsharded_managed_collisions_admit_keep_frequent_ids_and_remap_alike_after_a_reload():
    module = _mc_ebc().train()
    old = [OLD + i for i in range(6)]
    assert _rows(module, old) == [1, 2, 3, 4, 5, 6]  # admitted into free rows
    assert _rows(module, old) == [1, 2, 3, 4, 5, 6]  # the same rows again
    # Six new ids, one free row: one is admitted; the old ids (seen twice) are not evicted for
    # ids seen once; the rest share the last row.
    assert _rows(module, [NEW + i for i in range(6)]) == [0, 7, 7, 7, 7, 7]
    state = {k: v.clone() for k, v in module.state_dict().items()}
    assert any(k.endswith("user._mch_sorted_raw_ids") for k in state) and any(k.endswith("_mch_counts") for k in state)
    module.eval()
    assert _rows(module, [OLD, NEW, 999]) == [1, 0, 7]  # an unseen id in eval: the last row
    reloaded = _mc_ebc()
    reloaded.load_state_dict(state)
    assert _rows(reloaded.eval(), [OLD, NEW, 999]) == [1, 0, 7]


def test_sharded_managed_collisions_offer_no_sharding_type_on_cpu():
    from torchrec.distributed.mc_embeddingbag import ManagedCollisionEmbeddingBagCollectionSharder

    sharder = ManagedCollisionEmbeddingBagCollectionSharder()
    assert sharder.sharding_types("cpu") == []
    assert sharder.sharding_types("cuda") == ["row_wise"]


def test_the_mapping_changes_only_at_every_eviction_interval_th_profile_call():
    mch = MCHManagedCollisionModule(
        zch_size=ROWS, device=torch.device("cpu"), eviction_policy=LFU_EvictionPolicy(), eviction_interval=3
    )
    changed_at = []
    for call in range(1, 8):
        before = mch._mch_sorted_raw_ids.clone()
        ids = torch.arange(2) + OLD + 10 * call  # new ids at every call
        mch.profile({"user": JaggedTensor(values=ids, lengths=torch.ones(2, dtype=torch.int64))})
        if not torch.equal(before, mch._mch_sorted_raw_ids):
            changed_at.append(call)
    assert changed_at == [3, 6]
    assert int(mch._current_iter_tensor) == 7
