"""Every recipe against the values its source fixes: the reference repository's README command, config or code.

Each recipe parses through the real CLI parser (`rr fit --config ... --print_config`), so defaults count too; a row
names the source of its value, as the recipe's YAML header does.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from recursive_reasoning.cli import main

ROOT = Path(__file__).resolve().parents[1]

RSM_README = "navidivan/rsm README.md"
HRM_README = "sapientinc/HRM README.md"
TRM_README = "TinyRecursiveModels README.md"
RSM_CFG = "rsm config/cfg_pretrain.yaml"
HRM_CFG = "HRM config/cfg_pretrain.yaml"
TRM_CFG = "TRM config/cfg_pretrain.yaml"

# The TRM-family values shared by the TRM and CGAR recipes (TinyRecursiveModels config defaults).
TRM_DEFAULTS: list[tuple[str, Any, str]] = [
    ("data.init_args.batch_size", 768, f"{TRM_CFG} global_batch_size"),
    ("model.optim.warmup_steps", 2000, f"{TRM_CFG} lr_warmup_steps"),
    ("model.optim.lr_min_ratio", 1.0, f"{TRM_CFG} lr_min_ratio"),
    ("model.optim.betas", [0.9, 0.95], f"{TRM_CFG} beta1, beta2"),
    ("callbacks.EMA.decay", 0.999, f"{TRM_CFG} ema_rate, README ema=True"),
    ("model.strategy.init_args.supervision_steps", 16, "TRM config/arch/trm.yaml halt_max_steps"),
    ("model.strategy.init_args.halt_exploration", 0.1, "TRM config/arch/trm.yaml halt_exploration_prob"),
    ("model.strategy.init_args.loss_type", "stablemax", "TRM config/arch/trm.yaml loss_type"),
    ("model.network.hidden_size", 512, "TRM config/arch/trm.yaml hidden_size"),
    ("model.network.num_heads", 8, "TRM config/arch/trm.yaml num_heads"),
    ("model.network.expansion", 4.0, "TRM config/arch/trm.yaml expansion"),
    ("model.network.num_layers", 2, f"{TRM_README} arch.L_layers=2"),
    ("model.network.puzzle_emb_len", 16, "TRM config/arch/trm.yaml puzzle_emb_len"),
    ("trainer.precision", "bf16-mixed", "TRM config/arch/trm.yaml forward_dtype bfloat16"),
    ("seed_everything", 0, "TRM pretrain.py seed 0"),
]
TRM_SUDOKU: list[tuple[str, Any, str]] = [
    ("data.init_args.subsample", 1000, f"{TRM_README}:54 --subsample-size 1000"),
    ("data.init_args.augmentations", 1000, f"{TRM_README}:54 --num-aug 1000"),
    ("model.optim.lr", 1e-4, f"{TRM_README}:101 lr=1e-4"),
    ("model.optim.puzzle_emb_lr", 1e-4, f"{TRM_README}:101 puzzle_emb_lr=1e-4"),
    ("model.optim.weight_decay", 1.0, f"{TRM_README}:101 weight_decay=1.0"),
    ("model.optim.puzzle_emb_weight_decay", 1.0, f"{TRM_README}:101 puzzle_emb_weight_decay=1.0"),
    ("model.strategy.init_args.cycles", 3, f"{TRM_README}:104 arch.H_cycles=3"),
    ("model.strategy.init_args.latent_steps", 6, f"{TRM_README}:104 arch.L_cycles=6"),
    ("trainer.max_steps", 65104, "TRM pretrain.py:219 int(50000 epochs * 1000 groups / 768)"),
    ("trainer.val_check_interval", 6510, f"{TRM_README}:100 eval_interval=5000 epochs = 6510 steps"),
]
TRM_ARC: list[tuple[str, Any, str]] = [
    ("model.optim.lr", 1e-4, f"{TRM_CFG} lr"),
    ("model.optim.puzzle_emb_lr", 1e-2, f"{TRM_CFG} puzzle_emb_lr"),
    ("model.optim.weight_decay", 0.1, f"{TRM_CFG} weight_decay"),
    ("model.optim.puzzle_emb_weight_decay", 0.1, f"{TRM_CFG} puzzle_emb_weight_decay"),
    ("model.strategy.init_args.cycles", 3, f"{TRM_README}:70 arch.H_cycles=3"),
    ("model.strategy.init_args.latent_steps", 4, f"{TRM_README}:70 arch.L_cycles=4"),
    ("model.network.mixer", "attention", "TRM config/arch/trm.yaml mlp_t False"),
    ("model.network.positions", "rope", "TRM config/arch/trm.yaml pos_encodings rope"),
    ("data.init_args.augmentations", 1000, "TRM dataset/build_arc_dataset.py num_aug 1000"),
    ("data.init_args.translate", True, "TRM dataset/build_arc_dataset.py translational augment of train"),
    ("data.init_args.origin_pair", True, "TRM dataset/build_arc_dataset.py no_aug_id"),
]
HRM_MODEL: list[tuple[str, Any, str]] = [
    ("model.strategy.class_path", "strategies.HRM", "sapientinc/HRM"),
    ("model.strategy.init_args.cycles", 2, "HRM config/arch/hrm_v1.yaml H_cycles"),
    ("model.strategy.init_args.latent_steps", 2, "HRM config/arch/hrm_v1.yaml L_cycles"),
    ("model.strategy.init_args.supervision_steps", 16, "HRM config/arch/hrm_v1.yaml halt_max_steps"),
    ("model.strategy.init_args.halt_exploration", 0.1, "HRM config/arch/hrm_v1.yaml halt_exploration_prob"),
    ("model.strategy.init_args.loss_type", "stablemax", "HRM config/arch/hrm_v1.yaml loss_type"),
    ("model.strategy.init_args.halt_loss_weight", 0.5, "HRM models/losses.py:101 0.5 * (q_halt + q_continue)"),
    ("model.network.num_layers", 4, "HRM config/arch/hrm_v1.yaml L_layers"),
    ("model.network.answer_layers", 4, "HRM config/arch/hrm_v1.yaml H_layers"),
    ("model.network.shared", False, "HRM: separate H and L modules"),
    ("model.network.hidden_size", 512, "HRM config/arch/hrm_v1.yaml hidden_size"),
    ("model.network.num_heads", 8, "HRM config/arch/hrm_v1.yaml num_heads"),
    ("model.network.mixer", "attention", "HRM: attention blocks"),
    ("model.network.positions", "rope", "HRM config/arch/hrm_v1.yaml pos_encodings"),
    ("model.network.puzzle_emb_len", 1, "HRM models/hrm/hrm_act_v1.py:116 ceil(512 / 512)"),
    ("model.optim.warmup_steps", 2000, f"{HRM_CFG} lr_warmup_steps"),
    ("model.optim.lr_min_ratio", 1.0, f"{HRM_CFG} lr_min_ratio"),
    ("model.optim.betas", [0.9, 0.95], f"{HRM_CFG} beta1, beta2"),
    ("callbacks.EMA", None, "HRM has no EMA"),
    ("seed_everything", 0, "HRM pretrain.py:67 seed 0"),
]
RSM_COMMON: list[tuple[str, Any, str]] = [
    ("model.strategy.class_path", "strategies.RSM", RSM_README),
    ("model.strategy.init_args.loss_type", "stablemax", "rsm config/arch/rsm.yaml loss_type"),
    ("model.strategy.init_args.eval_depth", "current", "rsm pretrain.py:542-559 evaluates at active H, L"),
    ("model.network.hidden_size", 512, "rsm config/arch/rsm.yaml hidden_size"),
    ("model.network.num_heads", 8, "rsm config/arch/rsm.yaml num_heads"),
    ("model.network.expansion", 4.0, "rsm config/arch/rsm.yaml expansion"),
    ("model.network.shared", True, "rsm models/recursive_reasoning/rsm.py one core"),
    ("model.network.puzzle_emb_len", 16, "rsm config/arch/rsm.yaml puzzle_emb_len"),
    ("model.network.puzzle_emb_dim", None, "rsm config/arch/rsm.yaml puzzle_emb_ndim = hidden_size"),
    ("model.network.tie_embeddings", True, "rsm models/recursive_reasoning/rsm.py:136 lm_head = embedding"),
    ("model.network.halt_head", False, "rsm: no Q head"),
    ("model.optim.lr", 1e-3, f"{RSM_README} lr=1e-3"),
    ("model.optim.puzzle_emb_lr", 1e-4, f"{RSM_README} puzzle_emb_lr=1e-4"),
    ("model.optim.puzzle_emb_weight_decay", 1.0, f"{RSM_README} puzzle_emb_weight_decay=1"),
    ("model.optim.betas", [0.8, 0.9], f"{RSM_CFG} beta1, beta2"),
    ("model.optim.lr_min_ratio", 0.02, f"{RSM_CFG} lr_min_ratio"),
    ("model.optim.warmup_steps", 2000, f"{RSM_CFG} lr_warmup_steps"),
    ("trainer.gradient_clip_val", 1.0, f"{RSM_README} grad_clip_norm=1.0"),
    ("trainer.precision", "bf16-mixed", "rsm config/arch/rsm.yaml forward_dtype bfloat16"),
    ("callbacks.EMA.decay", 0.999, f"{RSM_CFG} ema_rate, README ema=True"),
    ("callbacks.DepthGrowthCallback.moment_scale_on_growth", None, f"{RSM_README} optimizer_reset_scale=1 (x1)"),
    ("seed_everything", 0, f"{RSM_CFG} seed"),
]

RECIPES: dict[str, list[tuple[str, Any, str]]] = {
    "trm_sudoku": TRM_DEFAULTS + TRM_SUDOKU + [
        ("model.network.mixer", "mlp", f"{TRM_README}:102 arch.mlp_t=True"),
        ("model.network.positions", "none", f"{TRM_README}:102 arch.pos_encodings=none"),
    ],
    "trm_sudoku_att": TRM_DEFAULTS + TRM_SUDOKU + [
        ("model.network.mixer", "attention", "TRM config/arch/trm.yaml mlp_t False"),
        ("model.network.positions", "rope", "TRM config/arch/trm.yaml pos_encodings rope"),
    ],
    "trm_maze": TRM_DEFAULTS + [
        ("model.optim.lr", 1e-4, f"{TRM_README}:130 lr=1e-4"),
        ("model.optim.puzzle_emb_lr", 1e-4, f"{TRM_README}:130 puzzle_emb_lr=1e-4"),
        ("model.optim.weight_decay", 1.0, f"{TRM_README}:130 weight_decay=1.0"),
        ("model.optim.puzzle_emb_weight_decay", 1.0, f"{TRM_README}:130 puzzle_emb_weight_decay=1.0"),
        ("model.strategy.init_args.cycles", 3, f"{TRM_README}:132 arch.H_cycles=3"),
        ("model.strategy.init_args.latent_steps", 4, f"{TRM_README}:132 arch.L_cycles=4"),
        ("model.network.mixer", "attention", "TRM config/arch/trm.yaml mlp_t False"),
        ("model.network.positions", "rope", "TRM config/arch/trm.yaml pos_encodings rope"),
        ("data.init_args.augment", True, "TRM paper: 8 dihedral augments (the builder's default is none)"),
        ("trainer.max_steps", 65104, "TRM pretrain.py:219 int(50000 epochs * 1000 mazes / 768)"),
        ("trainer.val_check_interval", 6510, f"{TRM_README}:129 eval_interval=5000 epochs = 6510 steps"),
    ],
    "trm_arc1": TRM_DEFAULTS + TRM_ARC + [
        ("data.init_args.train_sets", ["arc-agi-1/training", "conceptarc/corpus"], f"{TRM_README}:41 subsets"),
        ("data.init_args.eval_set", "arc-agi-1/evaluation", f"{TRM_README}:42 --test-set-name evaluation"),
    ],
    "trm_arc2": TRM_DEFAULTS + TRM_ARC + [
        ("data.init_args.train_sets", ["arc-agi-2/training", "conceptarc/corpus"], f"{TRM_README}:48 subsets"),
        ("data.init_args.eval_set", "arc-agi-2/evaluation", f"{TRM_README}:49 --test-set-name evaluation2"),
    ],
    "cgar_sudoku": [row for row in TRM_DEFAULTS + TRM_SUDOKU if "cycles" not in row[0]] + [
        ("model.strategy.class_path", "strategies.CGAR", "spec 4b CGAR"),
        ("model.strategy.init_args.cycles", 3, "spec 4b: the full depth T = 3"),
        ("model.strategy.init_args.latent_steps", 6, "spec 4b: the full depth n = 6"),
        ("model.strategy.init_args.stage_bounds", [0.3, 0.6], "spec 4b: stages at rho 0.3, 0.6"),
        ("model.strategy.init_args.stage_depths", None, "spec 4b: (1, 2) -> (2, 4) -> (3, 6)"),
        ("model.strategy.init_args.eval_full_depth", True, "spec 4b: evaluation always at full depth"),
        ("model.strategy.init_args.weighting", "paper", "spec 4b: w_k = lambda^(k-1) / Z"),
        ("model.strategy.init_args.supervision_lambda", 0.7, "spec 4b: lambda = 0.7"),
        ("model.network.mixer", "mlp", f"{TRM_README}:102 arch.mlp_t=True"),
        ("model.network.positions", "none", f"{TRM_README}:102 arch.pos_encodings=none"),
    ],
    "hrm_sudoku": HRM_MODEL + [
        ("data.init_args.subsample", 1000, f"{HRM_README}:107 --subsample-size 1000"),
        ("data.init_args.augmentations", 1000, f"{HRM_README}:107 --num-aug 1000"),
        ("data.init_args.batch_size", 768, f"{HRM_CFG}:14 global_batch_size (README:143 keeps it)"),
        ("model.optim.lr", 1e-4, f"{HRM_README}:143 lr=1e-4"),
        ("model.optim.puzzle_emb_lr", 1e-4, f"{HRM_README}:143 puzzle_emb_lr=1e-4"),
        ("model.optim.weight_decay", 1.0, f"{HRM_README}:143 weight_decay=1.0"),
        ("model.optim.puzzle_emb_weight_decay", 1.0, f"{HRM_README}:143 puzzle_emb_weight_decay=1.0"),
        ("trainer.max_steps", 26041, "HRM pretrain.py:174 int(20000 epochs * 1000 / 768)"),
        ("trainer.val_check_interval", 2604, f"{HRM_README}:143 eval_interval=2000 epochs = 2604 steps"),
    ],
    "hrm_sudoku_laptop": HRM_MODEL + [
        ("data.init_args.subsample", 1000, f"{HRM_README}:74 --subsample-size 1000"),
        ("data.init_args.augmentations", 1000, f"{HRM_README}:74 --num-aug 1000"),
        ("data.init_args.batch_size", 384, f"{HRM_README}:77 global_batch_size=384"),
        ("model.optim.lr", 7e-5, f"{HRM_README}:77 lr=7e-5"),
        ("model.optim.puzzle_emb_lr", 7e-5, f"{HRM_README}:77 puzzle_emb_lr=7e-5"),
        ("model.optim.weight_decay", 1.0, f"{HRM_README}:77 weight_decay=1.0"),
        ("model.optim.puzzle_emb_weight_decay", 1.0, f"{HRM_README}:77 puzzle_emb_weight_decay=1.0"),
        ("trainer.max_steps", 52083, "HRM pretrain.py:174 int(20000 epochs * 1000 / 384)"),
        ("trainer.val_check_interval", 5208, f"{HRM_README}:77 eval_interval=2000 epochs = 5208 steps"),
    ],
    "hrm_maze": HRM_MODEL + [
        ("data.init_args.augment", False, "HRM dataset/build_maze_dataset.py aug default False (README:110)"),
        ("data.init_args.batch_size", 768, f"{HRM_CFG}:14 global_batch_size"),
        ("model.optim.lr", 1e-4, f"{HRM_README}:151 lr=1e-4"),
        ("model.optim.puzzle_emb_lr", 1e-4, f"{HRM_README}:151 puzzle_emb_lr=1e-4"),
        ("model.optim.weight_decay", 1.0, f"{HRM_README}:151 weight_decay=1.0"),
        ("model.optim.puzzle_emb_weight_decay", 1.0, f"{HRM_README}:151 puzzle_emb_weight_decay=1.0"),
        ("trainer.max_steps", 26041, "HRM pretrain.py:174 int(20000 epochs * 1000 / 768)"),
        ("trainer.val_check_interval", 2604, f"{HRM_README}:151 eval_interval=2000 epochs = 2604 steps"),
    ],
    "hrm_arc1": HRM_MODEL + [
        ("data.init_args.batch_size", 768, f"{HRM_CFG} global_batch_size"),
        ("model.optim.lr", 1e-4, f"{HRM_CFG} lr"),
        ("model.optim.puzzle_emb_lr", 1e-2, f"{HRM_CFG} puzzle_emb_lr"),
        ("model.optim.weight_decay", 0.1, f"{HRM_CFG} weight_decay"),
        ("model.optim.puzzle_emb_weight_decay", 0.1, f"{HRM_CFG} puzzle_emb_weight_decay"),
        ("data.init_args.train_sets", ["arc-agi-1/training", "conceptarc/corpus"], "HRM build_arc_dataset defaults"),
        ("data.init_args.eval_set", "arc-agi-1/evaluation", "HRM build_arc_dataset defaults"),
        ("data.init_args.augmentations", 1000, "HRM dataset/build_arc_dataset.py num_aug 1000"),
        ("data.init_args.origin_pair", True, "HRM dataset/build_arc_dataset.py:231 no_aug_id"),
    ],
    "rsm_sudoku": RSM_COMMON + [
        ("data.class_path", "datamodules.Sudoku", f"{RSM_README}:84 data/sudoku-extreme-1k-aug-all"),
        ("data.init_args.subsample", None, f"{RSM_README}:68 build defaults subsample_size None"),
        ("data.init_args.augmentations", 1, f"{RSM_README}:68 build defaults num_aug 0"),
        ("data.init_args.batch_size", 512, f"{RSM_README}:88 global_batch_size=512"),
        ("model.optim.weight_decay", 0.1, f"{RSM_README}:88 weight_decay=.1"),
        ("model.network.mixer", "mlp", f"{RSM_README}:89 arch.mlp_t=True"),
        ("model.network.positions", "none", f"{RSM_README}:89 arch.pos_encodings=none"),
        ("model.network.token_mlp_norm", "channels", "rsm models/recursive_reasoning/rsm.py:82"),
        ("model.network.num_layers", 1, f"{RSM_README}:90 arch.L_layers=1"),
        ("model.strategy.init_args.p_detach", 0.99, f"{RSM_README}:92 prob_detach_prev_H=0.99"),
        ("model.strategy.init_args.h_schedule", None, f"{RSM_README}:91,94 (strategies/rsm.py defaults)"),
        ("model.strategy.init_args.l_schedule", None, f"{RSM_README}:91,96 (strategies/rsm.py defaults)"),
        ("trainer.max_steps", 14968, "rsm pretrain.py:292 int(2 epochs * 3,831,994 / 512)"),
        ("trainer.val_check_interval", 500, f"{RSM_README}:104 short_eval_interval=500"),
        ("data.init_args.val_size", 2048, f"{RSM_README}:105 int(826 * 0.005) = 4 batches of 512"),
        ("callbacks.DepthGrowthCallback.lr_ramp_steps", 0, "rsm pretrain.py transition_lr_warmup_steps default 0"),
    ],
    "rsm_maze": RSM_COMMON + [
        ("data.class_path", "datamodules.Maze", f"{RSM_README}:121 data/maze-30x30-hard-1k"),
        ("data.init_args.augment", False, "rsm dataset/build_maze_dataset.py:27 aug False (README:71)"),
        ("data.init_args.batch_size", 128, f"{RSM_README}:126 global_batch_size=128"),
        ("model.optim.weight_decay", 1.0, f"{RSM_README}:126 weight_decay=1"),
        ("model.network.mixer", "attention", f"{RSM_README}:125 arch.mlp_t=False"),
        ("model.network.positions", "rope", f"{RSM_README}:125 arch.pos_encodings=rope"),
        ("model.network.num_layers", 2, f"{RSM_README}:127 arch.L_layers=2"),
        ("model.strategy.init_args.p_detach", 1.0, f"{RSM_README}:129 prob_detach_prev_H=90: always detached"),
        ("model.strategy.init_args.h_schedule",
         [[0.0, 2], [0.201, 3], [0.401, 4], [0.551, 5], [0.651, 6], [0.751, 7], [0.851, 8], [0.951, 9]],
         f"{RSM_README}:128,131 H_cycles=2, curriculum_milestones"),
        ("model.strategy.init_args.l_schedule", [[0.0, 2], [0.301, 3], [0.501, 4], [0.701, 5]],
         f"{RSM_README}:128,133 L_cycles=2, curriculum_L_milestones"),
        ("trainer.max_steps", 3906, "rsm pretrain.py:292 int(500 epochs * 1000 / 128)"),
        ("trainer.val_check_interval", 200, f"{RSM_README}:142 short_eval_interval=200"),
        ("data.init_args.val_size", 1000, f"{RSM_README}:143 short_eval_fraction=1: all 1000 test mazes"),
        ("callbacks.DepthGrowthCallback.lr_ramp_steps", 200, f"{RSM_README}:140 transition_lr_warmup_steps=200"),
    ],
}
OTHERS = {"hrm_sudoku_augmented"}  # checked by its own tests


def printed_config(name: str) -> dict[str, Any]:
    """The recipe as the CLI parses it, defaults filled in."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), mock.patch.object(sys, "argv", ["rr"]), pytest.raises(SystemExit):
        main(["fit", f"--config={ROOT / 'configs' / f'{name}.yaml'}", "--print_config"])
    return yaml.safe_load(out.getvalue())


