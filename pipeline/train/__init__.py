"""Training: config, losses, metrics, the train module, sharding, the sharded model,
checkpoints, the Ray Train worker loop and its step cadence, the driver (`launch`), the
one-process smoke run (`in_memory`) and the unsharded export."""
