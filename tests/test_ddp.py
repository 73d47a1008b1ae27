"""Data parallelism through Lightning DDP, and gradient accumulation with the ACT carry.

Two CPU processes (gloo, spawned) with the same global batch train like one process: each rank's carry holds its
contiguous slice of the single-process slots, with the same examples and step counters, and the mean of the ranks'
losses is the single-process loss at every step (to float rounding: DDP sums gradients in another order). A
checkpoint written by the two ranks holds the whole carry, so one process continues from it.
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
from recursive_reasoning.network import NetworkConfig
from strategies import TRM

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
        self.steps[trainer.global_step] = {"loss": outputs["loss"].detach().clone(), "halted": carry.halted.clone(),
                                           "inputs": carry.batch["inputs"].clone(), "steps": carry.steps.clone()}

    def on_train_end(self, trainer, pl_module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save({"steps": self.steps, "seed": torch.initial_seed()}, self.directory / f"rank{trainer.global_rank}.pt")


def tiny_model(supervision_steps: int = 3, warmup_steps: int = 2) -> RecursiveReasoner:
    """TRM with a puzzle table (SignSGD's all-gather under DDP); no halt exploration, whose draws differ by rank."""
    torch.manual_seed(0)
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=2)
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=warmup_steps, puzzle_emb_lr=1e-1,
                        puzzle_emb_weight_decay=0.1)
    strategy = TRM(cycles=1, latent_steps=1, supervision_steps=supervision_steps, halt_exploration=0.0)
    return RecursiveReasoner(strategy, network, optim, vocab_size=6, seq_len=16, num_puzzle_ids=3)


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

root, cache = Path(sys.argv[1]), sys.argv[2]
model = T.tiny_model()
checkpoints = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=3, save_top_k=-1)
run = T.trainer(root, [T.Record(root), checkpoints], devices=2, strategy=DDPStrategy(process_group_backend="gloo"))
run.fit(model, T.tiny_data(cache))
if run.global_rank == 0:
    torch.save(model.state_dict(), root / "weights.pt")
"""


def run_ddp(root: Path, cache: str) -> None:
    """Two ranks through Lightning's `ddp` launcher (it starts rank 1 by running the same command again), as
    `rr fit --trainer.devices=2` would; in a subprocess, since the launcher would rerun pytest itself."""
    root.mkdir(parents=True)
    script = root / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(script), str(root), cache], env={**os.environ, "PYTHONPATH": path},
                          cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path, cache: str) -> None:
    single_model = tiny_model()
    trainer(tmp_path / "single", [Record(tmp_path / "single")], devices=1).fit(single_model, tiny_data(cache))
    single = torch.load(tmp_path / "single" / "rank0.pt")
    run_ddp(tmp_path / "ddp", cache)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in range(2)]
    assert single["seed"] == ranks[0]["seed"] != ranks[1]["seed"]  # rank 1's exploration draws are its own
    single, ranks = single["steps"], [rank["steps"] for rank in ranks]

    assert sorted(single) == list(range(1, STEPS + 1))
    for step, expected in single.items():
        for key in ("inputs", "steps", "halted"):  # rank r holds slots [4r, 4r + 4) of the single-process carry
            assert torch.equal(torch.cat([rank[step][key] for rank in ranks]), expected[key]), f"{key}, step {step}"
        mean = (ranks[0][step]["loss"] + ranks[1][step]["loss"]) / 2
        torch.testing.assert_close(mean, expected["loss"], rtol=1e-5, atol=1e-6, msg=f"loss at step {step}")
    weights = torch.load(tmp_path / "ddp" / "weights.pt")
    for (name, a), b in zip(weights.items(), single_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)

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
