"""Exact resumption: a run killed after a checkpoint and resumed from it takes the same steps as one never stopped.

The checkpoint must bring back the weights, the EMA averages, both optimisers' states (AdamATan2 and the puzzle
table's SignSGD), the schedule position, the ACT carry, the RNG states (halt exploration draws from them) and the
position inside the data epoch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules import GeneratedSudoku
from datamodules.loaders import GlobalBatchSampler
from recursive_reasoning.callbacks import EMA
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from recursive_reasoning.optim import AdamATan2, OptimizerBundle, SignSGD
from strategies import TRM

STEPS = 8  # 5 batches per epoch: the runs cross an epoch boundary


class Killed(Exception):
    """Stands for the process dying."""


class Record(L.Callback):
    """Per optimiser step: the loss, and the examples and step counters held in the carry's slots."""

    def __init__(self) -> None:
        self.steps: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        carry = pl_module.carry
        self.steps[trainer.global_step] = {"loss": outputs["loss"].detach().clone(),
                                           "inputs": carry.batch["inputs"].clone(), "steps": carry.steps.clone()}


class KillAfter(L.Callback):
    """Dies when the step after `step` begins (after that step's checkpoint was written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed


def tiny_model(seed: int) -> RecursiveReasoner:
    """TRM with a puzzle table (SignSGD) and halting decided by exploration draws (RNG), so slots halt at different
    steps; warmup and cosine decay make the learning rate depend on the step."""
    torch.manual_seed(seed)
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=2)
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=3, lr_min_ratio=0.1, puzzle_emb_lr=1e-1,
                        puzzle_emb_weight_decay=0.1)
    strategy = TRM(cycles=1, latent_steps=1, supervision_steps=3, halt_exploration=0.5)
    model = RecursiveReasoner(strategy, network, optim, vocab_size=6, seq_len=16, num_puzzle_ids=3)
    with torch.no_grad():  # q_halt > 0: a slot halts after one segment unless exploration draws a later minimum
        model.net.q_head.bias.fill_(5.0)
    return model


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The generated puzzles, made once outside any Trainer."""
    directory = str(tmp_path_factory.mktemp("cache"))
    tiny_data(directory).prepare_data()
    return directory


def tiny_data(cache: str) -> GeneratedSudoku:
    data = GeneratedSudoku(size=4, givens=8, train_size=40, val_size=8, test_size=8, batch_size=8, seed=1,
                           cache_dir=cache)
    data.setup()
    return data


