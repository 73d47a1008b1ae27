"""Fault injection: a training process killed with SIGKILL at random moments, or inside a checkpoint write (with the
temporary file half written, or written but not yet renamed), always leaves a loadable previous checkpoint, and
resuming from it takes the same steps (same losses) as a run never stopped.

The killed runs are forked processes (no second import of torch and Lightning) training with the real Trainer, the
project's AtomicCheckpointIO and a ModelCheckpoint every step. The hooks that stop a write midway are patched in by
the forked process only; the project code has no test seam.
"""

from __future__ import annotations

import io
import os
import random
import multiprocessing
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import recursive_reasoning.checkpoint_io as checkpoint_io
from datamodules import GeneratedSudoku
from recursive_reasoning.callbacks import EMA
from recursive_reasoning.checkpoint_io import AtomicCheckpointIO
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from strategies import TRM

STEPS = 12
STEP_SECONDS = 0.05  # the child's steps are slowed to this, so random kill times land inside training
HANG_AT = 4  # the step whose checkpoint write the hooks stop midway


def tiny_model() -> RecursiveReasoner:
    """TRM with a puzzle table and halting by exploration draws (RNG state matters), warmup and cosine decay."""
    torch.manual_seed(0)
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=2)
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=3, lr_min_ratio=0.1, puzzle_emb_lr=1e-1)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=3, halt_exploration=0.5), network,
                              optim, vocab_size=6, seq_len=16, num_puzzle_ids=3)
    with torch.no_grad():
        model.net.q_head.bias.fill_(5.0)
    return model


def tiny_data(cache: str) -> GeneratedSudoku:
    return GeneratedSudoku(size=4, givens=8, train_size=40, val_size=8, test_size=8, batch_size=8, seed=1,
                           cache_dir=cache)


class Losses(L.Callback):
    """The loss of every optimiser step, by step."""

    def __init__(self) -> None:
        self.by_step: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.by_step[trainer.global_step] = outputs["loss"].detach().clone()


def fit(root: Path, cache: str, callbacks: list[L.Callback], ckpt_path: Path | None = None) -> Losses:
    """A run of STEPS steps checkpointing every step into root/ckpt through AtomicCheckpointIO."""
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    losses = Losses()
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, deterministic=True,
                        default_root_dir=root, plugins=[AtomicCheckpointIO()],
                        callbacks=[EMA(decay=0.8), losses, *callbacks, checkpoints])
    trainer.fit(tiny_model(), tiny_data(cache), ckpt_path=ckpt_path)
    return losses


class Pace(L.Callback):
    """Child side: marks that training has a checkpoint ('started'), slows every step to STEP_SECONDS, and keeps the
    step whose checkpoints are being written in `step`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.step = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= 1:
            (self.root / "started").touch()
        time.sleep(STEP_SECONDS)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step = trainer.global_step  # ModelCheckpoint (always the last callback) then saves this step


def hang(root: Path) -> None:
    """Child side: say that the write is stopped midway, then wait to be killed."""
    (root / "in-write").touch()
    time.sleep(600)


def child(root: Path, cache: str, mode: str) -> None:
    """The killed process: `mode` 'random' runs until killed; 'mid-write' stops the step-HANG_AT write with half of
    the temporary file written; 'before-rename' stops it with the temporary file complete but not renamed."""
    pace = Pace(root)
    save, replace = torch.save, os.replace

    def slow_save(obj: object, handle: object) -> None:
        if pace.step == HANG_AT:
            data = io.BytesIO()
            save(obj, data)
            handle.write(data.getvalue()[: len(data.getvalue()) // 2])  # type: ignore[attr-defined]
            handle.flush()  # type: ignore[attr-defined]
            hang(root)
        save(obj, handle)

    def slow_replace(src: str, dst: str) -> None:
        if pace.step == HANG_AT:
            hang(root)
        replace(src, dst)

    if mode == "mid-write":
        checkpoint_io.torch.save = slow_save  # type: ignore[assignment]
    elif mode == "before-rename":
        checkpoint_io.os.replace = slow_replace  # type: ignore[assignment]
    fit(root, cache, [pace])


KILLS = {"mid-write": 0.0, "before-rename": 0.0,  # name: seconds after the marker
         **{f"random-{seed}": random.Random(seed).uniform(0.0, STEPS * STEP_SECONDS) for seed in (1, 2)}}


def kill_children(root: Path, cache: str) -> dict[str, Path]:
    """Start one child per KILLS entry (all at once), SIGKILL each its delay after its marker ('in-write' for the
    hooks, 'started' for the random ones); returns each child's directory."""
    fork = multiprocessing.get_context("fork")
    dirs = {name: root / name for name in KILLS}
    procs = {}
    for name, directory in dirs.items():
        directory.mkdir()
        mode = "random" if name.startswith("random") else name
        procs[name] = fork.Process(target=child, args=(directory, cache, mode), daemon=True)
        procs[name].start()
    due: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(due) < len(procs) or any(procs[n].exitcode is None for n in due):
        now = time.monotonic()
        for name, proc in procs.items():
            marker = dirs[name] / ("started" if name.startswith("random") else "in-write")
            if name not in due and marker.exists():
                due[name] = now + KILLS[name]
            if name in due and now >= due[name] and proc.exitcode is None:
                proc.kill()  # SIGKILL
                proc.join()
            elif name not in due and (not proc.is_alive() or now > deadline):
                for other in procs.values():
                    other.kill()
                pytest.fail(f"the {name} run ended (exit code {proc.exitcode}) before its marker {marker.name}")
        time.sleep(0.005)
    return dirs


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = str(tmp_path_factory.mktemp("cache"))
    tiny_data(directory).prepare_data()
    return directory


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, cache: str) -> dict[str, Path]:
    """The directories of the killed runs."""
    return kill_children(tmp_path_factory.mktemp("killed"), cache)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory, cache: str) -> Losses:
    """The run never stopped."""
    return fit(tmp_path_factory.mktemp("whole"), cache, [])


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.filterwarnings("ignore:The dirpath has changed")
@pytest.mark.parametrize("name", list(KILLS))
def test_a_killed_run_leaves_a_checkpoint_that_resumes_exactly(
    tmp_path: Path, cache: str, killed: dict[str, Path], whole: Losses, name: str
) -> None:
    last = killed[name] / "ckpt" / "last.ckpt"
    saved = AtomicCheckpointIO().load_checkpoint(last)  # verified: every checksum matches
    step = saved["global_step"]
    if not name.startswith("random"):
        assert step == HANG_AT - 1, "the previous checkpoint, not the interrupted one"
        assert list((killed[name] / "ckpt").glob(".epoch=*.tmp")), "the kill came inside the write"
    assert 1 <= step <= STEPS
    resumed = fit(tmp_path, cache, [], ckpt_path=last)
    assert sorted(resumed.by_step) == list(range(step + 1, STEPS + 1))
    for s, loss in resumed.by_step.items():
        assert torch.equal(loss, whole.by_step[s]), f"step {s}: the resumed loss differs from the uninterrupted run"
