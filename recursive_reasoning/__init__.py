"""rr: recursive reasoning models (TRM, HRM and successors) on PyTorch Lightning.

The package root imports nothing, so every floor loads on its own: `recursive_reasoning.core` (network, layers,
losses, atomic writes) below `strategies` and `datamodules`, and the Lightning module, callbacks and commands above
them (`recursive_reasoning.module`, `.cli`, `.solve`, ...). See docs/architecture.md.
"""

__version__ = "0.1.0"
