"""Training logs cumulative FLOPs (`train/flops`, the analytic count of `recursive_reasoning.flops`) that follow a
curriculum's depth and survive a resume; `eval_weights='live'` evaluates the EMA run's un-averaged weights; test-time
evaluation reports how often answers settle and how reliable settled answers are."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import GeneratedSudoku
from recursive_reasoning.callbacks import EMA
from recursive_reasoning.flops import segment_flops
from recursive_reasoning.inference import TestTimeOptions
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from strategies import CGAR, RSM, TRM, Progress

NETWORK = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0)
BATCH = 8


def data(tmp_path: Path) -> GeneratedSudoku:
    return GeneratedSudoku(size=4, givens=8, train_size=64, val_size=8, test_size=16, batch_size=BATCH,
                           eval_batch_size=16, cache_dir=str(tmp_path / "cache"))


def trainer(root: Path, max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                     default_root_dir=root, **kwargs)


class FlopsLog(L.Callback):
    """The logged train/flops after every step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(trainer.callback_metrics["train/flops"]))


def test_train_flops_are_the_analytic_count_per_step_and_follow_the_curriculum(tmp_path: Path) -> None:
    torch.manual_seed(0)
    strategy = CGAR(cycles=2, latent_steps=2, supervision_steps=2, stage_depths=[(1, 1), (1, 2), (2, 2)])
    model = RecursiveReasoner(strategy, NETWORK, OptimConfig(warmup_steps=0), vocab_size=6, seq_len=16)
    log = FlopsLog()
    trainer(tmp_path, max_steps=6, callbacks=[log]).fit(model, data(tmp_path))
    expected = [BATCH * segment_flops(model.net, strategy, Progress(k, 6), True)["total"] for k in range(6)]
    assert len(set(expected)) == 3, "the three curriculum stages cost differently"
    cumulative = [sum(expected[: k + 1]) for k in range(6)]
    assert model.train_flops == cumulative[-1]
    assert log.values == pytest.approx(cumulative, rel=1e-6)


