"""`rr import`: the parity vectors saved in reference-checkpoint form (`checkpoint_state_dict`, names
`_orig_mod.model.inner...`) become rr checkpoints that reproduce the reference evaluation outputs; bad inputs fail
with errors that name the problem."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import require_shared
from test_parity import ALL_VECTORS, as_batch, check_evaluation_segments
from test_parity_rsm import RSM_VECTORS, check_evaluation

from datamodules.kinds import SudokuKind
from recursive_reasoning.cli import main
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.solve import load_solver
from strategies import HRM, RSM, TRM

pytestmark = pytest.mark.usefixtures("one_thread")

# The arch keys the reference writes to all_config.yaml (seq_len, vocab_size and num_puzzle_identifiers come from the
# data set at run time, so a real all_config.yaml has none of them).
ARCH_KEYS = ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads", "expansion",
             "puzzle_emb_ndim", "puzzle_emb_len", "pos_encodings", "halt_max_steps", "halt_exploration_prob", "mlp_t",
             "forward_dtype", "no_ACT_continue")


@functools.cache
def vector(name: str) -> dict:
    return torch.load(require_shared(f"parity/{name}.pt"), weights_only=True)


def reference_checkpoint(directory: Path, name: str, state: dict | None = None) -> Path:
    """A reference training checkpoint: torch.save of the state dict under the names pretrain.py saves."""
    path = directory / f"{name}_step_4"
    torch.save(vector(name)["checkpoint_state_dict"] if state is None else state, path)
    return path


def all_config(directory: Path, name: str, /, **changes) -> Path:
    """The all_config.yaml the reference writes beside its checkpoints: arch section plus training settings."""
    v = vector(name)
    arch = {k: v["config"][k] for k in ARCH_KEYS if k in v["config"]}
    arch.update(name=v["model_class"], loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"})
    arch.update(changes)
    config = {"arch": arch, "data_paths": ["data/tiny"], "global_batch_size": 4, "lr": 3e-4, "beta1": 0.9,
              "beta2": 0.99, "lr_warmup_steps": 10, "puzzle_emb_lr": 0.01, "weight_decay": 0.1, "ema": True}
    path = directory / "all_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def import_fails(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `rr import` expecting a clean failure (exit status 2); returns its error message."""
    with pytest.raises(SystemExit) as exit_info:
        main(["import", *args])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def assert_reproduces_reference(path: Path, name: str) -> RecursiveReasoner:
    """Load the imported checkpoint as a user would and match every reference evaluation segment."""
    model = RecursiveReasoner.load_from_checkpoint(path, weights_only=True)
    v = vector(name)
    assert model.net.num_parameters() == v["num_params"]
    check_evaluation_segments(v, model.net, model.strategy, f"imported {name}")
    return model


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_import_with_the_runs_all_config_reproduces_reference_evaluation(name: str, tmp_path: Path) -> None:
    source, output = reference_checkpoint(tmp_path, name), tmp_path / "ours.ckpt"
    # Attention models do not show seq_len in their weights; the token-MLP mixer's width does.
    seq_len = [] if vector(name)["config"]["mlp_t"] else ["--seq_len", "16"]
    main(["import", "--source", str(source), "--config", str(all_config(tmp_path, name)), "--output", str(output),
          *seq_len])
    model = assert_reproduces_reference(output, name)
    config = vector(name)["config"]
    assert isinstance(model.strategy, HRM if name.startswith("hrm") else TRM)
    assert (model.strategy.cycles, model.strategy.latent_steps, model.strategy.supervision_steps) == (
        config["H_cycles"], config["L_cycles"], config["halt_max_steps"])
    assert model.optim_config.lr == 3e-4 and model.optim_config.betas == (0.9, 0.99)
    assert model.optim_config.warmup_steps == 10 and model.optim_config.puzzle_emb_lr == 0.01


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_import_with_the_constructor_kwargs_as_json(name: str, tmp_path: Path) -> None:
    config = tmp_path / "arch.json"
    config.write_text(json.dumps(vector(name)["config"]))
    output = tmp_path / "ours.ckpt"
    main(["import", "--source", str(reference_checkpoint(tmp_path, name)), "--config", str(config),
          "--output", str(output), "--method", "hrm" if name.startswith("hrm") else "trm"])
    assert_reproduces_reference(output, name)


