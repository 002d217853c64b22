"""Validated description of a multi-task model (PLE and the variants users compare it with)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

Activation = Literal["relu", "gelu", "silu", "tanh", "leaky_relu"]
Architecture = Literal["ple", "cgc", "mmoe", "shared_bottom"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


def make_activation(name: Activation) -> nn.Module:
    return _ACTIVATIONS[name]()


class ModelConfig(BaseModel):
    """The dense part of the model: extraction levels, gates and towers.

    `architecture` picks the family; CGC, MMoE and shared-bottom are PLE configurations:
      cgc           one level
      mmoe          one level, shared experts only, one gate per task
      shared_bottom one level, one shared expert, no task experts (gates are constant 1)
    """

    model_config = ConfigDict(extra="forbid")

    architecture: Architecture = "ple"
    num_tasks: int = Field(2, ge=1)
    num_levels: int = Field(2, ge=1)
    task_experts: int = Field(2, ge=0, description="task-specific experts per task and level")
    shared_experts: int = Field(1, ge=0)
    expert_hidden: list[int] = Field(default_factory=lambda: [64], min_length=1)
    gate_hidden: list[int] = Field(default_factory=list, description="empty: linear+softmax gate")
    tower_hidden: list[int] = Field(default_factory=lambda: [32])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    activation: Activation = "relu"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if any(h < 1 for h in self.expert_hidden + self.gate_hidden + self.tower_hidden):
            raise ValueError("hidden sizes must be positive")
        if self.architecture == "ple" and self.task_experts + self.shared_experts == 0:
            raise ValueError("ple needs at least one expert per task gate (task_experts + shared_experts >= 1)")
        if self.architecture == "mmoe" and self.shared_experts < 1:
            raise ValueError("mmoe needs shared_experts >= 1")
        return self

    def resolved(self) -> ModelConfig:
        """The equivalent plain-PLE configuration (what the layers are built from)."""
        if self.architecture == "cgc":
            return self.model_copy(update={"architecture": "ple", "num_levels": 1})
        if self.architecture == "mmoe":
            return self.model_copy(update={"architecture": "ple", "num_levels": 1, "task_experts": 0})
        if self.architecture == "shared_bottom":
            return self.model_copy(
                update={"architecture": "ple", "num_levels": 1, "task_experts": 0, "shared_experts": 1}
            )
        return self
