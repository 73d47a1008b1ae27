"""The `rr` command line: `rr fit|validate|test|predict --config configs/<recipe>.yaml` on LightningCLI, and
`rr solve --ckpt_path ... --puzzle ...` for single puzzles (`recursive_reasoning/solve.py`), `rr import` to convert a
checkpoint of the public TRM / HRM / RSM code (`recursive_reasoning/import_checkpoint.py`), and `rr bakeoff` to train
and compare a grid of recipes x seeds (`recursive_reasoning/bakeoff.py`).

The model is always `RecursiveReasoner`; the recursion method is its `strategy` (class_path + init_args) and the data
module (a `datamodules.base.PuzzleDataModule`) is chosen by class_path. The vocabulary, sequence length and
puzzle-id count its contract declares are linked into the model, so a recipe never states them twice. Unknown keys
are rejected by jsonargparse.

With `--ckpt_path`, the checkpoint's model hyperparameters fill every model option the run leaves at its default.
Options the run sets (config file or command line) take effect where they can: the optimiser while fitting, the
strategy's options while evaluating, test-time compute always; a different architecture, strategy class or training
method is refused, naming each key with both values. The saved config.yaml records the merged values, i.e. what ran.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import re
import sys
import typing
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelSummary, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from datamodules.base import PuzzleDataModule
from recursive_reasoning.callbacks import PredictionWriter
from recursive_reasoning.checkpoint_io import AtomicCheckpointIO
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig

_LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
_COMMANDS = {"solve": "recursive_reasoning.solve", "import": "recursive_reasoning.import_checkpoint",
             "bakeoff": "recursive_reasoning.bakeoff"}
_ALL_COMMANDS = (*_LIGHTNING_COMMANDS, *_COMMANDS)
# PuzzleDataModule properties linked into the RecursiveReasoner arguments of the same names
TASK_SHAPE = ("vocab_size", "seq_len", "num_puzzle_ids")
_DESCRIPTION = (
    "rr: tiny recursive reasoning models. Commands: fit, validate, test, predict (below), and "
    "`rr solve --ckpt_path CKPT --puzzle ...` (solve single puzzles; rr solve --help), "
    "`rr import --source STEP --output OUT.ckpt` (convert a reference TRM/HRM/RSM checkpoint; rr import --help), "
    "`rr bakeoff GRID.yaml` (train and test a grid of recipes x seeds, results and plots; rr bakeoff --help)."
)
# Model options a checkpoint fixes: a run that sets them differently would not be the trained model.
_ARCHITECTURE = ("network.", "supervision_schedule")
# Lightning output that is noise for every rr command; each matched exactly, nothing else is hidden.
_NOISY_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's _pytree on torch >= 2.10, not actionable
    r"You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage",  # rr test + EMA
    r"The dirpath has changed from .* won't be reloaded\. Only `best_model_path` will be reloaded\.",  # resumed fits
)
_LITLOGGER_TIP = "💡 Tip: For seamless cloud logging and experiment tracking"


class _DropLitLoggerTip(logging.Filter):
    """Drops Lightning's litlogger advertisement, logged on every trainer start (Lightning has no switch for it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LITLOGGER_TIP)


def _silence_startup_noise() -> None:
    """Install the targeted filters for Lightning's per-command noise (see _NOISY_WARNINGS)."""
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLitLoggerTip) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropLitLoggerTip())


class _SummaryWithoutFlops(ModelSummary):
    """Lightning's model summary without its FLOPs column and "Total Flops" line: always 0 here (no example input)."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *columns)
        logging.getLogger(ModelSummary.__module__).info("\n" + table.rsplit("\n", 1)[0])  # without "Total Flops"


class _ReasoningParser(LightningArgumentParser):
    """LightningArgumentParser whose errors put the reason first and the usage pointer after, not a usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        key = re.search(r'Parser key "([^"]+)"', message)
        reasons = [line.strip() for line in message.splitlines() if re.search(r"is not accepted|not expected", line)]
        head = f"{key.group(1) + ': ' if key else ''}{reasons[0]}" if reasons else message
        details = f"\ndetails: {message}" if reasons else ""
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {head}\n{prog} --help lists every option.{details}\n")
        self.exit(2)


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into {'a.b.c': value}; lists and tuples become lists (YAML and checkpoints differ)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def _flat(tree: Any) -> dict[str, Any]:
    """_leaves without `init_args` in the keys: 'strategy.cycles' for a strategy's class_path + init_args."""
    return {key.replace(".init_args", ""): value for key, value in _leaves(tree).items()}


def _plain(value: Any) -> Any:
    """A parsed config value (jsonargparse Namespaces) as plain dicts."""
    return value.as_dict() if hasattr(value, "as_dict") else value


