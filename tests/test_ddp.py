"""Data parallelism through Lightning DDP, and gradient accumulation with the ACT carry.

Two CPU processes (gloo, spawned) with the same global batch train like one process, for every strategy (TRM with
and without a puzzle table, HRM, CGAR, RSM) and both supervision schedules: each rank's carry holds its contiguous
slice of the single-process slots, with the same examples and step counters, the mean of the ranks' losses is the
single-process loss at every step and the final weights agree (to float rounding: DDP sums gradients in another
order). A checkpoint written by the two ranks holds the whole carry, so one process continues from it.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import GeneratedSudoku
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from strategies import CGAR, HRM, RSM, TRM

STEPS = 6
TESTS = Path(__file__).resolve().parent


class Record(L.Callback):
    """Per optimiser step: the (local) loss and the carry's examples, step counters and halting flags; saved per rank
    at the end, since spawned ranks are other processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.steps: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        carry = pl_module.carry
        if carry is None:  # the batch schedule keeps no carry and returns no loss (manual optimisation)
            self.steps[trainer.global_step] = {"inputs": batch["inputs"].clone()}
            return
        self.steps[trainer.global_step] = {"loss": outputs["loss"].detach().clone(), "halted": carry.halted.clone(),
                                           "inputs": carry.batch["inputs"].clone(), "steps": carry.steps.clone()}

    def on_train_end(self, trainer, pl_module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save({"steps": self.steps, "seed": torch.initial_seed(),
                    "broadcast_buffers": getattr(trainer.strategy.model, "broadcast_buffers", None)},
                   self.directory / f"rank{trainer.global_rank}.pt")


# Every strategy without random draws that differ by rank (no halt exploration; RSM's p_detach 0 draws nothing).
CASES = {
    "trm_table": ("trm", "carry"),  # TRM with a puzzle table: SignSGD's all-gather under DDP
    "trm": ("trm", "carry"),
    "hrm": ("hrm", "carry"),
    "cgar": ("cgar", "carry"),
    "rsm": ("rsm", "carry"),
    "trm_table_batch": ("trm", "batch"),
    "hrm_batch": ("hrm", "batch"),
    "rsm_batch": ("rsm", "batch"),
}
FAST = ("hrm_batch", "cgar", "rsm")  # with the TRM test below: every strategy and both schedules by default


def tiny_model(supervision_steps: int = 3, warmup_steps: int = 2, case: str = "trm_table") -> RecursiveReasoner:
    """A tiny model of `case` (CASES); the default is TRM with a puzzle table."""
    torch.manual_seed(0)
    method, schedule = CASES[case]
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0 if case == "trm" else 2)
    if method == "hrm":
        network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, shared=False, mixer="attention",
                                positions="rope", puzzle_emb_len=1)
    elif method == "rsm":  # the RSM recipes' network: channel norm, tied head, no Q head
        network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=2,
                                token_mlp_norm="channels", tie_embeddings=True, halt_head=False)
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=warmup_steps, puzzle_emb_lr=1e-1,
                        puzzle_emb_weight_decay=0.1)
    strategy = {
        "trm": lambda: TRM(cycles=1, latent_steps=1, supervision_steps=supervision_steps, halt_exploration=0.0),
        "hrm": lambda: HRM(cycles=1, latent_steps=1, supervision_steps=supervision_steps, halt_exploration=0.0),
        "cgar": lambda: CGAR(cycles=2, latent_steps=2, stage_bounds=(0.5,), stage_depths=[(1, 1), (2, 2)],
                             supervision_steps=supervision_steps, halt_exploration=0.0),
        "rsm": lambda: RSM(h_schedule=[(0.0, 2), (0.5, 3)], l_schedule=[(0.0, 1)], p_detach=0.0),
    }[method]()
    return RecursiveReasoner(strategy, network, optim, vocab_size=6, seq_len=16, num_puzzle_ids=3,
                             supervision_schedule=schedule)


@pytest.mark.parametrize("running_stats", [False, True])
def test_ddp_buffer_broadcast_is_off_unless_chosen_or_a_module_keeps_running_statistics(running_stats: bool) -> None:
    from lightning.pytorch.strategies import DDPStrategy

    for chosen in ({}, {"broadcast_buffers": True}):
        model = tiny_model(case="trm")
        if running_stats:
            model.net.extra = torch.nn.BatchNorm1d(4)
        run = L.Trainer(accelerator="cpu", devices=1, strategy=DDPStrategy(**chosen), logger=False)
        model.trainer = run
        model.setup("fit")
        assert run.strategy._ddp_kwargs["broadcast_buffers"] is (running_stats or bool(chosen))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The generated puzzles, made once outside any Trainer."""
    directory = str(tmp_path_factory.mktemp("cache"))
    tiny_data(directory).prepare_data()
    return directory


def tiny_data(cache: str, batch_size: int = 8) -> GeneratedSudoku:
    data = GeneratedSudoku(size=4, givens=8, train_size=40, val_size=8, test_size=8, batch_size=batch_size, seed=2,
                           cache_dir=cache)
    data.setup()
    return data


def trainer(root: Path, callbacks: list[L.Callback], max_steps: int = STEPS, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=root,
                     callbacks=callbacks, **kwargs)


DDP_SCRIPT = """
import sys
import torch
from pathlib import Path
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
import test_ddp as T

