"""`rr import`: turn a checkpoint of the public TRM / HRM / RSM code into an rr checkpoint.

    rr import --source checkpoints/<project>/<run>/step_65104 --config checkpoints/<project>/<run>/all_config.yaml \\
        --seq_len 81 --output trm_sudoku.ckpt --puzzle_kind sudoku
    rr import --source step_65104 --output trm.ckpt --method trm --H_cycles 3 --L_cycles 6 --halt_max_steps 16
    rr import --source ckpt_step_1000.pth --output rsm.ckpt --H_cycles 8 --L_cycles 12

RSM (navidivan/rsm) saves a dict whose `model_state` holds `model.core.layers.0...` (its LossHead, no torch.compile),
with the run's config under `config`, which supplies the settings when no --config is given. RSM has no Q head and
ties its output head to the token embedding; its H_cycles / L_cycles become the strategy's evaluation depth.

The reference training script saves `torch.save(model.state_dict())` of its torch.compile'd loss head, so the names
read `_orig_mod.model.inner.L_level.layers.0.self_attn.qkv_proj.weight` (`model.inner.` without compile, `inner.` for
the bare model) and the puzzle-embedding table is the buffer `puzzle_emb.weights`; it writes the run's settings to
`all_config.yaml` beside the checkpoints. The weights show the width, vocabulary, layer counts, the mixer (attention or
`mlp_t`), the puzzle table (ids x width) and HRM's second stack; the token-MLP mixer or a learned position table also
shows the number of positions. The config file or flags supply the rest: the recursion (H_cycles, L_cycles,
halt_max_steps), and for attention models num_heads, pos_encodings and seq_len (the reference reads seq_len from the
data set's dataset.json). Weight names: `recursive_reasoning.reference_names` (the one the parity tests use); what
the tensors show: `recursive_reasoning.reference_layout`.

The output loads with `RecursiveReasoner.load_from_checkpoint(path, weights_only=True)` and `rr test --ckpt_path`;
with `--puzzle_kind` (a registered kind such as sudoku, maze or arc, or a kind's class path; `--puzzle_format` is the
older name) it also says what it solves, so `rr solve --ckpt_path` takes it. The options are generated from
`import_checkpoint` and `ReferenceSettings`, so --help and the checks are those of the code.
"""

from __future__ import annotations

import importlib
import json
import pickle
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse import ArgumentParser
from torch import Tensor

from datamodules.kinds import PuzzleKind
from recursive_reasoning.checkpoint_io import AtomicCheckpointIO
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.reference_layout import MissingReferenceSettings, infer_reference_config, read_reference_layout
from recursive_reasoning.reference_names import (
    TRM_DEFAULT_PUZZLE_EMB_LEN,
    load_reference_weights,
    network_config_from_reference,
)
from recursive_reasoning.signature_cli import add_signature, signature_parser
from strategies import HRM, RSM, TRM, RecursionStrategy

__all__ = [
    "ReferenceSettings",
    "build_parser",
    "convert_reference_checkpoint",
    "import_checkpoint",
    "kind_class",
    "load_reference_checkpoint",
    "load_reference_state_dict",
    "main",
    "read_reference_config",
]

Method = Literal["trm", "hrm", "rsm"]
LossType = Literal["stablemax_cross_entropy", "softmax_cross_entropy", "stablemax", "softmax"]
METHODS: dict[str, type[RecursionStrategy]] = {"trm": TRM, "hrm": HRM, "rsm": RSM}
_MODEL_MODULES = {"trm": "trm", "hrm": "hrm", "hrm_act_v1": "hrm", "rsm": "rsm"}  # arch.name modules of the models
_LOSS_TYPES = {name: name.removesuffix("_cross_entropy") for name in get_args(LossType)}  # -> strategies' loss_type
# Other accepted flag names: the rr strategies' names of the reference settings.
SETTING_ALIASES = {"cycles": "H_cycles", "latent_steps": "L_cycles", "supervision_steps": "halt_max_steps",
                   "halt_exploration": "halt_exploration_prob", "p_detach": "prob_detach_prev_H",
                   "positions": "pos_encodings"}
