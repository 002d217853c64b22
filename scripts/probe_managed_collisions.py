"""TorchRec's managed-collision EmbeddingBagCollection sharded row-wise on one GPU (NCCL): the case
CPU cannot run (the sharder offers no sharding type there; tests/unit/test_torchrec_managed_collisions.py
pins that and the unsharded behaviour). Prints what it saw; exits 1 if a step fails.

    python3 scripts/probe_managed_collisions.py        # from scripts/gpu_check.sh
"""

import os

import torch
import torch.distributed as dist
from torchrec.distributed.mc_embeddingbag import ManagedCollisionEmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingEnv
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mc_embedding_modules import ManagedCollisionEmbeddingBagCollection
from torchrec.modules.mc_modules import LFU_EvictionPolicy, ManagedCollisionCollection, MCHManagedCollisionModule
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

ROWS, OLD, NEW = 8, 10**12, 5 * 10**12


def main() -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl", rank=0, world_size=1)
    device = torch.device("cuda", 0)
    tables = [EmbeddingBagConfig(name="user", embedding_dim=8, num_embeddings=ROWS, feature_names=["user_id"])]
    mch = MCHManagedCollisionModule(
        zch_size=ROWS,
        device=torch.device("meta"),
        eviction_policy=LFU_EvictionPolicy(),
        eviction_interval=1,
        input_hash_size=2**62,
    )
    module = ManagedCollisionEmbeddingBagCollection(
        EmbeddingBagCollection(tables=tables, device=torch.device("meta")),
        ManagedCollisionCollection({"user": mch}, embedding_configs=tables),
        return_remapped_features=True,
    )
    sharder = ManagedCollisionEmbeddingBagCollectionSharder()
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=1), kernel_config=KernelConfig(compute_device="cuda")
    )
    plan = EmbeddingShardingPlanner(
        topology=topology, constraints={"user": ParameterConstraints(sharding_types=["row_wise"])}
    ).plan(module, [sharder])
    print("plan:", plan)
    dmp = DistributedModelParallel(
        module, env=ShardingEnv.from_process_group(dist.group.WORLD), device=device, plan=plan, sharders=[sharder]
    )
    for step, ids in enumerate([[OLD + i for i in range(6)]] * 2 + [[NEW + i for i in range(6)]]):
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["user_id"], values=torch.tensor(ids), lengths=torch.ones(len(ids), dtype=torch.int32)
        ).to(device)
        pooled, remapped = dmp(kjt)
        pooled = pooled.wait() if hasattr(pooled, "wait") else pooled
        pooled["user_id"].sum().backward()
        remapped = remapped.wait() if hasattr(remapped, "wait") else remapped
        print(f"step {step}: rows {remapped['user_id'].values().tolist()}")
    keys = [k for k in dmp.state_dict() if "_mch_" in k]
    print("managed-collision state in the state dict:", keys)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
