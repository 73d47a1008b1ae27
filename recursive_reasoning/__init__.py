"""rr: recursive reasoning models (TRM, HRM and successors) on PyTorch Lightning."""

from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.network import NetworkConfig, ReasoningNetwork

__all__ = ["NetworkConfig", "OptimConfig", "ReasoningNetwork", "RecursiveReasoner"]
__version__ = "0.1.0"