class Recorder(L.pytorch.loggers.Logger):
    """An in-memory logger: the metrics of every logging step."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict[str, float]] = {}

    name, version = "recorder", 0

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.setdefault(step, {}).update(metrics)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class DepthLog(L.Callback):
    """The depth in `callback_metrics` after every step."""

    def __init__(self) -> None:
        self.values: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append((float(trainer.callback_metrics["train/depth_H"]),
                            float(trainer.callback_metrics["train/depth_L"])))


def test_the_depth_is_current_every_step_and_reaches_the_logger_at_every_logging_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    strategy = CGAR(cycles=2, latent_steps=2, supervision_steps=2, stage_depths=[(1, 1), (1, 2)],
                    stage_bounds=[0.5])
    model = RecursiveReasoner(strategy, NETWORK, OptimConfig(warmup_steps=0), vocab_size=6, seq_len=16)
    log, recorder = DepthLog(), Recorder()
    # 12 steps over two epochs of 8 batches: the depth changes once, in the first; the second logs it again
    run = L.Trainer(accelerator="cpu", max_steps=12, logger=recorder, log_every_n_steps=3, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp_path,
                    callbacks=[log])
    run.fit(model, data(tmp_path))
    expected = [tuple(map(float, strategy.depth(Progress(k, 12), True))) for k in range(12)]
    assert len(set(expected[:8])) == 2 and len(set(expected[8:])) == 1 and log.values == expected
    depth_rows = {step: (row["train/depth_H"], row["train/depth_L"]) for step, row in recorder.rows.items()
                  if "train/depth_H" in row}
    assert depth_rows and all(expected[step] == depth for step, depth in depth_rows.items())
    assert all(step in depth_rows for step, row in recorder.rows.items() if "train/loss" in row)


def test_train_flops_resume_from_the_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    make = lambda: RecursiveReasoner(TRM(cycles=2, latent_steps=1, supervision_steps=2), NETWORK,  # noqa: E731
                                     OptimConfig(warmup_steps=0), vocab_size=6, seq_len=16)
    first = make()
    trainer(tmp_path / "a", max_steps=2).fit(first, data(tmp_path))
    checkpoint = next((tmp_path / "a").rglob("*.ckpt"))
    assert torch.load(checkpoint, weights_only=False)["rr_train_flops"] == first.train_flops > 0
    resumed = make()
    trainer(tmp_path / "b", max_steps=4).fit(resumed, data(tmp_path), ckpt_path=checkpoint)
    assert resumed.train_flops == 2 * first.train_flops  # a fixed-depth strategy: the same count every step


def test_an_rsm_step_counts_the_gradient_window_it_drew(tmp_path: Path) -> None:
    torch.manual_seed(0)
    strategy = RSM(h_schedule=[(0.0, 2)], l_schedule=[(0.0, 1)], p_detach=0.5)
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0, halt_head=False,
                            token_mlp_norm="channels")
    model = RecursiveReasoner(strategy, network, OptimConfig(warmup_steps=0), vocab_size=6, seq_len=16)
    counts: list[tuple[int, bool]] = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            counts.append((pl_module.train_flops, pl_module.last_segment.calls[1] == 3))

    trainer(tmp_path, max_steps=8, callbacks=[Probe()]).fit(model, data(tmp_path))
    cost = {}
    for grad in (True, False):
        drawn = replace(model.last_segment, calls=(4, 2 + grad))
        cost[grad] = BATCH * segment_flops(model.net, strategy, Progress(0, 8), True, segment=drawn)["total"]
    assert cost[True] > cost[False]
    previous = 0
    for total, grad in counts:
        assert total - previous == cost[grad], "each step adds the cost of the window its segment drew"
        previous = total
    assert {grad for _, grad in counts} == {True, False}, "p_detach 0.5 over 8 steps drew both windows"


def test_live_eval_weights_evaluate_the_un_averaged_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    make = lambda **kw: RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2), NETWORK,  # noqa: E731
                                          OptimConfig(lr=1e-2, warmup_steps=0), vocab_size=6, seq_len=16, **kw)
    model = make()
    trainer(tmp_path / "fit", max_steps=4, callbacks=[EMA(decay=0.5)]).fit(model, data(tmp_path))
    checkpoint = next((tmp_path / "fit").rglob("*.ckpt"))
    saved = torch.load(checkpoint, weights_only=False)
    name = "net.lm_head.weight"
    assert not torch.equal(saved["state_dict"][name], saved["current_model_state"][name])
    seen = {}
    for weights in ("averaged", "live"):
        evaluated = make(eval_weights=weights)

        class Probe(L.Callback):
            def on_test_start(self, trainer, pl_module) -> None:
                seen[weights] = pl_module.net.lm_head.weight.detach().clone()

        trainer(tmp_path / weights, max_steps=1, callbacks=[Probe()]).test(evaluated, data(tmp_path),
                                                                           ckpt_path=checkpoint, verbose=False)
    assert torch.equal(seen["averaged"], saved["state_dict"][name])
    assert torch.equal(seen["live"], saved["current_model_state"][name])

    plain = tmp_path / "plain"
    trainer(plain, max_steps=2).fit(make(), data(tmp_path))
    with pytest.raises(ValueError, match="needs a checkpoint trained with the EMA callback"):
        trainer(plain / "t", max_steps=1).test(make(eval_weights="live"), data(tmp_path),
                                               ckpt_path=next(plain.rglob("*.ckpt")), verbose=False)
    with pytest.raises(ValueError, match="unknown eval_weights"):
        make(eval_weights="ema")


def test_test_time_evaluation_reports_settled_reliability(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=3), NETWORK,
                              OptimConfig(lr=1e-2, warmup_steps=0), vocab_size=6, seq_len=16,
                              test_time=TestTimeOptions(steps=3, settle_k=2))
    test = trainer(tmp_path, max_steps=6)
    test.fit(model, data(tmp_path))
    metrics = test.test(model, data(tmp_path), verbose=False)[0]
    fraction = metrics["test/settled_fraction"]
    assert 0.0 <= fraction <= 1.0
    parts = [metrics.get("test/exact_accuracy_settled"), metrics.get("test/exact_accuracy_unsettled")]
    weights = [fraction, 1.0 - fraction]
    total = sum(w * p for w, p in zip(weights, parts) if p is not None)
    assert total == pytest.approx(metrics["test/exact_accuracy"], abs=1e-6)
