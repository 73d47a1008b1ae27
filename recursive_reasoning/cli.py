"""The `rr` command line: `rr fit|validate|test|predict --config configs/<recipe>.yaml` on LightningCLI.

The model is always `RecursiveReasoner`; the recursion method is its `strategy` (class_path + init_args) and the data
module is chosen by class_path. The data module's vocabulary, sequence length and puzzle-id count are linked into the
model, so a recipe never states them twice. Unknown keys are rejected by jsonargparse.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from recursive_reasoning.checkpoint_io import AtomicCheckpointIO
from recursive_reasoning.module import RecursiveReasoner


class ReasoningCLI(LightningCLI):
    """LightningCLI with the data module's task shape linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("vocab_size", "seq_len", "num_puzzle_ids"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the trainer; checkpoints are written atomically unless a custom CheckpointIO was configured."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def main(args: list[str] | None = None) -> None:
    """Entry point of the `rr` console script."""
    ReasoningCLI(
        RecursiveReasoner,
        LightningDataModule,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