_RECURSION = {
    "H_cycles": "outer cycles per segment, TRM T / HRM H",
    "L_cycles": "latent updates per cycle, TRM n / HRM L",
    "halt_max_steps": "supervision segments N_sup",
}
_RSM_RECURSION = {
    "H_cycles": "outer steps at evaluation (RSM H)",
    "L_cycles": "latent updates per outer step (RSM L)",
}
# all_config.yaml top-level training settings -> OptimConfig fields (betas come from beta1 / beta2).
_OPTIM = {"lr": "lr", "weight_decay": "weight_decay", "lr_warmup_steps": "warmup_steps",
          "lr_min_ratio": "lr_min_ratio", "puzzle_emb_lr": "puzzle_emb_lr",
          "puzzle_emb_weight_decay": "puzzle_emb_weight_decay"}


def load_reference_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a reference checkpoint file (a plain state dict; a dict holding one under 'state_dict' or, as
    RSM saves it, 'model_state').

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a PyTorch file of tensors, or is already an rr checkpoint.
    """
    return load_reference_checkpoint(path)[0]


def load_reference_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors of a reference checkpoint file and the run settings saved beside them (RSM's `config`; else {}).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a PyTorch file of tensors, or is already an rr checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a PyTorch checkpoint readable as tensors ({reason})") from None
    if isinstance(data, Mapping) and "hyper_parameters" in data and "state_dict" in data:
        raise ValueError(f"{path} is already an rr checkpoint (it has hyper_parameters); there is nothing to import")
    settings: dict[str, Any] = {}
    if isinstance(data, Mapping) and data and not all(isinstance(v, Tensor) for v in data.values()):
        if isinstance(data.get("config"), Mapping):
            settings = _settings_of(data["config"], f"the config saved in {path}")
        data = data.get("state_dict", data.get("model_state"))
    if not isinstance(data, Mapping) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(
            f"{path} holds no state dict of tensors; expected the file the reference's pretrain.py writes "
            "(torch.save(model.state_dict()), e.g. checkpoints/<project>/<run>/step_<N>; RSM: a dict with "
            "'model_state')"
        )
    return {str(k): v for k, v in data.items()}, settings


def _resolve_interpolations(settings: dict[str, Any], scope: Mapping[str, Any]) -> None:
    """Replace simple OmegaConf references (`${.hidden_size}`, `${hidden_size}`) by the value they name."""
    for key, value in settings.items():
        if isinstance(value, str) and "${" in value:
            name = value.strip()[2:-1].lstrip(".") if value.strip().endswith("}") else ""
            if not name.isidentifier() or name not in scope or isinstance(scope[name], str):
                raise ValueError(
                    f"config value {key}: {value!r} is an interpolation that cannot be resolved here; give the "
                    "resolved value (the all_config.yaml the reference writes beside its checkpoints has them)"
                )
            settings[key] = scope[name]


def read_reference_config(path: str | Path) -> dict[str, Any]:
    """Settings from a reference config: the run's `all_config.yaml` (its `arch:` section merged over the top-level
    training settings) or a YAML / JSON mapping of the model's constructor kwargs. `arch.loss.loss_type` becomes
    `loss_type`.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a YAML / JSON mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"config {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                         f"{err}") from None
    if isinstance(data, dict):
        return _settings_of(data, f"config {path}")
    raise ValueError(f"config {path} is not a mapping of settings (expected all_config.yaml or arch kwargs)")


