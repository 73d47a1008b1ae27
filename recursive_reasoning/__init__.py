"""rr: recursive reasoning models (TRM, HRM and successors) on PyTorch Lightning."""

from typing import Any

from recursive_reasoning.network import NetworkConfig, ReasoningNetwork

__all__ = ["NetworkConfig", "OptimConfig", "ReasoningNetwork", "RecursiveReasoner"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The LightningModule imports `strategies`, which imports this package: load it lazily to keep imports acyclic.
    if name in ("OptimConfig", "RecursiveReasoner"):
        from recursive_reasoning import module

        return getattr(module, name)
    raise AttributeError(f"module 'recursive_reasoning' has no attribute {name!r}")
