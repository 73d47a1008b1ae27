"""The ground floor: the weight-shared network, its layers, the losses and atomic file writes.

Nothing here imports from rr above it (strategies, data modules, the Lightning module or the commands).
"""

from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork

__all__ = ["NetworkConfig", "ReasoningNetwork"]