root, cache, case = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
model = T.tiny_model(case=case)
callbacks = [T.Record(root)]
if case == "trm_table":
    callbacks.append(ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=3, save_top_k=-1))
run = T.trainer(root, callbacks, devices=2, strategy=DDPStrategy(process_group_backend="gloo"),
                enable_checkpointing=case == "trm_table")
run.fit(model, T.tiny_data(cache))
if run.global_rank == 0:
    torch.save(model.state_dict(), root / "weights.pt")
"""


def run_ddp(root: Path, cache: str, case: str = "trm_table") -> None:
    """Two ranks through Lightning's `ddp` launcher (it starts rank 1 by running the same command again), as
    `rr fit --trainer.devices=2` would; in a subprocess, since the launcher would rerun pytest itself."""
    root.mkdir(parents=True)
    script = root / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(script), str(root), cache, case], env={**os.environ, "PYTHONPATH": path},
                          cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def check_ddp_trains_like_one_process(tmp_path: Path, cache: str, case: str) -> dict:
    """Train `case` in one process and in two DDP ranks with the same global batch; check the carry slices, the
    losses and the final weights agree, and return the single-process record."""
    single_model = tiny_model(case=case)
    trainer(tmp_path / "single", [Record(tmp_path / "single")], devices=1).fit(single_model, tiny_data(cache))
    single = torch.load(tmp_path / "single" / "rank0.pt")
    run_ddp(tmp_path / "ddp", cache, case)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in range(2)]
    assert single["seed"] == ranks[0]["seed"] != ranks[1]["seed"]  # rank 1's random draws are its own
    assert ranks[0]["broadcast_buffers"] is False  # rr's buffers are constant: no broadcast before each forward
    single, ranks = single["steps"], [rank["steps"] for rank in ranks]

    assert single and sorted(single) == sorted(ranks[0]) == sorted(ranks[1])
    for step, expected in single.items():
        for key in set(expected) - {"loss"}:  # rank r holds slots [4r, 4r + 4) of the single-process carry
            assert torch.equal(torch.cat([rank[step][key] for rank in ranks]), expected[key]), f"{key}, step {step}"
        if "loss" in expected:
            mean = (ranks[0][step]["loss"] + ranks[1][step]["loss"]) / 2
            torch.testing.assert_close(mean, expected["loss"], rtol=1e-5, atol=1e-6, msg=f"loss at step {step}")
    weights = torch.load(tmp_path / "ddp" / "weights.pt")
    for (name, a), b in zip(weights.items(), single_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{case}: {name}")
    return single


@pytest.mark.parametrize(
    "case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES if c != "trm_table"])
def test_every_strategy_and_schedule_trains_under_ddp_like_one_process(tmp_path: Path, cache: str, case: str) -> None:
    check_ddp_trains_like_one_process(tmp_path, cache, case)


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path, cache: str) -> None:
    single = check_ddp_trains_like_one_process(tmp_path, cache, "trm_table")
    (path,) = (tmp_path / "ddp" / "ckpt").glob("*step=3.ckpt")
    saved = torch.load(path, weights_only=True)
    assert saved["rr_carry"]["steps"].shape == (8,) and len(saved["rr_rng"]) == 2
    with pytest.warns(UserWarning, match="RNG states of 2 ranks, this run has 1"):
        trainer(tmp_path / "resumed", [Record(tmp_path / "resumed")], devices=1).fit(
            tiny_model(), tiny_data(cache), ckpt_path=path)
    resumed = torch.load(tmp_path / "resumed" / "rank0.pt")["steps"]
    assert sorted(resumed) == [4, 5, 6]
    for step, recorded in resumed.items():
        assert torch.equal(recorded["inputs"], single[step]["inputs"]), f"step {step}"
        torch.testing.assert_close(recorded["loss"], single[step]["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # the hand-stepped copy has no trainer
def test_gradient_accumulation_advances_the_carry_once_per_micro_batch(tmp_path: Path, cache: str) -> None:
    """With accumulate_grad_batches=2 one optimiser step is the mean of two consecutive segments' gradients, the
    second continuing the carry of the first (detached), as stepping the module by hand does."""
    model = tiny_model(supervision_steps=2, warmup_steps=0)
    by_hand = copy.deepcopy(model)
    record = Record(tmp_path)
    run = trainer(tmp_path, [record], max_steps=1, accumulate_grad_batches=2, enable_checkpointing=False)
    run.fit(model, tiny_data(cache))
    assert run.global_step == 1 and sorted(record.steps) == [0, 1]  # two micro-batches, one optimiser step

    optimizer = by_hand.configure_optimizers()["optimizer"]
    batches = iter(tiny_data(cache).train_dataloader())
    for micro, batch in enumerate([next(batches), next(batches)]):
        loss = by_hand.training_step(batch, micro)
        (loss / 2).backward()
        expected = record.steps[micro]
        torch.testing.assert_close(loss.detach() / 2, expected["loss"], rtol=0, atol=0)  # Lightning's is scaled
        assert torch.equal(by_hand.carry.steps, expected["steps"]) and bool((by_hand.carry.steps == micro + 1).all())
    optimizer.step()
    for (name, a), b in zip(model.state_dict().items(), by_hand.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
