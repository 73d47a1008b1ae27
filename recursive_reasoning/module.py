"""`RecursiveReasoner`: the LightningModule that owns the network, the strategy, the ACT carry and the loops.

Training (reference-code semantics, spec section 3): one training step is one supervision segment for every slot of
the batch and one optimiser step; the carry persists across batches, halted slots take the new batch's example.
Under DDP each rank's carry holds its slice of the global batch; checkpoints hold the carry of all ranks and their RNG
states, so a resumed run continues exactly (docs/scaling.md).
Evaluation: every example starts fresh and runs all N_sup segments (or stops early where the strategy says so).
Training also logs `train/flops`, the cumulative analytic matmul FLOPs of every segment so far (all ranks;
`recursive_reasoning.flops`), saved in checkpoints, so methods compare at equal compute.
The other training metrics are summed on the device and logged at logging steps (`log_every_n_steps`, and the last
step) as means over the interval, reduced over the ranks once (`recursive_reasoning.metrics.TrainingSums`). The
non-finite check stays on the device too (`recursive_reasoning.finite_guard`): from a non-finite loss or gradient on,
the optimisers and the EMA skip their updates, and the flag is read with the logged sums, before every checkpoint and
at the end of training. The strategy's `depth` is logged as train/depth_H and train/depth_L (host tensors, like
train/flops) at logging steps and when it changes, and each of its `evaluation_variants()` (named strategy copies,
e.g. RSM's eval_depths) adds {stage}/exact_accuracy@{name}.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from datamodules.base import PuzzleDataModule
from datamodules.kinds import PuzzleKind
from recursive_reasoning.flops import call_flops, segment_flops
from recursive_reasoning.inference import Solution, TestTimeOptions, oracle_majority, solve_ensemble
from recursive_reasoning.core.losses import IGNORE_LABEL_ID, sequence_loss
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from recursive_reasoning.callbacks import late_checkpoints
from recursive_reasoning.loading import load_trained
from recursive_reasoning.finite_guard import FiniteGuard
from recursive_reasoning.metrics import PuzzleMetrics, TrainingSums
from recursive_reasoning.optim import AdamATan2, OptimConfig, OptimizerBundle, SignSGD, clip_gradients, reference_schedule
from recursive_reasoning.resume import carry_slice, carry_state, gathered_objects, rng_states, set_rng_states
from strategies.base import Batch, Carry, Progress, RecursionStrategy, SegmentOutput
from strategies.trm import TRM


class StepAccuracy(Metric):
    """Exact accuracy after each reasoning step s = 1..S (no freezing) over labelled rows, summed on every rank.

    States: per-step exact counts and row counts [S], shaped at the first update of an epoch (S is the strategy's
    `evaluation_steps`, fixed while an epoch evaluates). A step a batch did not run (early exit stopped it) adds
    nothing.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("exact", default=torch.zeros(0), dist_reduce_fx="sum")
        self.add_state("rows", default=torch.zeros(0), dist_reduce_fx="sum")

    def update(self, exact_by_step: Tensor, labelled: Tensor, steps: int) -> None:
        """Add a batch: exact [S', B] bool after the S' <= steps steps it ran, labelled [B] bool, S = steps."""
        if self.exact.numel() == 0:
            self.exact = torch.zeros(steps, device=labelled.device)
            self.rows = torch.zeros(steps, device=labelled.device)
        if self.exact.numel() != steps or exact_by_step.shape[0] > steps:
            raise ValueError(f"per-step accuracy was recording {self.exact.numel()} steps, this batch plans {steps} "
                             f"and ran {exact_by_step.shape[0]}; reset it when the evaluation depth changes")
        ran = exact_by_step.shape[0]
        self.exact[:ran] += (exact_by_step & labelled).sum(1).to(self.exact.dtype)
        self.rows[:ran] += labelled.sum().to(self.rows.dtype)

    def compute(self) -> Tensor:
        """Exact accuracy [S] per step (NaN for a step no labelled row reached)."""
        return torch.where(self.rows > 0, self.exact / self.rows.clamp(min=1), torch.full_like(self.rows, torch.nan))