class ReasoningCLI(LightningCLI):
    """LightningCLI with the data module's task shape linked into the model and checkpoint hparams merged, not
    copied over the run's options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._argv: list[str] = []
        super().__init__(*args, parser_class=_ReasoningParser, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse as Lightning does, remembering the arguments to tell which model options the command line names."""
        self._argv = [str(a) for a in (sys.argv[1:] if args is None else args)] if not isinstance(args, dict) else []
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the task shape into the model and keep Trainer's integer-or-fraction options integers."""
        # The task's shape comes from the data module's contract: PuzzleDataModule declares vocab_size, seq_len and
        # num_puzzle_ids as abstract properties, so every data module `--data` accepts has them, read once it is
        # instantiated and passed to the RecursiveReasoner arguments of the same names.
        for name in TASK_SHAPE:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        # Trainer's `Optional[Union[int, float]]` arguments reach jsonargparse as Union[float, int, None] (typing's
        # Union cache), so `--trainer.limit_test_batches=1` became the fraction 1.0; an integer must stay a count.
        for action in parser._actions:
            hint = getattr(action, "_typehint", None)
            if action.dest.startswith("trainer.") and typing.get_args(hint)[:2] == (float, int):
                action._typehint = typing.Union[(int, float, *typing.get_args(hint)[2:])]

    def _named_on_command_line(self) -> list[str]:
        """Model keys the command line sets, as dotted paths below `model` without `init_args` ('' for all)."""
        keys = []
        for token in self._argv:
            if token == "--model" or token.startswith(("--model=", "--model.")):
                keys.append(token[2:].split("=", 1)[0].replace(".init_args", "").removeprefix("model").lstrip("."))
        return keys

    def _parse_ckpt_path(self) -> None:
        """Merge the checkpoint's model hyperparameters into the config (see the module docstring); Lightning's own
        version copies them over everything the run set, silently."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        _check_ckpt_path(ckpt_path)
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        saved = torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True).get("hyper_parameters") or {}
        saved = {k: v for k, v in saved.items() if not k.startswith("_")}
        if not saved:
            return
        given = _plain(self.config[subcommand].get("model")) or {}
        defaults = _plain(self._subcommand_parsers[subcommand].get_defaults().get("model")) or {}
        for name, config in (("network", NetworkConfig), ("optim", OptimConfig)):  # None defaults: the dataclass's
            defaults[name] = defaults.get(name) or asdict(config())
        strategy = given.get("strategy")
        if strategy:
            strategy["class_path"] = _resolved(strategy["class_path"])
        if strategy and strategy["class_path"] == _resolved(saved.get("strategy", {}).get("class_path", "")):
            defaults["strategy"] = {"class_path": None, "init_args": _init_defaults(strategy["class_path"])}
        saved_flat, given_flat, default_flat = _flat(saved), _flat(given), _flat(defaults)
        named = self._named_on_command_line()
        merged, conflicts = dict(saved_flat), []
        for key, value in given_flat.items():
            if key not in saved_flat or value == saved_flat[key]:
                continue
            on_line = any(n == "" or key == n or key.startswith(n + ".") for n in named)
            if not on_line and key in default_flat and value == default_flat[key]:
                continue  # left at its default: the checkpoint's value is the model's
            method = key.startswith("strategy.") and not key.startswith("strategy.eval_")
            if key.startswith(_ARCHITECTURE) or key == "strategy.class_path" or (method and subcommand == "fit"):
                conflicts.append(f"model.{key}: checkpoint {saved_flat[key]!r}, this run {value!r}")
            else:
                merged[key] = value
        if conflicts:
            raise SystemExit(
                f"error: --ckpt_path {ckpt_path} was trained with other model options than this run sets: "
                + "; ".join(conflicts) + ".\nDrop these options (or use the config.yaml saved with the checkpoint) to "
                "use the checkpoint's values; to train a different model, start `rr fit` without --ckpt_path."
            )
        model = _unflatten(merged)
        if "strategy" in model:
            model["strategy"] = {"class_path": model["strategy"].pop("class_path"), "init_args": model["strategy"]}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    def instantiate_classes(self) -> None:
        """Build the data module, model and trainer; a constructor's refusal of a value (its ValueError) is printed as
        its own message, not inside jsonargparse's traceback and Union-subtype dump."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            root = error
            while root.__cause__ is not None:
                root = root.__cause__
            if root is error or not isinstance(root, ValueError):
                raise
            raise SystemExit(f"error: {root}") from None

    def before_instantiate_classes(self) -> None:
        """Say so when an evaluation runs without a checkpoint: it measures the untrained, randomly initialised model;
        honour `--trainer.enable_progress_bar=false` over a recipe's progress-bar callback."""
        self._drop_disabled_progress_bars()
        subcommand = self.config.get("subcommand")
        if subcommand in ("validate", "test", "predict") and not self.config[subcommand].get("ckpt_path"):
            rank_zero_warn(
                f"rr {subcommand} without --ckpt_path evaluates an UNTRAINED model (random initial weights): an "
                "untrained baseline. Pass --ckpt_path runs/.../last.ckpt to evaluate a trained one."
            )

    def _drop_disabled_progress_bars(self) -> None:
        """With `trainer.enable_progress_bar: false`, remove the progress-bar callbacks (e.g. a GPU recipe's
        TQDMProgressBar) from the parsed config, and nothing else: Lightning refuses a progress-bar callback beside the
        disabled flag, and the flag says no bar. The saved config.yaml then records what ran."""
        trainer = self._get(self.config, "trainer")
        if trainer is None or trainer.get("enable_progress_bar") is not False or trainer.get("callbacks") is None:
            return
        callbacks = trainer.callbacks if isinstance(trainer.callbacks, list) else [trainer.callbacks]
        dropped = [callback for callback in callbacks if _is_progress_bar(callback)]
        if dropped:
            trainer.callbacks = [callback for callback in callbacks if not _is_progress_bar(callback)]
            names = ", ".join(getattr(c, "class_path", type(c).__name__).rpartition(".")[2] for c in dropped)
            rank_zero_info(f"--trainer.enable_progress_bar=false: the configured {names} is left out")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the trainer; checkpoints are written atomically unless a custom CheckpointIO was configured, and the
        model summary leaves out its always-zero FLOPs; `rr predict` writes its predictions (`PredictionWriter`);
        the default logger is Lightning's default TensorBoardLogger without its placeholder `hp_metric` scalar."""
        config = self._get(self.config_init, "trainer", default={})
        if "logger" not in kwargs and config.get("logger") in (None, True) and not config.get("barebones"):
            kwargs["logger"] = TensorBoardLogger(save_dir=config.get("default_root_dir") or Path.cwd(),
                                                 version=SLURMEnvironment.job_id(), default_hp_metric=False)
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for i, callback in enumerate(trainer.callbacks):
            if type(callback) is ModelSummary:
                trainer.callbacks[i] = _SummaryWithoutFlops(max_depth=callback._max_depth)
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks):
            trainer.callbacks.append(PredictionWriter())  # else the predictions would go nowhere the user can see
        return trainer


