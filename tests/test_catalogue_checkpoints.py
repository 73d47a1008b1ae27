"""Checkpoints never lose work and refuse what is broken: every run keeps its own checkpoints, saves are atomic with
ordinary permissions, a full disk or an unwritable directory keeps the previous file, and a damaged, truncated,
foreign or diverged checkpoint is refused by name (issue 12)."""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import recursive_reasoning.checkpoint_io as checkpoint_io
from datamodules import GeneratedSudoku
from recursive_reasoning.callbacks import EMA, LatestRun
from recursive_reasoning.checkpoint_io import CHECKSUMS_KEY, AtomicCheckpointIO, verify_checkpoint
from recursive_reasoning.core.files import atomic_write
from recursive_reasoning.cli import main
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from recursive_reasoning.solve import load_solver
from strategies import TRM

ROOT = Path(__file__).resolve().parents[1]
TABLE = "net.puzzle_embedding.weight"
TINY_DEMO = ["--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
             "--trainer.enable_progress_bar=false", "--model.network.hidden_size=16", "--model.network.num_heads=2",
             "--model.strategy.init_args.supervision_steps=2", "--data.init_args.size=4",
             "--data.init_args.train_size=32", "--data.init_args.val_size=4", "--data.init_args.test_size=4",
             "--data.init_args.batch_size=8"]


def tiny_model(seed: int = 0) -> RecursiveReasoner:
    """TRM with a 3-row puzzle table and a 64-wide MLP (tensors of more than 4 KB)."""
    torch.manual_seed(seed)
    network = NetworkConfig(hidden_size=64, num_heads=2, num_layers=1, puzzle_emb_len=2)
    optim = OptimConfig(lr=1e-2, warmup_steps=0, puzzle_emb_lr=1e-1)
    return RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2), network, optim, vocab_size=6,
                             seq_len=16, num_puzzle_ids=3)


def tiny_data(cache: Path) -> GeneratedSudoku:
    return GeneratedSudoku(size=4, givens=8, train_size=32, val_size=8, test_size=8, batch_size=8,
                           cache_dir=str(cache))


def trainer(root: Path, max_steps: int, every_step: bool = False) -> L.Trainer:
    """A trainer writing through the project's checkpoint IO; `every_step` also keeps a checkpoint per step."""
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True, every_n_train_steps=1 if every_step else None)
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=root,
                     plugins=[AtomicCheckpointIO()], callbacks=[EMA(decay=0.9), checkpoint])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.ckpt of a 2-step run (EMA, puzzle table, data-module state), written by AtomicCheckpointIO."""
    root = tmp_path_factory.mktemp("saved")
    trainer(root, 2).fit(tiny_model(), tiny_data(root / "cache"))
    return root / "ckpt" / "last.ckpt"


def copy_of(saved: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(saved.read_bytes())
    return copy


def resume(path: Path, tmp_path: Path) -> None:
    """Resume training from `path` through the Trainer (its ckpt_path goes through the checkpoint IO)."""
    trainer(tmp_path / "resumed", 3).fit(tiny_model(), tiny_data(tmp_path / "cache"), ckpt_path=path)


def largest_weight(path: Path) -> tuple[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    return max(state.items(), key=lambda item: item[1].numel())


# --- never lose work -----------------------------------------------------------------------------------------------


def test_two_runs_of_a_recipe_keep_both_checkpoints_and_latest_names_the_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: both runs wrote runs/demo_sudoku/checkpoints/last.ckpt and the first model was gone."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", f"--config={ROOT / 'configs' / 'demo_sudoku.yaml'}", *TINY_DEMO]
    main(args)
    first = tmp_path / "runs" / "demo_sudoku" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    before = first.read_bytes()
    latest = tmp_path / "runs" / "demo_sudoku" / "latest"
    assert latest.is_symlink() and latest.resolve() == first.parent.parent.resolve()
    main([*args, "--seed_everything=1"])
    second = tmp_path / "runs" / "demo_sudoku" / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    assert first.read_bytes() == before, "the second run replaced the first run's checkpoint"
    assert second.exists() and second.read_bytes() != before
    assert (latest / "checkpoints" / "last.ckpt").resolve() == second.resolve(), "latest names the newest run"
    assert not (tmp_path / "runs" / "demo_sudoku" / "checkpoints").exists()


def test_latest_run_refuses_to_replace_a_file_that_is_not_a_link(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()
    run = L.Trainer(logger=L.pytorch.loggers.CSVLogger(tmp_path), default_root_dir=tmp_path)
    with pytest.raises(FileExistsError, match="latest exists and is not a link; LatestRun would replace it"):
        LatestRun().link(run)
    with pytest.raises(ValueError, match="must be a plain file name"):
        LatestRun("a/b")


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_checkpoints_get_the_permissions_of_any_new_file(tmp_path: Path, umask: int) -> None:
    """Before: 0o600 (mkstemp's mode) whatever the umask."""
    previous = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "a.ckpt")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.ckpt").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 == 0o666 & ~umask