class RecursiveReasoner(L.LightningModule):
    """A recursive reasoning model: a `ReasoningNetwork` driven by a swappable `RecursionStrategy`.

    Args:
        strategy: The recursion method (class_path + init_args in YAML), e.g. strategies.TRM.
        network: Architecture hyperparameters.
        optim: Optimiser and learning-rate schedule.
        vocab_size: Token ids of the task (linked from the data module).
        seq_len: Tokens per example (linked from the data module).
        num_puzzle_ids: Rows of the puzzle-embedding table (linked from the data module).
        supervision_schedule: 'carry': one segment per training step with the cross-batch ACT carry (the reference
            code, default); 'batch': the paper's pseudo-code, all N_sup segments on the same batch inside one
            training step with an optimiser step after each, halted slots dropped from the loss, early stop when
            every slot has halted (manual optimisation; gradient accumulation is not supported there).
        test_time: Test-time compute for validation, test and prediction (depth, early exit, voting over the data
            module's puzzle symmetries, latent noise, selection); None is one plain pass.
        ensemble: Further checkpoints (files, or directories of `LateCheckpoints` files) that validate, test and
            predict run beside this model under `test_time`, all answers voting together; `{stage}/
            oracle_majority_exact` then scores Augmented HRM's per-checkpoint majority. Not used while fitting.
        eval_weights: Which weights of a checkpoint validate, test and predict evaluate: 'averaged' (its state_dict:
            the EMA average when it was trained with the EMA callback) or 'live' (the un-averaged training weights the
            EMA callback also saves): the "no EMA" ablation of the same run, whose training EMA never changes.
    """

    def __init__(
        self,
        strategy: RecursionStrategy | None = None,
        network: NetworkConfig | None = None,
        optim: OptimConfig | None = None,
        vocab_size: int = 11,
        seq_len: int = 81,
        num_puzzle_ids: int = 1,
        supervision_schedule: Literal["carry", "batch"] = "carry",
        test_time: TestTimeOptions | None = None,
        ensemble: list[str] | None = None,
        eval_weights: Literal["averaged", "live"] = "averaged",
    ) -> None:
        super().__init__()
        if eval_weights not in ("averaged", "live"):
            raise ValueError(f"unknown eval_weights {eval_weights!r}; choose 'averaged' or 'live'.")
        self.eval_weights = eval_weights  # like test_time, not saved: how a run evaluates
        if supervision_schedule not in ("carry", "batch"):
            raise ValueError(f"unknown supervision_schedule {supervision_schedule!r}; choose 'carry' or 'batch'.")
        self.supervision_schedule = supervision_schedule
        self.automatic_optimization = supervision_schedule == "carry"
        # Checkpoints store these three as plain data (weights_only-safe); `load_from_checkpoint` passes them back.
        # test_time is not saved: it is how a run evaluates, not part of the trained model (LightningCLI applies a
        # checkpoint's hyperparameters over the command line, which would drop a --model.test_time given with it).
        if isinstance(strategy, dict):
            strategy = RecursionStrategy.from_hparams(strategy)
        if isinstance(network, dict):
            network = NetworkConfig(**network)
        if isinstance(optim, dict):
            optim = OptimConfig(**{**optim, "betas": tuple(optim.get("betas", (0.9, 0.95)))})
        if isinstance(test_time, dict):
            test_time = TestTimeOptions(**test_time)
        self.test_time = test_time
        self.ensemble = list(ensemble or [])  # like test_time, not saved: how a run evaluates
        self._ensemble_members: list[RecursiveReasoner] | None = None
        self.strategy = strategy if strategy is not None else TRM()
        self.network_config = network if network is not None else NetworkConfig()
        self.optim_config = optim if optim is not None else OptimConfig()
        self.save_hyperparameters(
            {
                "strategy": self.strategy.hparams(),
                "network": asdict(self.network_config),
                "optim": asdict(self.optim_config),
                "vocab_size": vocab_size,
                "seq_len": seq_len,
                "num_puzzle_ids": num_puzzle_ids,
                "supervision_schedule": supervision_schedule,
            }
        )
        self.net = ReasoningNetwork(self.network_config, vocab_size, seq_len, num_puzzle_ids)
        # The sparse puzzle table is synchronised by SignSGD itself (summed sparse gradients), never by DDP.
        self._ddp_params_and_buffers_to_ignore = self.live_parameter_names()
        self.carry: Carry | None = None
        self.last_segment: SegmentOutput | None = None  # the last training segment's output, detached (for callbacks)
        self._checkpoint_progress: Progress | None = None
        self._resume_state: dict[str, Any] | None = None  # carry and RNG states of a checkpoint, until training starts
        self._carry_restored = False
        self.train_flops = 0  # cumulative training FLOPs over all ranks (a Python int: counting needs no sync)
        self._train_sums = TrainingSums()  # training metrics on the device until a logging step
        self.guard = FiniteGuard()  # the non-finite check, read at logging steps, checkpoints and the end
        self._logged_depth: tuple[int, int] | None = None  # the depth last logged (logged again when it changes)
        self._call_flops = call_flops(self.net)
        self.val_metrics = PuzzleMetrics()
        self.test_metrics = PuzzleMetrics()
        self.step_accuracy = nn.ModuleDict({stage: StepAccuracy() for stage in ("val", "test")})
        self.variants = self.strategy.evaluation_variants()
        self.variant_metrics = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in ("val", "test") for name in self.variants}
        )
        self.test_time_metrics = nn.ModuleDict(  # exact accuracies beside the selection, over labelled rows
            {f"{stage}_{name}": MeanMetric() for stage in ("val", "test")
             for name in ("oracle_majority_exact", "exact_accuracy_label_free", "settled_fraction",
                          "exact_accuracy_settled", "exact_accuracy_unsettled")}
        )
        self._evaluators: dict[str, Any] = {}  # the data module's task evaluators (a plain dict: not submodules)

    def live_parameter_names(self) -> list[str]:
        """Parameters kept live, never averaged (EMA): the sparse puzzle-embedding table, as in the reference code."""
        return ["net.puzzle_embedding.weight"] if self.net.prefix_len else []

    # --- progress ----------------------------------------------------------------------------------------------

    def progress(self) -> Progress:
        """Optimiser steps taken and the planned total.

        While fitting: the trainer's step and max_steps (or its estimate). Outside fitting (validate, test, predict
        on a checkpoint): the progress saved in the checkpoint, so a curriculum evaluates at the depth it reached.
        """
        if self._trainer is None:
            return self._checkpoint_progress or Progress(0)
        if self.trainer.state.fn != TrainerFn.FITTING and self._checkpoint_progress is not None:
            return self._checkpoint_progress
        total = None
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            total = self.trainer.max_steps
        elif self.trainer.state.fn == TrainerFn.FITTING:
            estimate = self.trainer.estimated_stepping_batches
            total = int(estimate) if estimate not in (None, float("inf")) and estimate > 0 else None
        return Progress(self.trainer.global_step, total)

    def setup(self, stage: str) -> None:
        """Under DDP, turn off its buffer broadcast (a collective before every forward) unless the user chose
        `broadcast_buffers`: rr's buffers (RoPE tables, the initial states) never change after DDP's construction-time
        sync. A model holding running statistics (batch norm) keeps the broadcast."""
        strategy = self.trainer.strategy
        if stage != "fit" or not isinstance(strategy, DDPStrategy) or "broadcast_buffers" in strategy._ddp_kwargs:
            return
        running_stats = any(getattr(m, "track_running_stats", False) for m in self.modules())
        strategy._ddp_kwargs["broadcast_buffers"] = running_stats
        if not running_stats:
            rank_zero_info("rr: DDP broadcast_buffers=False (rr's buffers are constant; set it on the strategy to "
                           "override)")

    def on_fit_start(self) -> None:
        """Fail before the first step if the strategy's schedule needs a total number of steps that is unknown."""
        self.strategy.depth(self.progress(), True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the progress, and while fitting what exact resumption needs beyond Lightning's own state: the ACT
        carry of every rank (concatenated in rank order: the single-process slot order) and every rank's RNG states.

        Under DDP this gathers from all ranks, so it must run on all of them, as `trainer.save_checkpoint` does. A
        weights-only checkpoint (no optimiser states: it cannot resume training) gets neither.
        """
        self.raise_if_nonfinite()  # never a checkpoint of a run that saw a non-finite loss
        progress = self.progress()
        checkpoint["rr_progress"] = {"step": progress.step, "total": progress.total}
        checkpoint["rr_train_flops"] = self.train_flops
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if not fitting or "optimizer_states" not in checkpoint:
            return
        if self.carry is not None:
            checkpoint["rr_carry"] = carry_state(self.carry)
        checkpoint["rr_rng"] = gathered_objects(rng_states())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = self._datamodule()
        if datamodule is not None:  # e.g. ARC refuses a different puzzle-id map before the weights load
            datamodule.check_checkpoint(checkpoint)
        self._check_shapes(checkpoint.get("hyper_parameters", {}))
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if self.eval_weights == "live" and not fitting:
            if "current_model_state" not in checkpoint:
                raise ValueError(
                    "eval_weights 'live' needs a checkpoint trained with the EMA callback, which saves the live "
                    "weights beside the averaged ones; this checkpoint holds one set of weights. Drop "
                    "--model.eval_weights"
                )
            checkpoint["state_dict"] = dict(checkpoint["current_model_state"])
        saved = checkpoint.get("rr_progress")
        self._checkpoint_progress = Progress(saved["step"], saved["total"]) if saved else None
        self.train_flops = int(checkpoint.get("rr_train_flops", 0))
        if self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            self._resume_state = {"carry": checkpoint.get("rr_carry"), "rng": checkpoint.get("rr_rng")}
            self._use_this_runs_optim(checkpoint)

    def _use_this_runs_optim(self, checkpoint: dict[str, Any]) -> None:
        """Put this run's `optim` rates and decays into the checkpoint's optimiser and scheduler states before
        Lightning restores them (the Adam moments stay), so fine-tuning at a new lr takes effect; unchanged values
        are left untouched, so a plain resume stays exact. Otherwise the saved lr and base rates would win silently."""
        c = self.optim_config
        wanted = [{"lr": c.lr, "betas": tuple(c.betas), "weight_decay": c.weight_decay},
                  {"lr": c.puzzle_emb_lr, "weight_decay": c.puzzle_emb_weight_decay}]
        base_lrs: list[float] = []
        for state in checkpoint.get("optimizer_states", []):
            for member, options in zip(state.get("members", []), wanted):
                for group in member["param_groups"]:
                    base = group.get("initial_lr", group["lr"])
                    if base != options["lr"]:
                        group["lr"] = group["lr"] / base * options["lr"] if base else options["lr"]
                        group["initial_lr"] = options["lr"]
                    for key in ("betas", "weight_decay"):
                        if key in options and key in group and tuple(np.atleast_1d(group[key])) != tuple(
                                np.atleast_1d(options[key])):
                            group[key] = options[key]
                    base_lrs.append(options["lr"])
        for scheduler in checkpoint.get("lr_schedulers", []):
            if "base_lrs" in scheduler and len(scheduler["base_lrs"]) == len(base_lrs):
                scheduler["base_lrs"] = list(base_lrs)

    def on_train_end(self) -> None:
        """Stop with the non-finite error if a failure came after the last logging step."""
        self.raise_if_nonfinite()

    def on_train_start(self) -> None:
        """When fitting resumes from a checkpoint: take this rank's slots of the saved carry and its RNG states.

        Done here rather than at loading, which comes before the model is on its device and before the sanity check.
        A fresh multi-rank run instead gives every rank but 0 its own torch seed (initial seed + rank): all ranks are
        seeded alike, and halt exploration would otherwise draw the same numbers for slot i of every rank.
        """
        state, self._resume_state = self._resume_state, None
        self._train_sums = TrainingSums()  # nothing of an earlier fit is logged in this one
        self.guard.reset()
        self._logged_depth = None
        world_size, rank = self.trainer.world_size, self.trainer.global_rank
        if state is None:
            if rank > 0:
                torch.manual_seed((torch.initial_seed() + rank) % 2**64)
            return
        if state["carry"] is not None:
            carry = carry_slice(state["carry"], world_size, rank, self.device)
            if carry is None:
                rank_zero_warn(
                    f"the checkpoint's ACT carry has {state['carry']['steps'].shape[0]} slots, which {world_size} "
                    "devices cannot share equally; every slot restarts with a new example"
                )
            self.carry, self._carry_restored = carry, carry is not None
        rng = state["rng"]
        if rng:
            if len(rng) != world_size:
                rank_zero_warn(
                    f"the checkpoint holds the RNG states of {len(rng)} ranks, this run has {world_size}; each rank "
                    "takes its own rank's states where saved, but random draws (halt exploration) differ from the "
                    "original run"
                )
            if rank < len(rng):
                set_rng_states(rng[rank])

    def _check_shapes(self, saved: dict[str, Any]) -> None:
        """Refuse a checkpoint whose task shape or architecture differs from this model's, naming each difference."""
        ours = self.hparams
        differences = [
            f"{name}: checkpoint {saved[name]!r}, this run {ours[name]!r}"
            for name in ("vocab_size", "seq_len", "num_puzzle_ids")
            if name in saved and saved[name] != ours[name]
        ]
        network = saved.get("network") or {}
        differences += [
            f"network.{key}: checkpoint {value!r}, this run {ours['network'].get(key)!r}"
            for key, value in network.items()
            if key in ours["network"] and value != ours["network"][key]
        ]
        if differences:
            raise ValueError(
                "the checkpoint does not fit this model (" + "; ".join(differences) + "). Use the configuration (and "
                "data) the checkpoint was trained with, e.g. the config.yaml saved beside it in the log directory"
            )

    # --- training ----------------------------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if self.supervision_schedule == "batch":
            return self._train_segments_on_batch(batch)
        size = batch["inputs"].shape[0]
        if self.carry is None or self.carry.steps.shape[0] != size or self.carry.steps.device != self.device:
            if self._carry_restored:
                rank_zero_warn(
                    f"the checkpoint's ACT carry holds {self.carry.steps.shape[0]} slots per device, this run's batch "
                    f"{size}; every slot restarts with a new example (keep the global batch size for exact resumption)"
                )
            self.carry = self.strategy.initial_carry(self.net, batch)
        self._carry_restored = False
        carry = self.strategy.refresh(self.net, self.carry, batch)
        total, self.carry = self._train_segment(carry, self.progress())
        return total

    def _train_segments_on_batch(self, batch: Batch) -> None:
        """The paper's schedule: up to N_sup segments on this batch, an optimiser step after each."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        carry = self.strategy.refresh(self.net, self.strategy.initial_carry(self.net, batch), batch)
        active = torch.ones_like(carry.halted)
        for _ in range(self.strategy.supervision_steps):
            total, carry = self._train_segment(carry, self.progress(), slot_mask=active)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(total)
            clip = self.trainer.gradient_clip_val
            if clip:
                self.clip_gradients(optimizer, clip, self.trainer.gradient_clip_algorithm)
            optimizer.step()
            scheduler.step()
            active = active & ~carry.halted
            # every rank stops at the same segment: DDP's gradient all-reduce needs the same number of backward passes
            if not self.trainer.strategy.reduce_boolean_decision(bool(active.any()), all=False):
                break

    def _train_segment(
        self, carry: Carry, progress: Progress, slot_mask: Tensor | None = None
    ) -> tuple[Tensor, Carry]:
        """Run one training segment on a refreshed carry, log it, and return (loss to optimise, advanced carry)."""
        strategy = self.strategy
        size = carry.steps.shape[0]
        out = strategy.run_segment(self.net, carry, progress, training=True)
        loss = strategy.loss(self.net, carry, out, progress, slot_mask=slot_mask)
        carry = strategy.advance(carry, out, training=True)
        # counted after the segment: a stochastic gradient window (RSM) reports the draw this segment made
        step_flops = segment_flops(self.net, strategy, progress, True, self._call_flops, segment=out)["total"]
        self.train_flops += step_flops * size * (self.trainer.world_size if self._trainer is not None else 1)
        self.last_segment = SegmentOutput(out.y.detach(), out.z.detach(), out.logits.detach(),
                                          out.halt_logits.detach(), out.continue_logits.detach(), out.calls)

        # metrics over the examples that finished in this step and have a label, as the reference reports them,
        # summed on the device until a logging step (train/finished counts them; an interval with none logs no means)
        finished = carry.halted & PuzzleMetrics.labelled(carry.batch["labels"])
        if slot_mask is not None:
            finished = finished & slot_mask
        total = loss.total / size
        names = ("loss", *loss.terms)  # the loss and its terms, per example: one stack, one division
        values = torch.stack([loss.total.detach(), *(v.detach() for v in loss.terms.values())]).float() / size
        self._train_sums.add(finished, loss.token_accuracy, loss.exact, out.halt_logits.detach(), carry.steps,
                             values, names)
        # on the device: the optimisers and the EMA skip every update from a non-finite loss on (read when logging)
        self.guard.observe_loss(values, names, progress.step)
        if self._trainer is None:  # a bare call, outside the training loop: nothing else will read the flag
            self.guard.raise_if_tripped()
            return total, carry
        logging = self._logging_step()
        self._log_host_numbers(strategy.depth(progress, True), logging)  # host tensors: no device work
        if logging:
            self._log_training_sums()
        return total, carry

    def raise_if_nonfinite(self) -> None:
        """Stop training if any rank saw a non-finite loss or gradient (one host read; all ranks call it together)."""
        flag = self.guard.flag()
        if flag is None:
            return
        if self._trainer is not None and self.trainer.world_size > 1:
            flag = self.trainer.strategy.reduce(flag, reduce_op="sum")
        self.guard.raise_if_tripped(float(flag.cpu()))

    def _logging_step(self) -> bool:
        """Whether this training step writes the logs: Lightning's `log_every_n_steps` test, or the last step."""
        trainer = self.trainer
        last = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step + 1
        return trainer._logger_connector.should_update_logs or last

    def _log_training_sums(self) -> None:
        """Log the training metrics summed since the last logging step: one reduction over the ranks (stacked), one
        copy to the host; the logged values are host tensors, so neither the loggers nor the progress bar read the
        device again."""
        trainer = self.trainer
        means, tripped = self._train_sums.means(lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
                                                trainer.world_size, self.guard.flag())
        if tripped is not None:
            self.guard.raise_if_tripped(float(tripped))
        for name, value in means.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=name == "loss")

    def _log_host_numbers(self, depth: tuple[int, int] | None, logging: bool) -> None:
        """Log train/flops every step and the depth (train/depth_H and train/depth_L) at logging steps and whenever it
        changes (`callback_metrics` keeps it between), as host tensors: no device copy."""
        numbers = {"flops": float(self.train_flops)}
        if depth is not None and (logging or depth != self._logged_depth):
            numbers.update(depth_H=float(depth[0]), depth_L=float(depth[1]))
            self._logged_depth = depth
        values = torch.tensor(list(numbers.values()), dtype=torch.float64)
        for index, name in enumerate(numbers):
            self.log(f"train/{name}", values[index], on_step=True, on_epoch=False)

    # --- evaluation --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def solve(
        self, batch: Batch, early_exit: bool | None = None, strategy: RecursionStrategy | None = None
    ) -> dict[str, Tensor]:
        """Run every example from the initial states through the strategy's `reasoning_steps`; the answer per slot.

        Args:
            batch: inputs [B, L], labels [B, L] (optional) and puzzle_ids [B].
            early_exit: Freeze each example at its first step where the strategy's halting rule fires (`halted`);
                None uses the strategy's `eval_early_exit`.
            strategy: Evaluate with this strategy instead of the module's (e.g. an evaluation variant).

        Returns:
            logits [B, L, V], halt_logits [B], steps [B] (reasoning steps used: segments; RSM: outer steps), and with
            labels exact_by_step [S', B] bool: whether each step's own answer is exact, frozen or not, for the S'
            steps run (all S unless early exit stopped the batch).
        """
        strategy, progress = strategy if strategy is not None else self.strategy, self.progress()
        early_exit = strategy.eval_early_exit if early_exit is None else early_exit
        labels = batch.get("labels")
        size, device = batch["inputs"].shape[0], batch["inputs"].device
        done = torch.zeros(size, dtype=torch.bool, device=device)
        logits = halt = steps = None
        exact_by_step = []
        for index, step in enumerate(strategy.reasoning_steps(self.net, batch, progress), start=1):
            if logits is None:
                logits, halt = step.logits, step.halt_logits
                steps = torch.full((size,), index, dtype=torch.int32, device=device)
            else:
                live = ~done
                logits = torch.where(live.view(-1, 1, 1), step.logits, logits)
                halt = torch.where(live, step.halt_logits, halt)
                steps = torch.where(live, index, steps)
            if labels is not None:
                exact_by_step.append(((step.logits.argmax(-1) == labels) | (labels == IGNORE_LABEL_ID)).all(-1))
            if early_exit:
                done = done | step.halted
                if bool(done.all()):
                    break
        result = {"logits": logits, "halt_logits": halt, "steps": steps}
        if labels is not None:
            result["exact_by_step"] = torch.stack(exact_by_step)
        return result

    def exact_accuracy_by_step(self, stage: Literal["val", "test"]) -> list[float]:
        """Exact accuracy of the last `stage` epoch had every example stopped after step s = 1..S (plain evaluation,
        labelled rows, all ranks); [] before any; reset when the next epoch of the stage starts."""
        metric = self.step_accuracy[stage]
        return metric.compute().tolist() if metric.update_count else []

    def _log_step_accuracy(self, stage: str) -> None:
        """Log `exact_accuracy_by_step` as {stage}/exact_accuracy@step{s}."""
        for index, value in enumerate(self.exact_accuracy_by_step(stage), start=1):  # type: ignore[arg-type]
            self.log(f"{stage}/exact_accuracy@step{index}", value, sync_dist=True)

    def _start_evaluation(self, stage: str) -> None:
        """Take a fresh task evaluator from the data module, if it offers one (nothing carries over)."""
        datamodule = self._datamodule()
        evaluator = datamodule.evaluator(stage) if datamodule is not None else None
        self._evaluators.pop(stage, None)
        if evaluator is not None:
            self._evaluators[stage] = evaluator.to(self.device)

    def _finish_evaluation(self, stage: str) -> None:
        """Log the task evaluator's scores as {stage}/{name}, write its artefact (rank 0, not in the sanity check)."""
        evaluator = self._evaluators.pop(stage, None)
        if evaluator is None:
            return
        for name, value in evaluator.compute().items():
            self.log(f"{stage}/{name}", value, prog_bar=name in evaluator.progress_bar)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            directory = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            path = evaluator.write(directory, f"{stage}_step{self.progress().step}")
            if path is not None:
                rank_zero_info(f"{stage}: wrote {path}")
        evaluator.reset()

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")
        self.step_accuracy["val"].reset()

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")
        self._log_step_accuracy("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")
        self.step_accuracy["test"].reset()

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")
        self._log_step_accuracy("test")

    def _datamodule(self) -> PuzzleDataModule | None:
        """The trainer's data module; None without a trainer or when the trainer was given plain dataloaders."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is None or isinstance(datamodule, PuzzleDataModule):
            return datamodule
        raise TypeError(
            f"RecursiveReasoner needs a datamodules.base.PuzzleDataModule (it declares vocab_size, seq_len, "
            f"num_puzzle_ids, puzzle_kind, evaluator and check_checkpoint), got {type(datamodule).__qualname__}; "
            "subclass PuzzleDataModule, or pass plain dataloaders instead of a data module"
        )

    def _puzzle_kind(self) -> PuzzleKind | None:
        """The data module's puzzle kind (test-time symmetries, rule checker); None without one."""
        datamodule = self._datamodule()
        return datamodule.puzzle_kind if datamodule is not None else None

    def _fitting(self) -> bool:
        return self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING

    def _uses_test_time(self) -> bool:
        """Whether evaluation goes through `solve_ensemble`: non-plain test-time options or ensemble checkpoints."""
        plain = self.test_time is None or self.test_time.is_plain
        return not plain or (bool(self.ensemble) and not self._fitting())

    def _members(self) -> list[RecursiveReasoner]:
        """The `ensemble` checkpoints, loaded once onto this model's device; plain attributes, never submodules."""
        if self._ensemble_members is None:
            own = self._trainer.ckpt_path if self._trainer is not None else None
            paths = [p for entry in self.ensemble
                     for p in (late_checkpoints(entry) if Path(entry).is_dir() else [Path(entry)])]
            paths = [p for p in paths if own is None or p.resolve() != Path(own).resolve()]
            kind = self._puzzle_kind()
            members = []
            for path in paths:
                member, member_kind = load_trained(path, type(self), str(self.device))
                if kind is not None and member_kind.describe() != kind.describe():
                    raise ValueError(f"ensemble checkpoint {path} solves {member_kind.describe()}, but the data module "
                                     f"gives {kind.describe()}; ensemble checkpoints of the same task only")
                try:
                    self._check_shapes(member.hparams)
                except ValueError as err:
                    raise ValueError(f"ensemble checkpoint {path}: {err}") from None
                members.append(member)
            self._ensemble_members = members
        return self._ensemble_members

    def _solve_with_test_time(self, batch: Batch) -> Solution:
        options = self.test_time if self.test_time is not None else TestTimeOptions()
        members = [(self.net, self.strategy, self.progress())]
        if not self._fitting():
            members += [(m.net, m.strategy, m.progress()) for m in self._members()]
        return solve_ensemble(members, batch, options, self._puzzle_kind())

    def _test_time_step(self, batch: Batch, metrics: PuzzleMetrics, stage: str) -> None:
        """Evaluation under `test_time`: exact accuracy of the selected answers, steps used, steps run per puzzle,
        beside a rule-checker selection the label-free vote's exact accuracy, with a Q head the oracle
        `oracle_majority_exact` (Augmented HRM: per checkpoint a strict majority of correct confident passes), and
        the fraction of settled answers with the exact accuracy of the settled and of the unsettled ones."""
        solution = self._solve_with_test_time(batch)
        labels, size = batch["labels"], batch["inputs"].shape[0]
        valid = labels != IGNORE_LABEL_ID
        exact = ((solution.predictions == labels) | ~valid).all(-1)
        token_acc = ((solution.predictions == labels) & valid).sum(-1) / valid.sum(-1).clamp(min=1)
        halt = torch.nan_to_num(solution.confidence - 0.5, nan=-1.0)  # sign of the q_halt logit
        metrics.update(token_acc, exact, halt, solution.steps, labels)
        evaluator = self._evaluators.get(stage)
        if evaluator is not None:
            evaluator.update(batch, solution.predictions, halt)
        for name, metric in metrics.metrics.items():
            self.log(f"{stage}/{name}", metric, on_epoch=True, batch_size=size, prog_bar=name == "exact_accuracy")
        self.log(f"{stage}/steps_run_per_puzzle", solution.steps_run / size, on_epoch=True, batch_size=size)
        labelled = PuzzleMetrics.labelled(labels)
        beside: dict[str, Tensor] = {}
        if solution.confident is not None:
            correct = ((solution.answers == labels) | ~valid).all(-1)  # [M, N, B]
            beside["oracle_majority_exact"] = oracle_majority(correct, solution.confident)
        if self.test_time is not None and self.test_time.selection == "checker":
            beside["exact_accuracy_label_free"] = ((solution.label_free == labels) | ~valid).all(-1)
        for name, solved in beside.items():
            metric = self.test_time_metrics[f"{stage}_{name}"]
            metric.update(solved[labelled].float())
            self.log(f"{stage}/{name}", metric, on_epoch=True, batch_size=size)
        # "settled" as a reliability signal (RSM): how often answers settle, and how often settled ones are right
        settled = solution.settled & labelled
        unsettled = ~solution.settled & labelled
        subsets = {"settled_fraction": solution.settled[labelled], "exact_accuracy_settled": exact[settled],
                   "exact_accuracy_unsettled": exact[unsettled]}
        for name, values in subsets.items():
            metric = self.test_time_metrics[f"{stage}_{name}"]
            if values.numel():
                metric.update(values.float())
            if metric.update_count:  # a stage with no settled (or no unsettled) answer logs nothing for it
                self.log(f"{stage}/{name}", metric, on_epoch=True, batch_size=size)

    def _evaluation_step(self, batch: Batch, metrics: PuzzleMetrics, stage: str) -> None:
        if self._uses_test_time():
            self._test_time_step(batch, metrics, stage)
            return
        result = self.solve(batch)
        evaluator = self._evaluators.get(stage)
        if evaluator is not None:
            evaluator.update(batch, result["logits"].argmax(-1), result["halt_logits"])
        per_seq, exact, token_acc = sequence_loss(result["logits"], batch["labels"], self.strategy.loss_type)
        metrics.update(token_acc, exact, result["halt_logits"], result["steps"], batch["labels"])
        self.step_accuracy[stage].update(result["exact_by_step"], PuzzleMetrics.labelled(batch["labels"]),
                                         self.strategy.evaluation_steps(self.progress()))
        size = batch["inputs"].shape[0]
        self.log(f"{stage}/lm_loss", per_seq.mean(), on_epoch=True, batch_size=size, sync_dist=True)
        for name, metric in metrics.metrics.items():
            self.log(f"{stage}/{name}", metric, on_epoch=True, batch_size=size, prog_bar=name == "exact_accuracy")
        for name, variant in self.variants.items():
            logits = self.solve(batch, strategy=variant)["logits"]
            _, exact, _ = sequence_loss(logits, batch["labels"], variant.loss_type)
            metric = self.variant_metrics[f"{stage}_{name}"]
            metric.update(exact[PuzzleMetrics.labelled(batch["labels"])].float())
            self.log(f"{stage}/exact_accuracy@{name}", metric, on_epoch=True, batch_size=size)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, self.test_metrics, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        if self._uses_test_time():
            solution = self._solve_with_test_time(batch)
            return {"predictions": solution.predictions, "confidence": solution.confidence, "steps": solution.steps}
        result = self.solve(batch)
        return {"predictions": result["logits"].argmax(-1), "halt_logits": result["halt_logits"],
                "steps": result["steps"]}

    def clip_gradients(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip every gradient but the SignSGD table's: sparse, rank-local under DDP, and sign descent ignores scale."""
        if gradient_clip_val:
            clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm or "norm")

    # --- optimisation ------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        c = self.optim_config
        table = self.net.puzzle_embedding.weight if self.net.prefix_len else None
        dense = [p for p in self.net.parameters() if p is not table and p.requires_grad]
        # named groups: LearningRateMonitor logs lr-OptimizerBundle/dense and lr-OptimizerBundle/puzzle_table
        members: list[torch.optim.Optimizer] = [
            AdamATan2([{"params": dense, "name": "dense"}], lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)]
        if table is not None:
            members.append(SignSGD([{"params": [table], "name": "puzzle_table"}], lr=c.puzzle_emb_lr,
                                   weight_decay=c.puzzle_emb_weight_decay))
        optimizer = OptimizerBundle(members, guard=self.guard)
        total = self.progress().total
        if c.lr_min_ratio != 1.0 and total is None:
            raise ValueError("optim.lr_min_ratio < 1 (cosine decay) needs a known total: set trainer.max_steps.")
        scheduler = reference_schedule(optimizer, c.warmup_steps, total, c.lr_min_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