_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")  # Lightning's own --ckpt_path values


def _check_ckpt_path(ckpt_path: str | None) -> None:
    """Refuse a --ckpt_path that names no file, before anything is built (Lightning would fail with a traceback)."""
    if not ckpt_path or ckpt_path in _CKPT_KEYWORDS or "://" in str(ckpt_path):
        return
    path = Path(ckpt_path)
    if path.is_dir():
        raise SystemExit(f"error: --ckpt_path {path} is a directory; give the checkpoint file inside it, e.g. "
                         f"{path / 'checkpoints' / 'last.ckpt'}")
    if not path.exists():
        raise SystemExit(f"error: --ckpt_path {path} does not exist; a run's checkpoints are in "
                         "runs/<recipe>/latest/checkpoints/ (last.ckpt)")


def _is_progress_bar(callback: Any) -> bool:
    """Whether a parsed trainer callback (a class_path Namespace, or an instance) is a Lightning progress bar."""
    if isinstance(callback, ProgressBar):
        return True
    class_path = getattr(callback, "class_path", None)
    if not isinstance(class_path, str):
        return False
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return isinstance(cls, type) and issubclass(cls, ProgressBar)


def _resolved(class_path: str) -> str:
    """The full module.Class path of a class path ('strategies.TRM' -> 'strategies.trm.TRM'); as given if not found."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path
    return f"{cls.__module__}.{cls.__qualname__}"


def _init_defaults(class_path: str) -> dict[str, Any]:
    """The constructor defaults of a strategy class (what a config that names the class without a value gets)."""
    module, _, name = class_path.rpartition(".")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    return {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of _leaves: {'a.b': 1} -> {'a': {'b': 1}}."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _check_config_files(argv: list[str]) -> None:
    """Refuse a --config file that is not valid YAML, naming the file and the line (jsonargparse names neither)."""
    for i, token in enumerate(argv):
        if token in ("-c", "--config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif token.startswith("--config="):
            path = token.split("=", 1)[1]
        else:
            continue
        if not Path(path).is_file():
            continue
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error)
            raise SystemExit(f"error: {path}{where}: invalid YAML ({problem}). Fix the file's syntax there.") from None


def main(args: list[str] | None = None) -> None:
    """Entry point of the `rr` console script: LightningCLI's subcommands, plus `rr solve`, `rr import` and
    `rr bakeoff`."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in _COMMANDS:  # plain argparse commands beside LightningCLI's
        status = importlib.import_module(_COMMANDS[argv[0]]).main(argv[1:])
        if status:
            raise SystemExit(status)
        return
    if argv[:1] == ["--version"]:
        print(f"rr {importlib.metadata.version('rr')}")
        return
    if argv and not argv[0].startswith("-") and argv[0] not in _ALL_COMMANDS:
        close = difflib.get_close_matches(argv[0], _ALL_COMMANDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SystemExit(f"error: unknown command '{argv[0]}'; {hint}the commands are {', '.join(_ALL_COMMANDS)}.")
    _check_config_files(argv)
    _silence_startup_noise()
    ReasoningCLI(
        RecursiveReasoner,
        PuzzleDataModule,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"description": _DESCRIPTION},
    )


if __name__ == "__main__":
    main()