def failing_save(monkeypatch: pytest.MonkeyPatch, err: OSError, after_step: int, trainer_: L.Trainer) -> None:
    """Make the checkpoint writes after `after_step` write half a file, then fail with `err`."""
    real = torch.save

    def save(obj: object, handle: object) -> None:
        if trainer_.global_step > after_step:
            handle.write(b"half a checkpoint")  # type: ignore[attr-defined]
            raise err
        real(obj, handle)

    monkeypatch.setattr(checkpoint_io.torch, "save", save)


@pytest.mark.parametrize(("err", "message"), [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "the disk is full"),
])
def test_full_disk_during_a_save_keeps_the_previous_checkpoint_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: OSError, message: str
) -> None:
    """Before: the same atomicity, but the raw OSError did not say that the previous checkpoint is intact or what to
    do."""
    run = trainer(tmp_path, 4, every_step=True)
    failing_save(monkeypatch, err, 2, run)
    with pytest.raises(OSError, match=f"could not write .*: {message} .*An existing .* is left as it was") as info:
        run.fit(tiny_model(), tiny_data(tmp_path / "cache"))
    assert info.value.errno == err.errno and "resume from the last checkpoint" in str(info.value)
    assert run.global_step == 3, "training stopped at the failed save"
    monkeypatch.undo()
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert not list((tmp_path / "ckpt").glob(".*.tmp")), "the half-written temporary file was removed"