def test_token_mlp_model_needs_only_the_recursion_flags(tmp_path: Path) -> None:
    output = tmp_path / "ours.ckpt"
    main(["import", "--source", str(reference_checkpoint(tmp_path, "trm_mlpt_nopos")), "--output", str(output),
          "--H_cycles", "3", "--L_cycles", "6", "--halt_max_steps", "4", "--halt_exploration", "0"])
    assert_reproduces_reference(output, "trm_mlpt_nopos")
    assumed = torch.load(output, weights_only=True)["rr_import"]["assumed_defaults"]
    assert "puzzle_emb_len=16" in assumed and "halt_exploration_prob=0.1" not in assumed


def test_every_reference_key_prefix_and_bf16_initial_states_import(tmp_path: Path) -> None:
    flags = ["--H_cycles", "3", "--L_cycles", "6", "--halt_max_steps", "4", "--seq_len", "16", "--num_heads", "4",
             "--pos_encodings", "rope"]
    v = vector("trm_att_rope")
    main(["import", "--source", str(reference_checkpoint(tmp_path, "trm_att_rope")), "--output",
          str(tmp_path / "compiled.ckpt"), *flags])
    expected = torch.load(tmp_path / "compiled.ckpt", weights_only=True)["state_dict"]
    bare = {k.removeprefix("_orig_mod."): t for k, t in v["checkpoint_state_dict"].items()}  # DISABLE_COMPILE
    bf16 = {k: t.bfloat16() if k.endswith("_init") else t for k, t in v["checkpoint_state_dict"].items()}
    for label, state in (("model", bare), ("inner", v["state_dict"]), ("bf16", bf16)):
        output = tmp_path / f"{label}.ckpt"
        main(["import", "--source", str(reference_checkpoint(tmp_path, label, state)), "--output", str(output), *flags])
        got = torch.load(output, weights_only=True)["state_dict"]
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            want = value.bfloat16().float() if label == "bf16" and key.endswith("_init") else value
            assert torch.equal(got[key], want), f"{label}: {key}"
            assert got[key].dtype == torch.float32


def test_checkpoint_holds_what_lightning_loads_and_is_written_atomically(tmp_path: Path) -> None:
    output = tmp_path / "out" / "hrm.ckpt"
    main(["import", "--source", str(reference_checkpoint(tmp_path, "hrm_att_rope")), "--config",
          str(all_config(tmp_path, "hrm_att_rope")), "--seq_len", "16", "--output", str(output)])
    checkpoint = torch.load(output, weights_only=True)
    assert {"state_dict", "hyper_parameters", "pytorch-lightning_version", "rr_progress"} <= checkpoint.keys()
    assert all(key.startswith("net.") for key in checkpoint["state_dict"])
    hp = checkpoint["hyper_parameters"]
    assert hp["strategy"]["class_path"] == "strategies.hrm.HRM"
    assert hp["network"]["shared"] is False and hp["network"]["puzzle_emb_len"] == 1
    assert (hp["vocab_size"], hp["seq_len"], hp["num_puzzle_ids"]) == (11, 16, 3)
    assert hp["supervision_schedule"] == "carry" and "test_time" not in hp  # how to evaluate is not saved
    assert dict(RecursiveReasoner(**hp).hparams) == hp  # exactly what the module saves for itself
    assert sorted(p.name for p in output.parent.iterdir()) == ["hrm.ckpt"]  # no temporary file left behind


