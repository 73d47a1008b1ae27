"""The `rr` command line: `rr fit|validate|test|predict --config configs/<recipe>.yaml` on LightningCLI, and
`rr solve --ckpt_path ... --puzzle ...` for single puzzles (`recursive_reasoning/solve.py`), and `rr import` to convert a
checkpoint of the public TRM / HRM code (`recursive_reasoning/import_checkpoint.py`).

The model is always `RecursiveReasoner`; the recursion method is its `strategy` (class_path + init_args) and the data
module is chosen by class_path. The data module's vocabulary, sequence length and puzzle-id count are linked into the
model, so a recipe never states them twice. Unknown keys are rejected by jsonargparse.
"""

from __future__ import annotations

import importlib
import sys
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


_COMMANDS = {"solve": "recursive_reasoning.solve", "import": "recursive_reasoning.import_checkpoint"}


def main(args: list[str] | None = None) -> None:
    """Entry point of the `rr` console script: LightningCLI's subcommands, plus `rr solve` and `rr import`."""
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in _COMMANDS:  # plain argparse commands beside LightningCLI's
        status = importlib.import_module(_COMMANDS[argv[0]]).main(argv[1:])
        if status:
            raise SystemExit(status)
        return
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
