"""Reading a trained rr checkpoint for use: verified, with the puzzle kind it solves, into a model in eval mode.

`load_trained` takes the model class as an argument, so the LightningModule itself (its checkpoint ensembles) and the
commands (`rr solve`) share one loader without an import cycle.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any, TypeVar

import torch

from datamodules.base import PuzzleDataModule
from datamodules.kinds import PuzzleKind, kind_from_description
from recursive_reasoning.checkpoint_io import verify_checkpoint

__all__ = ["KIND_KEYS", "checkpoint_kind", "load_trained", "read_checkpoint"]

KIND_KEYS = ("puzzle_kind", "puzzle_format")  # where data modules save their kind; "puzzle_format" in older rr


Model = TypeVar("Model", bound=torch.nn.Module)


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """The verified contents of an `rr` checkpoint (tensor checksums and finite weights checked).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not a readable rr checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} is not an rr checkpoint (no state_dict and hyper_parameters); train one with rr fit")
    verify_checkpoint(checkpoint, path)
    return checkpoint


def checkpoint_kind(checkpoint: dict[str, Any], path: str | Path) -> PuzzleKind:
    """The puzzle kind a checkpoint solves: its data module's saved description, with the rest of that module's
    saved state as context (ARC: the training run's puzzle-id map); else the recorded data module rebuilt."""
    description, context = None, {}
    for value in checkpoint.values():
        key = next((k for k in KIND_KEYS if isinstance(value, dict) and k in value), None)
        if key is not None:
            description = value[key]
            context = {k: v for k, v in value.items() if k not in KIND_KEYS}
    if description is None:
        description = _kind_from_datamodule_hparams(checkpoint.get("datamodule_hyper_parameters"))
    if description is None:
        raise ValueError(
            f"{path} does not say which puzzles it solves (no data-module state with a puzzle kind); it was "
            "written by an older rr, or without a data module. Retrain, or continue it for one step with rr fit"
        )
    return kind_from_description(description, **context)


def load_trained(path: str | Path, model_class: type[Model], device: str = "cpu") -> tuple[Model, PuzzleKind]:
    """The model of an `rr` checkpoint (built as `model_class(**hyper_parameters)`, in eval mode on `device`) and
    the puzzle kind it solves."""
    checkpoint = read_checkpoint(path, device)
    kind = checkpoint_kind(checkpoint, path)
    model = model_class(**checkpoint["hyper_parameters"])
    model.on_load_checkpoint(checkpoint)  # type: ignore[operator]
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), kind


def _kind_from_datamodule_hparams(hparams: Any) -> dict[str, Any] | None:
    """The puzzle kind of the data module LightningCLI recorded (its class path and arguments), if it has one."""
    if not isinstance(hparams, dict) or "_class_path" not in hparams:
        return None
    module_name, _, class_name = str(hparams["_class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(cls, type) and issubclass(cls, PuzzleDataModule)):
            return None
        datamodule = cls(**{k: v for k, v in hparams.items() if not k.startswith("_")})
    except (ImportError, AttributeError, TypeError, ValueError):  # then the caller's clear error applies
        return None
    kind = datamodule.puzzle_kind
    return kind.describe() if kind is not None else None