@pytest.mark.parametrize(
    "flags",
    [["--puzzle_kind", "sudoku"], ["--puzzle_kind", "datamodules.kinds.SudokuKind"], ["--puzzle_format", "sudoku"]],
    ids=["registered-name", "class-path", "old-flag-name"],
)
def test_puzzle_kind_lets_rr_solve_load_the_checkpoint(tmp_path: Path, flags: list[str]) -> None:
    """The kind by name or class path, its arguments from the model's shape (16 cells, 11 tokens: a 4x4 Sudoku)."""
    output = tmp_path / "sudoku.ckpt"
    main(["import", "--source", str(reference_checkpoint(tmp_path, "trm_mlpt_nopos")), "--output", str(output),
          "--cycles", "3", "--L_cycles", "6", "--halt_max_steps", "4", *flags])
    assert torch.load(output, weights_only=True)["rr_import"]["puzzle_kind"] == SudokuKind(4).describe()
    model, kind = load_solver(output)
    assert kind.describe() == SudokuKind(4).describe() and model.net.seq_len == 16


@pytest.mark.parametrize(
    ("kind", "message"),
    [("chess", "unknown puzzle kind 'chess'; give one of"), ("maze", "--puzzle_kind maze: a maze has 6 tokens"),
     ("datamodules.kinds.Nope", "puzzle kind 'datamodules.kinds.Nope' cannot be imported"),
     ("datamodules.kinds.Puzzle", "unknown puzzle kind 'datamodules.kinds.Puzzle'")],
    ids=["unknown-name", "shape-does-not-fit", "missing-class", "not-a-kind"],
)
def test_a_puzzle_kind_that_does_not_fit_is_named(tmp_path: Path, capsys, kind: str, message: str) -> None:
    output = tmp_path / "out.ckpt"
    error = import_fails(capsys, "--source", str(reference_checkpoint(tmp_path, "trm_mlpt_nopos")), "--output",
                         str(output), "--H_cycles", "3", "--L_cycles", "6", "--halt_max_steps", "4",
                         "--puzzle_kind", kind)
    assert message in error and not output.exists()


def test_help_lists_every_option(capsys) -> None:
    """Generated from `import_checkpoint` and `ReferenceSettings`, with the older flag names beside them."""
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    text = capsys.readouterr().out
    for flag in ("--source", "--output", "--config", "--method", "--puzzle_kind", "--puzzle_format", "--force",
                 "--H_cycles", "--cycles", "--L_cycles", "--latent_steps", "--halt_max_steps", "--supervision_steps",
                 "--halt_exploration_prob", "--prob_detach_prev_H", "--p_detach", "--loss_type", "--seq_len",
                 "--num_heads", "--pos_encodings", "--positions", "--puzzle_emb_len", "--expansion"):
        assert flag in text, flag


def test_refuses_a_state_dict_that_is_not_a_reference_checkpoint(tmp_path: Path, capsys) -> None:
    source = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.randn(4, 4), "decoder.bias": torch.randn(4)}, source)
    error = import_fails(capsys, "--source", str(source), "--output", str(tmp_path / "out.ckpt"))
    assert "not a checkpoint of the reference TRM/HRM/RSM code" in error and "'encoder.weight'" in error
    assert not (tmp_path / "out.ckpt").exists()