def _settings_of(data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A run config's `arch:` section merged over its top-level training settings; `arch.loss.loss_type` becomes
    `loss_type`. `what` names the config in errors."""
    arch = data.get("arch")
    settings = {str(k): v for k, v in data.items() if k != "arch"}
    if isinstance(arch, Mapping):
        settings.update(arch)
    try:
        _resolve_interpolations(settings, settings)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    loss = settings.get("loss")
    if isinstance(loss, Mapping) and "loss_type" in loss:
        settings.setdefault("loss_type", loss["loss_type"])
    return settings


def _method_of_name(name: Any) -> str | None:
    """'trm' / 'hrm' / 'rsm' from the config's model name ('recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1',
    'recursive_reasoning.rsm@RSM').

    Raises:
        ValueError: For another model of the reference repositories (e.g. trm_singlez): its weights may carry the
            same names but mean something else.
    """
    if not isinstance(name, str):
        return None
    module = name.split("@")[0].rsplit(".", 1)[-1]
    if module not in _MODEL_MODULES:
        raise ValueError(
            f"the config's model {name!r} is not the reference TRM, HRM or RSM (recursive_reasoning.trm@..., "
            "recursive_reasoning.hrm@..., sapientinc's hrm.hrm_act_v1@... or recursive_reasoning.rsm@RSM); other "
            "variants cannot be imported"
        )
    return _MODEL_MODULES[module]


@dataclass
class ReferenceSettings:
    """Reference settings (override --config; names as in all_config.yaml). None: from the config or the weights.

    Args:
        H_cycles: Outer cycles per segment (TRM T / HRM H; RSM: outer steps at evaluation).
        L_cycles: Latent updates per cycle (TRM n / HRM L / RSM L).
        halt_max_steps: Supervision segments N_sup (TRM / HRM).
        halt_exploration_prob: Halting exploration probability (training only; default 0.1).
        prob_detach_prev_H: RSM: probability of the one-step gradient window (training only; default 0.5).
        loss_type: Token loss (default stablemax_cross_entropy).
        seq_len: Puzzle tokens per example (81 Sudoku 9x9, 900 Maze 30x30 / ARC).
        num_heads: Attention heads (not shown by the weights).
        pos_encodings: Position encoding of an attention model.
        puzzle_emb_len: TRM puzzle-prefix tokens (reference default 16).
        expansion: SwiGLU expansion (default: one that fits the weights).
    """

    H_cycles: int | None = None
    L_cycles: int | None = None
    halt_max_steps: int | None = None
    halt_exploration_prob: float | None = None
    prob_detach_prev_H: float | None = None
    loss_type: LossType | None = None
    seq_len: int | None = None
    num_heads: int | None = None
    pos_encodings: Literal["rope", "learned", "none"] | None = None
    puzzle_emb_len: int | None = None
    expansion: float | None = None


def kind_class(name: str) -> type[PuzzleKind]:
    """A puzzle kind by its registered name (`PuzzleKind.registry`: sudoku, maze, arc, ...) or its class path
    ('package.module.Class').

    Raises:
        ValueError: If the name is neither, or the class is not a PuzzleKind.
    """
    cls: Any = PuzzleKind.registry.get(name)
    if cls is None and "." in name:
        module_name, _, class_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"puzzle kind {name!r} cannot be imported ({err}); install the package that defines it, "
                             "or put its module on PYTHONPATH") from None
    if not (isinstance(cls, type) and issubclass(cls, PuzzleKind)):
        raise ValueError(f"unknown puzzle kind {name!r}; give one of {', '.join(sorted(PuzzleKind.registry))} or the "
                         "class path of a PuzzleKind (package.module.Class)")
    return cls


def _kind_of_shape(name: str, seq_len: int, vocab_size: int) -> dict[str, Any]:
    """The description `rr solve` reads: the kind `name` that fits a model of seq_len positions and vocab_size
    tokens (`PuzzleKind.from_shape`)."""
    try:
        return kind_class(name).from_shape(seq_len, vocab_size).describe()
    except ValueError as err:
        raise ValueError(f"--puzzle_kind {name}: {err}") from None


def convert_reference_checkpoint(
    state_dict: Mapping[str, Tensor],
    settings: Mapping[str, Any],
    method: str | None = None,
    puzzle_kind: str | None = None,
) -> dict[str, Any]:
    """Build an rr checkpoint (what `RecursiveReasoner.load_from_checkpoint` reads) from reference weights.

    Args:
        state_dict: Reference tensors under reference names (checkpoint prefixes allowed).
        settings: Reference settings (`read_reference_config`, flags): the recursion (H_cycles, L_cycles,
            halt_max_steps, halt_exploration_prob, RSM's prob_detach_prev_H, loss_type), what the weights cannot show
            (seq_len, num_heads, pos_encodings, puzzle_emb_len) and optionally the optimiser settings of
            all_config.yaml (lr, beta1, ...).
        method: 'trm', 'hrm' or 'rsm' to check against the weights (None: read from them).
        puzzle_kind: A registered kind name (sudoku, maze, arc) or a kind's class path: record what the model solves
            (for `rr solve`), the kind fitting the model's shape.

    Raises:
        ValueError: If the tensors are not a reference TRM/HRM/RSM model, settings are missing (all named at once) or
            contradict the weights.
    """
    layout = read_reference_layout(state_dict)
    found = layout.method
    shape = {"hrm": "two stacks (H_level and L_level)", "trm": "one shared stack (L_level only) and a Q head",
             "rsm": "one shared stack (core), no Q head and a tied output head"}[found]
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method is not None and method != found:
        raise ValueError(f"--method {method}, but the checkpoint has {shape}: it is a {found.upper()} checkpoint")
    named = _method_of_name(settings.get("name"))
    if named is not None and named != found:
        raise ValueError(f"the config describes {settings['name']!r} ({named.upper()}), but the checkpoint has "
                         f"{shape}: it is a {found.upper()} checkpoint; use the config of the run that wrote it")

    recursion = _RSM_RECURSION if found == "rsm" else _RECURSION
    missing = {k: why for k, why in recursion.items() if settings.get(k) is None}
    try:
        config = infer_reference_config(layout, settings)
    except MissingReferenceSettings as err:
        missing.update(err.missing)
    if missing:
        flags = " ".join(f"--{k} ..." for k in missing)
        raise MissingReferenceSettings(missing, f"Give the run's all_config.yaml (--config) or flags: {flags}")

    loss_type = settings.get("loss_type", "stablemax_cross_entropy")
    if loss_type not in _LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(_LOSS_TYPES)}")
    strategy: RecursionStrategy
    if found == "rsm":
        outer, latent = int(config["H_cycles"]), int(config["L_cycles"])
        strategy = RSM(h_schedule=[(0.0, max(2, outer))], l_schedule=[(0.0, latent)], h_test=outer, l_test=latent,
                       p_detach=float(config.get("prob_detach_prev_H", 0.5)), loss_type=_LOSS_TYPES[loss_type])
    else:
        strategy = METHODS[found](
            cycles=int(config["H_cycles"]),
            latent_steps=int(config["L_cycles"]),
            supervision_steps=int(config["halt_max_steps"]),
            halt_exploration=float(config.get("halt_exploration_prob", 0.1)),
            loss_type=_LOSS_TYPES[loss_type],
        )
    optim = {field: settings[key] for key, field in _OPTIM.items() if settings.get(key) is not None}
    if settings.get("beta1") is not None and settings.get("beta2") is not None:
        optim["betas"] = (float(settings["beta1"]), float(settings["beta2"]))
    network, vocab_size, seq_len, num_ids = network_config_from_reference(config, found)
    description = _kind_of_shape(puzzle_kind, seq_len, vocab_size) if puzzle_kind else None

    model = RecursiveReasoner(
        strategy=strategy, network=network, optim=OptimConfig(**optim), vocab_size=vocab_size, seq_len=seq_len,
        num_puzzle_ids=num_ids, supervision_schedule="carry", test_time=None,
    )
    load_reference_weights(model.net, state_dict)

    defaults = {"rms_norm_eps": config["rms_norm_eps"], "loss_type": loss_type}
    if isinstance(strategy, RSM):
        defaults["prob_detach_prev_H"] = strategy.p_detach
    else:
        defaults["halt_exploration_prob"] = strategy.halt_exploration
    if network.positions == "rope":
        defaults["rope_theta"] = config["rope_theta"]
    if not layout.hierarchical and layout.puzzle_emb_ndim and not (
        layout.num_positions is not None and settings.get("seq_len") is not None
    ):
        defaults["puzzle_emb_len"] = TRM_DEFAULT_PUZZLE_EMB_LEN
    assumed = [f"{k}={v}" for k, v in defaults.items() if settings.get(k) is None]
    record: dict[str, Any] = {"method": found, "reference_config": config, "assumed_defaults": assumed,
                              "num_parameters": model.net.num_parameters()}
    if description is not None:
        record["puzzle_kind"] = description
    checkpoint: dict[str, Any] = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "rr_import": record,
    }
    model.on_save_checkpoint(checkpoint)
    return checkpoint


def import_checkpoint(
    source: str | Path,
    output: str | Path,
    config: str | Path | None = None,
    method: Method | None = None,
    overrides: Mapping[str, Any] | None = None,
    puzzle_kind: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Convert the reference checkpoint `source` into the rr checkpoint `output` (written atomically).

    Args:
        source: The reference checkpoint file (a training checkpoint `step_<N>`, RSM's `.pth`, or any file of a
            reference state dict).
        output: Where to write the rr checkpoint (e.g. trm_sudoku.ckpt).
        config: The run's all_config.yaml, or a YAML / JSON of the model's arch kwargs (RSM's checkpoint holds its
            own).
        method: trm, hrm or rsm, checked against the weights (None: read from them).
        overrides: Reference settings that replace the config's (None values are ignored).
        puzzle_kind: Record what the model solves, so rr solve can use it: a registered kind (sudoku, maze, arc) or
            a kind's class path; the kind's arguments come from the model's shape.
        force: Overwrite an existing output.

    Returns:
        The checkpoint that was written.

    Raises:
        FileNotFoundError: If source or config does not exist.
        FileExistsError: If output exists and force is not set.
        ValueError: If the source is not a reference checkpoint or settings are missing or contradict it.
    """
    source, output = Path(source), Path(output)
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise ValueError(f"the output {output} is the source checkpoint; write the rr checkpoint elsewhere")
    if output.is_dir():
        raise ValueError(f"{output} is a directory; give the checkpoint's file name")
    if output.exists() and not force:
        raise FileExistsError(f"{output} already exists; pass --force to overwrite it")
    state_dict, settings = load_reference_checkpoint(source)  # RSM saves its run config inside: the base
    if config is not None:
        settings.update(read_reference_config(config))
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    checkpoint = convert_reference_checkpoint(state_dict, settings, method, puzzle_kind)
    AtomicCheckpointIO().save_checkpoint(checkpoint, output)
    return checkpoint


def summary(checkpoint: Mapping[str, Any]) -> str:
    """One human-readable paragraph on an imported checkpoint."""
    hp, net = checkpoint["hyper_parameters"], checkpoint["hyper_parameters"]["network"]
    args = ", ".join(f"{k}={v}" for k, v in hp["strategy"]["init_args"].items())
    layers = f"{net['num_layers']}" if net["shared"] else f"{net['answer_layers']} H + {net['num_layers']} L"
    record = checkpoint.get("rr_import", {})
    text = (
        f"{hp['strategy']['class_path']}({args})\n"
        f"network: hidden {net['hidden_size']}, {layers} layers, {net['mixer']} mixing, positions {net['positions']}, "
        f"seq_len {hp['seq_len']} + {net['puzzle_emb_len']} puzzle-prefix tokens, vocab {hp['vocab_size']}, "
        f"{hp['num_puzzle_ids']} puzzle ids, {record.get('num_parameters', 0):,} parameters + the puzzle table"
    )
    if record.get("assumed_defaults"):
        text += f"\nreference defaults assumed (not in the config): {', '.join(record['assumed_defaults'])}"
    if "puzzle_kind" in record:
        text += f"\nsolves: {record['puzzle_kind']}"
    return text


def build_parser() -> ArgumentParser:
    """The `rr import` parser: the parameters of `import_checkpoint` and the fields of `ReferenceSettings`."""
    parser = signature_parser(
        "rr import",
        "Convert a checkpoint of the public TRM / HRM / RSM code (torch.save(model.state_dict()), names "
        "'_orig_mod.model.inner...'; RSM's dict with 'model_state', names 'model.core...') into an rr checkpoint. "
        "The weights give the architecture; --config (the run's all_config.yaml; RSM's checkpoint holds its own) or "
        "the reference settings below give the recursion and what the weights do not show.",
    )
    add_signature(parser, import_checkpoint, skip={"overrides"}, aliases={"puzzle_format": "puzzle_kind"})  # old name
    add_signature(parser, ReferenceSettings, aliases=SETTING_ALIASES)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rr import`; returns the exit status (errors are printed, not raised)."""
    values = build_parser().parse_args(argv).as_dict()
    settings = ReferenceSettings(**{field.name: values.pop(field.name) for field in fields(ReferenceSettings)})
    try:
        checkpoint = import_checkpoint(**values, overrides=asdict(settings))
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"rr import: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {values['output']}\n{summary(checkpoint)}")
    return 0