def lookup(config: dict[str, Any], path: str) -> Any:
    """A dotted path; 'callbacks.<Class>.<arg>' finds the trainer callback by class name (None when absent)."""
    if path.startswith("callbacks."):
        _, name, *arg = path.split(".")
        found = [c for c in config["trainer"]["callbacks"] or [] if c["class_path"].rsplit(".", 1)[-1] == name]
        if not found:
            return None
        return found[0]["init_args"][arg[0]] if arg else found[0]
    value: Any = config
    for key in path.split("."):
        value = value[key]
    return value


def header(name: str) -> str:
    """The comment block of a recipe, above its first setting."""
    return (ROOT / "configs" / f"{name}.yaml").read_text().split("seed_everything")[0]


def test_every_recipe_has_a_table_or_is_marked_ours() -> None:
    """A paper recipe has its table of sources here; any other recipe says in its header that it is ours."""
    shipped = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    ours = {name for name in shipped - OTHERS - set(RECIPES) if "Ours" in header(name)}
    assert shipped - OTHERS == set(RECIPES) | ours, f"no table and not marked ours: {shipped - OTHERS - set(RECIPES) - ours}"
    assert "demo_sudoku" in ours and not ours & set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_matches_its_source(name: str) -> None:
    config = printed_config(name)
    cited = header(name)
    assert "Sources" in cited and "tests/test_recipes.py" in cited, "the header cites its sources"
    wrong = [f"{path} = {lookup(config, path)!r}, source says {value!r} ({source})"
             for path, value, source in RECIPES[name] if lookup(config, path) != value]
    assert not wrong, "\n".join(wrong)