def test_refuses_files_that_hold_no_reference_state_dict(tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    assert "is not a PyTorch checkpoint" in import_fails(capsys, "--source", str(text), "--output", str(tmp_path / "a"))
    ours = tmp_path / "ours.ckpt"
    main(["import", "--source", str(reference_checkpoint(tmp_path, "trm_mlpt_nopos")), "--output", str(ours),
          "--H_cycles", "3", "--L_cycles", "6", "--halt_max_steps", "4"])
    error = import_fails(capsys, "--source", str(ours), "--output", str(tmp_path / "again.ckpt"))
    assert "already an rr checkpoint" in error


def test_refuses_a_modified_architecture(tmp_path: Path, capsys) -> None:
    state = dict(vector("trm_att_rope")["checkpoint_state_dict"])
    state["_orig_mod.model.inner.L_level.layers.0.gate.weight"] = torch.zeros(2)
    error = import_fails(capsys, "--source", str(reference_checkpoint(tmp_path, "variant", state)),
                         "--output", str(tmp_path / "out.ckpt"))
    assert "names the reference TRM/HRM/RSM models do not have" in error and "layers.0.gate.weight" in error


def test_missing_files_are_named(tmp_path: Path, capsys) -> None:
    error = import_fails(capsys, "--source", str(tmp_path / "step_100"), "--output", str(tmp_path / "out.ckpt"))
    assert f"reference checkpoint {tmp_path / 'step_100'} does not exist" in error
    error = import_fails(capsys, "--source", str(reference_checkpoint(tmp_path, "trm_att_rope")),
                         "--config", str(tmp_path / "all_config.yaml"), "--output", str(tmp_path / "out.ckpt"))
    assert f"config {tmp_path / 'all_config.yaml'} does not exist" in error


def test_existing_output_needs_force(tmp_path: Path, capsys) -> None:
    output = tmp_path / "ours.ckpt"
    output.write_text("keep me")
    args = ["--source", str(reference_checkpoint(tmp_path, "trm_mlpt_nopos")), "--output", str(output),
            "--H_cycles", "3", "--L_cycles", "6", "--halt_max_steps", "4"]
    error = import_fails(capsys, *args)
    assert f"{output} already exists; pass --force" in error and output.read_text() == "keep me"
    main(["import", *args, "--force"])
    assert_reproduces_reference(output, "trm_mlpt_nopos")


def test_missing_recursion_settings_are_all_named(tmp_path: Path, capsys) -> None:
    source, output = reference_checkpoint(tmp_path, "trm_mlpt_nopos"), str(tmp_path / "out.ckpt")
    error = import_fails(capsys, "--source", str(source), "--output", output, "--L_cycles", "6")
    assert "H_cycles" in error and "halt_max_steps" in error and "--config" in error
    assert "L_cycles" not in error and "seq_len" not in error  # given, and shown by the token mixer's width
    source = reference_checkpoint(tmp_path, "trm_att_rope")
    error = import_fails(capsys, "--source", str(source), "--output", output)
    for name in ("H_cycles", "L_cycles", "halt_max_steps", "seq_len", "num_heads", "pos_encodings"):
        assert f"--{name}" in error, name
    assert not Path(output).exists()


def test_config_or_method_contradicting_the_weights(tmp_path: Path, capsys) -> None:
    source, output = str(reference_checkpoint(tmp_path, "trm_att_rope")), str(tmp_path / "out.ckpt")
    config = all_config(tmp_path, "trm_att_rope", L_layers=4)
    error = import_fails(capsys, "--source", source, "--config", str(config), "--seq_len", "16", "--output", output)
    assert "L_layers=4 (the weights have 2)" in error
    assert "it is a TRM checkpoint" in import_fails(capsys, "--source", source, "--output", output, "--method", "hrm")
    config = all_config(tmp_path, "trm_att_rope", name="recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1")
    error = import_fails(capsys, "--source", source, "--config", str(config), "--seq_len", "16", "--output", output)
    assert "it is a TRM checkpoint" in error
    config = all_config(tmp_path, "trm_att_rope", name="recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1")
    error = import_fails(capsys, "--source", source, "--config", str(config), "--seq_len", "16", "--output", output)
    assert "is not the reference TRM, HRM or RSM" in error
    error = import_fails(capsys, "--source", source, "--config", str(all_config(tmp_path, "trm_att_rope")),
                         "--seq_len", "16", "--expansion", "16", "--output", output)
    assert "expansion 16.0 does not give the checkpoint's SwiGLU widths" in error


def rsm_checkpoint(directory: Path, name: str, *, with_config: bool = True, **state_changes: torch.Tensor) -> Path:
    """What RSM's pretrain.py saves: a dict with `model_state` (its LossHead's state dict, names `model.core...`, the
    tied matrix under both names), the optimiser states, the step and the run's config (arch without the data's
    seq_len / vocab_size / num_puzzle_identifiers)."""
    v = vector(name)
    state = {key: v["state_dict"][key.removeprefix("model.")] for key in v["checkpoint_key_names"]}
    state.update({f"model.{key}": value for key, value in state_changes.items()})
    arch = {k: val for k, val in v["config"].items() if k not in ("seq_len", "vocab_size", "num_puzzle_identifiers",
                                                                   "batch_size")}
    arch.update(name=v["model_class"], loss={"name": "losses@LossHead", "loss_type": "stablemax_cross_entropy"})
    checkpoint = {"model_state": state, "optimizer_states": [], "step": 4, "active_H": 3, "active_L": 3}
    if with_config:
        checkpoint["config"] = {"arch": arch, "lr": 2e-4, "beta1": 0.9, "beta2": 0.95, "puzzle_emb_lr": 0.01}
    path = directory / f"{name}_ckpt_step_4.pth"
    torch.save(checkpoint, path)
    return path


def assert_rsm_reproduces_reference(path: Path, name: str) -> RecursiveReasoner:
    """The imported RSM evaluates at the run's H and L exactly as the reference does at that depth."""
    model = RecursiveReasoner.load_from_checkpoint(path, weights_only=True)
    v, net, strategy = vector(name), model.net, model.strategy
    assert isinstance(strategy, RSM) and (strategy.h_test, strategy.l_test) == (v["config"]["H_cycles"],
                                                                                v["config"]["L_cycles"])
    assert net.num_parameters() == v["num_params"] and net.q_head is None
    assert net.lm_head.weight is net.token_embedding.weight
    net.eval()
    record = v["expected"]["eval"][strategy.h_test - 1]
    check_evaluation(net, strategy, as_batch(v["batch"]), record, f"imported {name}")
    return model


@pytest.mark.parametrize("name", RSM_VECTORS)
def test_rsm_checkpoint_imports_with_its_saved_config(name: str, tmp_path: Path) -> None:
    output = tmp_path / "rsm.ckpt"
    seq_len = [] if vector(name)["config"]["mlp_t"] else ["--seq_len", "16"]  # attention does not show it
    main(["import", "--source", str(rsm_checkpoint(tmp_path, name)), "--output", str(output), *seq_len])
    model = assert_rsm_reproduces_reference(output, name)
    assert model.strategy.p_detach == 0.5 and model.optim_config.lr == 2e-4
    assert model.optim_config.betas == (0.9, 0.95)
    hp = torch.load(output, weights_only=True)["hyper_parameters"]["network"]
    assert (hp["token_mlp_norm"], hp["tie_embeddings"], hp["halt_head"]) == ("channels", True, False)


def test_rsm_checkpoint_with_flags_only_and_errors(tmp_path: Path, capsys) -> None:
    source, output = rsm_checkpoint(tmp_path, "rsm_mlpt_nopos", with_config=False), tmp_path / "rsm.ckpt"
    error = import_fails(capsys, "--source", str(source), "--output", str(output))
    assert "--H_cycles" in error and "--L_cycles" in error and "halt_max_steps" not in error
    assert "it is a RSM checkpoint" in import_fails(capsys, "--source", str(source), "--output", str(output),
                                                    "--method", "trm", "--H_cycles", "3", "--L_cycles", "3")
    main(["import", "--source", str(source), "--output", str(output), "--H_cycles", "3", "--L_cycles", "3",
          "--method", "rsm"])
    assert_rsm_reproduces_reference(output, "rsm_mlpt_nopos")

    weights = vector("rsm_mlpt_nopos")["state_dict"]
    untied = rsm_checkpoint(tmp_path, "rsm_mlpt_nopos", **{"lm_head.weight": weights["lm_head.weight"] + 1})
    error = import_fails(capsys, "--source", str(untied), "--output", str(tmp_path / "untied.ckpt"))
    assert "RSM ties lm_head.weight to embed_tokens.embedding_weight" in error
    mixed = rsm_checkpoint(tmp_path, "rsm_mlpt_nopos", **{"q_head.weight": torch.zeros(2, 64)})
    error = import_fails(capsys, "--source", str(mixed), "--output", str(tmp_path / "mixed.ckpt"))
    assert "RSM's 'core' stack and TRM/HRM tensors" in error