def fit(root: Path, cache: str, callbacks: list[L.Callback], ckpt_path: Path | None = None, seed: int = 0
        ) -> tuple[RecursiveReasoner, Record, EMA]:
    L.seed_everything(seed, verbose=False)
    model, record, ema = tiny_model(seed), Record(), EMA(decay=0.8)
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        deterministic=True, default_root_dir=root, callbacks=[ema, record, *callbacks])
    trainer.fit(model, tiny_data(cache), ckpt_path=ckpt_path)
    return model, record, ema


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory, cache: str) -> tuple[RecursiveReasoner, Record, EMA, Path]:
    """An uninterrupted run, and a run that checkpoints every step and dies after step 5 (the end of epoch 0)."""
    root = tmp_path_factory.mktemp("runs")
    whole = fit(root / "whole", cache, [])
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(Killed):
        fit(root / "killed", cache, [checkpoints, KillAfter(5)])
    return (*whole, root / "ckpt")


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.parametrize("resume_at", [3, 5], ids=["mid-epoch", "epoch-end"])
def test_killed_and_resumed_run_takes_the_same_steps(
    tmp_path: Path, cache: str, killed_run: tuple[RecursiveReasoner, Record, EMA, Path], resume_at: int
) -> None:
    whole, whole_record, whole_ema, directory = killed_run
    (path,) = directory.glob(f"*step={resume_at}.ckpt")
    saved = torch.load(path, weights_only=True)
    assert saved["rr_carry"]["steps"].shape == (8,) and len(saved["rr_rng"]) == 1

    resumed, resumed_record, resumed_ema = fit(tmp_path, cache, [], ckpt_path=path, seed=123)
    assert sorted(resumed_record.steps) == list(range(resume_at + 1, STEPS + 1))
    for step, recorded in resumed_record.steps.items():
        expected = whole_record.steps[step]
        assert torch.equal(recorded["inputs"], expected["inputs"]), f"step {step}: other examples in the carry"
        assert torch.equal(recorded["steps"], expected["steps"]), f"step {step}: other halting"
        assert torch.equal(recorded["loss"], expected["loss"]), f"step {step}: loss differs"
    for (name, a), b in zip(resumed.state_dict().items(), whole.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    averaged = zip(resumed_ema._average_model.state_dict().values(), whole_ema._average_model.state_dict().values(),
                   strict=True)
    assert all(torch.equal(a, b) for a, b in averaged)


def test_optimizer_bundle_follows_the_scheduler_after_loading() -> None:
    """torch's Optimizer.load_state_dict replaces the members' group dicts; the bundle must hand the new ones to the
    LR scheduler, or a resumed run keeps the checkpoint's learning rate."""
    weight, table = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3, 2))
    bundle = OptimizerBundle([AdamATan2([weight], lr=1.0), SignSGD([table], lr=1.0)])
    scheduler = torch.optim.lr_scheduler.LambdaLR(bundle, lambda step: 1.0 / (step + 1))
    bundle.load_state_dict(bundle.state_dict())
    bundle.step()
    scheduler.step()
    assert [opt.param_groups[0]["lr"] for opt in bundle.optimizers] == [0.5, 0.5]


def test_global_batches_are_split_into_contiguous_rank_slices() -> None:
    data = list(range(50))
    single = GlobalBatchSampler(data, 12, seed=4)
    for epoch in (0, 1, 3):
        single.set_epoch(epoch)
        order = list(single)
        assert len(order) == 48 and len(set(order)) == 48
        for world in (2, 3, 4):
            ranks = [GlobalBatchSampler(data, 12, world, rank, seed=4) for rank in range(world)]
            for sampler in ranks:
                sampler.set_epoch(epoch)
            slices = [list(sampler) for sampler in ranks]
            local = 12 // world
            rebuilt = [i for b in range(4) for s in slices for i in s[b * local:(b + 1) * local]]
            assert rebuilt == order
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        GlobalBatchSampler(data, 12, 5, 0)


def test_single_process_order_is_the_seeded_shuffle_of_earlier_versions() -> None:
    """The loader used to be DataLoader(shuffle=True, drop_last=True, generator=manual_seed(seed)); Lightning
    starts one iterator per epoch and stops at its length."""
    data = list(range(30))
    legacy = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(7))
    sampler = GlobalBatchSampler(data, 4, seed=7)
    for epoch in range(3):
        iterator = iter(legacy)
        before = [next(iterator).tolist() for _ in range(len(legacy))]
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert [order[i:i + 4] for i in range(0, len(order), 4)] == before


def test_loader_position_is_saved_and_restored(cache: str) -> None:
    loader = tiny_data(cache).train_dataloader()
    iterator = iter(loader)
    batches = [next(iterator)["inputs"] for _ in range(3)]
    state = loader.state_dict()
    assert state["epoch"] == 0 and state["batch"] == 3 and state["global_batch_size"] == 8
    fresh = tiny_data(cache).train_dataloader()
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(0)  # Lightning sets the (same) epoch before iterating
    rest = list(fresh)
    assert len(rest) == len(loader) - 3 == 2
    assert torch.equal(rest[0]["inputs"], next(iterator)["inputs"])
    assert not any(torch.equal(rest[0]["inputs"], b) for b in batches)
    other = GeneratedSudoku(size=4, givens=8, train_size=40, val_size=8, test_size=8, batch_size=4, seed=1,
                            cache_dir=cache).train_dataloader()
    with pytest.warns(UserWarning, match="global_batch_size"):
        other.load_state_dict(state)
    assert len(list(other)) == len(other)
