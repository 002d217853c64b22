"""The multi-task model: pure PyTorch (+ TorchRec for the sparse front), no Ray, no I/O."""

from ple_model.config import ModelConfig
from ple_model.ple import PLE, GateWeights, MultiTaskModel, PLELayer
from ple_model.stacked_mlp import StackedMLP

__all__ = ["ModelConfig", "PLE", "PLELayer", "GateWeights", "MultiTaskModel", "StackedMLP"]


# The sparse front needs torchrec; import it lazily so the dense model works without it.
def __getattr__(name):
    if name in ("RecModel", "pooled_dim"):
        from ple_model import rec_model

        return getattr(rec_model, name)
    if name in ("ManagedIds", "ManagedTable"):
        from ple_model import managed_ids

        return getattr(managed_ids, name)
    raise AttributeError(name)