def test_unwritable_directory_keeps_the_previous_checkpoint_and_names_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename into a read-only directory fails (as root, chmod cannot make one; the refusal is simulated)."""
    run = trainer(tmp_path, 4, every_step=True)
    real = os.replace

    def replace(src: str, dst: str) -> None:
        if run.global_step > 2:
            raise PermissionError(errno.EACCES, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(checkpoint_io.os, "replace", replace)
    with pytest.raises(PermissionError, match=f"its directory {tmp_path / 'ckpt'} is not writable"):
        run.fit(tiny_model(), tiny_data(tmp_path / "cache"))
    monkeypatch.undo()
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert not list((tmp_path / "ckpt").glob(".*.tmp"))


def test_atomic_write_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def write(handle: object) -> None:
        handle.write(b"new, but")  # type: ignore[attr-defined]
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="file.bin: the write failed .*Input/output error.*left as it was"):
        atomic_write(target, write)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


# --- refuse what is broken -----------------------------------------------------------------------------------------


def test_every_tensor_has_a_checksum_and_the_puzzle_table_is_stored_once(saved: Path) -> None:
    checkpoint = torch.load(saved, weights_only=True)
    sums = checkpoint[CHECKSUMS_KEY]
    assert {f"state_dict/{k}" for k in checkpoint["state_dict"]} <= sums.keys()
    assert any(k.startswith("optimizer_states/") for k in sums) and any(k.startswith("rr_carry/") for k in sums)
    assert sums[f"state_dict/{TABLE}"] == sums[f"current_model_state/{TABLE}"]
    table = checkpoint["state_dict"][TABLE]
    with zipfile.ZipFile(saved) as archive:  # one record of the table's size: torch.save kept the shared storage once
        sizes = [info.file_size for info in archive.infolist() if info.filename.split("/")[-2:-1] == ["data"]]
    assert sizes.count(table.numel() * table.element_size()) == 1


def test_random_bytes_in_a_tensor_are_refused_when_resuming(saved: Path, tmp_path: Path) -> None:
    """Before: 4 KB of random bytes inside a weight loaded silently and training went on from them."""
    path = copy_of(saved, tmp_path)
    name, weight = largest_weight(path)
    data = bytearray(path.read_bytes())
    start = data.find(weight.numpy().tobytes())
    assert start >= 0 and weight.numel() * weight.element_size() >= 4096
    data[start:start + 4096] = torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"checkpoint {path} is corrupted: tensor (state_dict|current_model_state)/"
                                         f"{name} differs from its saved checksum"):
        resume(path, tmp_path)


def test_random_bytes_in_a_tensor_are_refused_by_rr_solve(saved: Path, tmp_path: Path) -> None:
    path = copy_of(saved, tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["net.lm_head.weight"][0, 0] += 1.0  # a changed value under the original checksum
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="is corrupted: tensor state_dict/net.lm_head.weight differs from its saved"):
        load_solver(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name(saved: Path, tmp_path: Path, value: float) -> None:
    """Before: a diverged checkpoint loaded and solved nothing, silently."""
    checkpoint = torch.load(saved, weights_only=True)
    checkpoint["state_dict"]["net.lm_head.weight"][0, :3] = value
    path = tmp_path / "diverged.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)  # checksums of the diverged values: not corruption
    message = "holds non-finite weights: state_dict/net.lm_head.weight has 3 NaN or inf values"
    with pytest.raises(ValueError, match=message):
        load_solver(path)
    with pytest.raises(ValueError, match=message):
        AtomicCheckpointIO().load_checkpoint(path)


def test_a_truncated_checkpoint_is_refused_with_a_clear_message(saved: Path, tmp_path: Path) -> None:
    """Before: the Trainer raised PyTorch's 'PytorchStreamReader failed reading zip archive'."""
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"checkpoint {path} cannot be read: it is truncated or not a PyTorch "
                                         "checkpoint"):
        resume(path, tmp_path)


def test_a_file_that_is_no_checkpoint_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.ckpt cannot be read: it is truncated or not a PyTorch checkpoint"):
        AtomicCheckpointIO().load_checkpoint(text)
    listing = tmp_path / "list.ckpt"
    torch.save([torch.ones(1)], listing)
    with pytest.raises(ValueError, match="list.ckpt is not a checkpoint: it holds a list, not a dict of states"):
        AtomicCheckpointIO().load_checkpoint(listing)


def test_a_missing_or_unrecorded_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"a": torch.ones(3), "b": torch.zeros(2)}}, path)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["b"]
    with pytest.raises(ValueError, match="is corrupted: tensor state_dict/b is missing"):
        verify_checkpoint(checkpoint, path)
    checkpoint["state_dict"]["b"] = torch.zeros(2)
    checkpoint["state_dict"]["c"] = torch.ones(1)
    with pytest.raises(ValueError, match="is corrupted: tensor state_dict/c has no saved checksum"):
        verify_checkpoint(checkpoint, path)


def test_a_checkpoint_without_checksums_still_loads_with_a_warning(saved: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(saved, weights_only=True)
    del checkpoint[CHECKSUMS_KEY]
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)  # as earlier rr versions wrote it
    with pytest.warns(UserWarning, match="old.ckpt has no tensor checksums .*: loaded unverified"):
        model, _ = load_solver(path)
    assert torch.equal(model.state_dict()[TABLE], checkpoint["state_dict"][TABLE])
