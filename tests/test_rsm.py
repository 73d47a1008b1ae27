"""RSM's rules on real tensors: the detach pattern, the gradient, depth growth, deep evaluation, its reasoning steps,
the callback."""

from __future__ import annotations

import weakref
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from recursive_reasoning.callbacks import DepthGrowthCallback
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from recursive_reasoning.inference import TestTimeOptions, solve_with_options
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.optim import AdamATan2
from strategies import RSM, Progress, RecursionStrategy
from strategies.rsm import MAZE_H_SCHEDULE, MAZE_L_SCHEDULE


def tiny_net(seed: int = 0) -> ReasoningNetwork:
    torch.manual_seed(seed)
    return ReasoningNetwork(NetworkConfig(hidden_size=32, num_heads=4, num_layers=1, puzzle_emb_len=2), 6, 9, 3)


def tiny_batch(size: int = 4, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 6, (size, 9), generator=g),
        "labels": torch.randint(2, 6, (size, 9), generator=g),
        "puzzle_ids": torch.randint(0, 3, (size,), generator=g),
    }


def fixed(outer: int, latent: int, **kwargs: object) -> RSM:
    return RSM(h_schedule=[(0.0, outer)], l_schedule=[(0.0, latent)], **kwargs)


def training_segment(strategy: RSM, net: ReasoningNetwork, batch: dict[str, Tensor], progress: Progress = Progress(0)):
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    return carry, strategy.run_segment(net, carry, progress, training=True)


@pytest.mark.parametrize("p_detach", [1.0, 0.0])
def test_detach_pattern(p_detach: float) -> None:
    net, strategy = tiny_net(), fixed(3, 2, p_detach=p_detach)
    flags: list[bool] = []
    net.latent_module.register_forward_pre_hook(lambda module, args: flags.append(torch.is_grad_enabled()))
    training_segment(strategy, net, tiny_batch())
    # Outer step = 2 latent updates + 1 answer update (shared module): 9 calls for H = 3.
    if p_detach == 1.0:
        assert flags == [False] * 6 + [True] * 3
    else:
        assert flags == [False] * 5 + [True] + [True] * 3  # the penultimate answer update carries gradient too
    assert strategy.module_calls(Progress(0), True) == (9, 3 + (p_detach == 0.0))
    assert strategy.module_calls(Progress(0), False) == (9, 0)


def test_stochastic_depth_draw_follows_torch_rng_and_is_reported() -> None:
    net, strategy, batch = tiny_net(), fixed(2, 1, p_detach=0.5), tiny_batch(size=1)
    flags: list[bool] = []
    net.latent_module.register_forward_pre_hook(lambda module, args: flags.append(torch.is_grad_enabled()))
    torch.manual_seed(3)
    draws = []
    for _ in range(12):
        flags.clear()
        calls = training_segment(strategy, net, batch)[1].calls
        assert calls == (len(flags), sum(flags)) and calls[1] in (2, 3)  # each segment reports the window it ran
        draws.append(calls[1] == 3)
    assert 0 < sum(draws) < 12
    assert strategy.module_calls(Progress(0), True) == (4, 2), "the declaration does not follow the last draw"
    torch.manual_seed(3)
    again = [training_segment(strategy, net, batch)[1].calls[1] == 3 for _ in range(12)]
    assert draws == again


def reference_gradients(net: ReasoningNetwork, batch: dict[str, Tensor], penultimate: bool) -> dict[str, Tensor]:
    """Hand-unrolled H = 3, L = 2: two detached outer steps, the last with gradient (and the penultimate y update)."""
    net.zero_grad(set_to_none=True)
    f = net.latent_module
    x = net.embed(batch["inputs"], batch["puzzle_ids"])
    y, z = net.initial_states(batch["inputs"].shape[0])
    with torch.no_grad():
        z = f(z, y + x)
        z = f(z, y + x)
        y = f(y, z)
        z = f(z, y + x)
        z = f(z, y + x)
    if penultimate:
        y = f(y.detach(), z.detach())
    else:
        with torch.no_grad():
            y = f(y, z)
    z = f(z, y + x)
    z = f(z, y + x)
    y = f(y, z)
    logits = net.lm_head(y[:, 2:]).double()
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - logits))
    log_p = (s / s.sum(-1, keepdim=True)).log().gather(-1, batch["labels"][..., None]).squeeze(-1)
    (-log_p).mean(-1).sum().backward()
    return {name: p.grad.to_dense().clone() for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("p_detach", [1.0, 0.0])
def test_gradient_equals_hand_unrolled_reference(p_detach: float) -> None:
    net, strategy, batch = tiny_net(), fixed(3, 2, p_detach=p_detach), tiny_batch()
    carry, out = training_segment(strategy, net, batch)
    loss = strategy.loss(net, carry, out, Progress(0))
    assert set(loss.terms) == {"lm_loss"}
    loss.total.backward()
    ours = {name: p.grad.to_dense().clone() for name, p in net.named_parameters() if p.grad is not None}
    assert net.q_head.weight.grad is None and net.q_head.bias.grad is None  # RSM has no Q head
    assert set(strategy.unused_parameters(net)) == {"q_head.weight", "q_head.bias"}
    expected = reference_gradients(net, batch, penultimate=p_detach == 0.0)
    assert set(ours) == set(expected)
    for name, grad in expected.items():
        assert torch.allclose(ours[name], grad, atol=1e-6, rtol=1e-5), name
    if p_detach == 1.0:  # the penultimate update really matters: the other reference differs
        other = reference_gradients(net, batch, penultimate=True)
        assert any(not torch.allclose(other[name], grad) for name, grad in expected.items())


def test_every_training_step_restarts_from_the_initial_states() -> None:
    net, strategy, batch = tiny_net(), fixed(2, 1), tiny_batch()
    carry, out = training_segment(strategy, net, batch)
    carry = strategy.advance(carry, out, training=True)
    assert carry.halted.all() and not strategy.halt_signal(out).any()
    y0, z0 = net.initial_states(4)
    refreshed = strategy.refresh(net, carry, batch)
    assert torch.equal(refreshed.y, y0) and torch.equal(refreshed.z, z0)


# The RSM README's curricula (navidivan/rsm README.md): +1 at each percent, from H_cycles = L_cycles = 2.
README_SUDOKU = ([20.1, 40.1, 55.1, 65.1, 75.1, 85.1], [30.1, 50.1, 70.1, 80.1, 84.1, 86.1, 88.1, 90.1, 92.1, 94.1])
README_MAZE = ([20.1, 40.1, 55.1, 65.1, 75.1, 85.1, 95.1], [30.1, 50.1, 70.1])


def readme_depth(percents: tuple[list[float], list[float]], step: int, total: int) -> tuple[int, int]:
    """The reference rule by hand: at its 1-based step s, +1 per milestone with 100 * s / total >= the milestone."""
    done = (step / total) * 100.0
    return tuple(2 + sum(done >= p for p in ms) for ms in percents)  # type: ignore[return-value]


@pytest.mark.parametrize(("schedules", "percents", "total"), [
    ((None, None), README_SUDOKU, 14968),  # rsm_sudoku.yaml: int(2 epochs * 3,831,994 / 512)
    ((MAZE_H_SCHEDULE, MAZE_L_SCHEDULE), README_MAZE, 3906),  # rsm_maze.yaml: int(500 epochs * 1000 / 128)
    ((None, None), README_SUDOKU, 1000),  # a total where 20.1% etc. fall exactly on a step
])
def test_growth_follows_the_reference_milestones_at_every_step(
    schedules: tuple, percents: tuple[list[float], list[float]], total: int
) -> None:
    strategy = RSM(h_schedule=schedules[0], l_schedule=schedules[1])
    for step in range(total):  # rr's step counts the steps taken; the reference's the step being taken, from 1
        assert strategy.depth(Progress(step, total), True) == readme_depth(percents, step + 1, total), step
        assert strategy.depth(Progress(step, total), False) == readme_depth(percents, step, total), step
    final = (strategy.h_schedule[-1][1], strategy.l_schedule[-1][1])
    assert strategy.depth(Progress(total - 1, total), True) == final == strategy.depth(Progress(total, total), False)


def test_growth_switches_at_the_hand_computed_steps() -> None:
    sudoku = RSM()
    # 20.1% of 14,968 steps is 3,008.57: the reference's step 3,009 (rr's step 3,008, counting from 0) runs H 3.
    assert sudoku.depth(Progress(3007, 14968), True) == (2, 2) and sudoku.depth(Progress(3008, 14968), True) == (3, 2)
    # At 1000 steps the reference's floats decide: (201 / 1000) * 100 == 20.1 counts (>=) at its step 201, while
    # (301 / 1000) * 100 is 30.099999999999998 < 30.1, so L 3 comes only at its step 302 (rr's 301).
    assert sudoku.depth(Progress(199, 1000), True) == (2, 2) and sudoku.depth(Progress(200, 1000), True) == (3, 2)
    assert sudoku.depth(Progress(300, 1000), True) == (3, 2) and sudoku.depth(Progress(301, 1000), True) == (3, 3)
    assert sudoku.depth(Progress(5000, 1000), True) == (8, 12)
    # Evaluation after s steps: the depth of step s (the reference evaluates at its active H and L) ...
    assert sudoku.depth(Progress(3008, 14968), False) == (2, 2) and sudoku.depth(Progress(3009, 14968), False) == (3, 2)
    # ... or the final depth, or a fixed h_test / l_test (the other one follows eval_depth).
    assert RSM(eval_depth="final").depth(Progress(0, None), False) == (8, 12)
    assert RSM(h_test=32).depth(Progress(3009, 14968), False) == (32, 2)
    assert RSM(h_test=32, l_test=4).depth(Progress(0, None), False) == (32, 4)
    with pytest.raises(ValueError, match="eval_depth: final"):
        sudoku.depth(Progress(0, None), False)
    with pytest.raises(ValueError, match="total number of training steps"):
        sudoku.depth(Progress(10), True)
    with pytest.raises(ValueError, match="eval_depth"):
        RSM(eval_depth="deepest")  # type: ignore[arg-type]
    assert fixed(3, 2).depth(Progress(10), True) == (3, 2) == fixed(3, 2).depth(Progress(10), False)
    custom = RSM(h_schedule=[(0.0, 2), (0.5, 4)], l_schedule=[(0.0, 3), (0.25, 1)], h_test=16, l_test=2)
    assert [custom.depth(Progress(s, 100), True) for s in (0, 23, 24, 48, 49)] == [(2, 3), (2, 3), (2, 1), (2, 1),
                                                                                   (4, 1)]


@pytest.mark.parametrize(("schedules", "total", "reference", "evenly"), [
    ((None, None), 14968, 29.8, 42.5),
    ((MAZE_H_SCHEDULE, MAZE_L_SCHEDULE), 3906, 23.4, 23.5),
])
def test_block_calls_per_step_match_the_reference_curriculum(
    schedules: tuple, total: int, reference: float, evenly: float
) -> None:
    """Mean block calls H * (L + 1) per training step: the README curricula, not rr's former even spacing."""
    strategy = RSM(h_schedule=schedules[0], l_schedule=schedules[1])
    calls = [h * (n + 1) for h, n in (strategy.depth(Progress(s, total), True) for s in range(total))]
    assert round(sum(calls) / total, 1) == reference
    outer, latent = strategy.h_schedule[-1][1], strategy.l_schedule[-1][1]
    even = RSM(h_schedule=[(round(0.94 * i / (outer - 2), 4), 2 + i) for i in range(outer - 1)],
               l_schedule=[(round(0.94 * i / (latent - 2), 4), 2 + i) for i in range(latent - 1)])
    calls = [h * (n + 1) for h, n in (even.depth(Progress(s, total), True) for s in range(total))]
    assert round(sum(calls) / total, 1) == evenly


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match=">= 2"):
        RSM(h_schedule=[(0.0, 1), (0.5, 3)])
    with pytest.raises(ValueError, match="fraction 0.0"):
        RSM(h_schedule=[(0.1, 2)])
    with pytest.raises(ValueError, match="strictly increasing"):
        RSM(l_schedule=[(0.0, 2), (0.5, 3), (0.5, 4)])
    with pytest.raises(ValueError, match="p_detach"):
        RSM(p_detach=1.5)
    strategy = fixed(2, 1)
    strategy.h_schedule = [(0.0, 1)]  # bypassing the constructor still cannot train with H < 2
    with pytest.raises(ValueError, match="H >= 2"):
        training_segment(strategy, tiny_net(), tiny_batch())
    assert RSM.from_hparams(RSM(p_detach=0.25, eval_depths=[2, 4]).hparams()).p_detach == 0.25


def live_outputs_after_evaluation(outer: int) -> tuple[int, int]:
    """Evaluate at H = outer, return (module outputs still alive afterwards, module calls made)."""
    net, batch = tiny_net(), tiny_batch()
    strategy = fixed(2, 2, h_test=outer, l_test=2)
    refs: list[weakref.ref] = []
    net.latent_module.register_forward_hook(lambda module, args, output: refs.append(weakref.ref(output)))
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, Progress(0), training=False)
    assert not out.y.requires_grad and out.logits.shape == (4, 9, 6)
    return sum(r() is not None for r in refs), len(refs)


def test_evaluation_far_beyond_training_depth_keeps_nothing_per_step() -> None:
    alive_short, calls_short = live_outputs_after_evaluation(4)
    alive_long, calls_long = live_outputs_after_evaluation(64)
    assert (calls_short, calls_long) == (12, 192)
    assert alive_long == alive_short <= 2  # only the returned (y, z): memory does not grow with H


class SettlingNet:
    """A stand-in network whose decoded answer for example b is token min(t, stop_b) after outer step t."""

    seq_len = 3

    def __init__(self, stops: list[int], vocab: int = 16) -> None:
        self.stops, self.vocab, self.t = torch.tensor(stops), vocab, 0

    def embed(self, inputs: Tensor, puzzle_ids: Tensor) -> Tensor:
        return torch.zeros(inputs.shape[0], self.seq_len, self.vocab)

    def initial_states(self, batch_size: int) -> tuple[Tensor, Tensor]:
        return torch.zeros(batch_size, self.seq_len, self.vocab), torch.zeros(batch_size, self.seq_len, self.vocab)

    def latent_step(self, z: Tensor, y: Tensor, x: Tensor) -> Tensor:
        return z

    def answer_step(self, y: Tensor, z: Tensor) -> Tensor:
        self.t += 1
        token = torch.clamp(self.stops, max=self.t)
        return torch.nn.functional.one_hot(token, self.vocab).float()[:, None].expand(-1, self.seq_len, -1)

    def decode(self, y: Tensor) -> Tensor:
        return y

    def halt_logits(self, y: Tensor) -> Tensor:
        return torch.zeros(y.shape[0], 2)


def test_reasoning_steps_give_the_settling_signals() -> None:
    """The answer after every outer step, never halting; test-time compute reads settling and early exit from it."""
    stops = [1, 2, 5, 12]
    batch = {"inputs": torch.ones(4, 3, dtype=torch.long), "puzzle_ids": torch.zeros(4, dtype=torch.long)}
    steps = list(fixed(2, 1, h_test=10).reasoning_steps(SettlingNet(stops), batch, Progress(0)))
    answers = torch.stack([step.logits.argmax(-1) for step in steps])
    assert answers.shape == (10, 4, 3) and answers[:, 3, 0].tolist() == list(range(1, 11))
    assert not torch.stack([step.halted for step in steps]).any(), "RSM's halting rule never fires"
    options = TestTimeOptions(early_exit="settled", settle_k=3)
    solution = solve_with_options(SettlingNet(stops), fixed(2, 1, h_test=10), batch,  # type: ignore[arg-type]
                                  Progress(0), options)
    assert solution.steps.tolist() == [4.0, 5.0, 8.0, 10.0]  # settled for 3 steps after steps 1, 2, 5; 12 never
    assert solution.predictions[:, 0].tolist() == [1, 2, 5, 10]
    plain = solve_with_options(SettlingNet(stops), fixed(2, 1, h_test=10), batch, Progress(0),  # type: ignore[arg-type]
                               TestTimeOptions(settle_k=3))
    assert plain.settled.tolist() == [True, True, True, False] and plain.steps.tolist() == [10.0] * 4


def test_reasoning_steps_at_depth_64_end_at_the_segments_answer() -> None:
    net, batch = tiny_net(), tiny_batch()
    strategy = fixed(2, 2, h_test=64, l_test=2)
    steps = list(strategy.reasoning_steps(net, batch, Progress(0)))
    assert len(steps) == 64 and all(torch.isfinite(step.logits).all() for step in steps)
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    assert torch.equal(steps[-1].logits, strategy.run_segment(net, carry, Progress(0), training=False).logits)


def test_module_evaluates_the_declared_variants() -> None:
    model = RecursiveReasoner(fixed(2, 1, eval_depths=[2, 5]), NetworkConfig(hidden_size=32, num_heads=4,
                              num_layers=1, puzzle_emb_len=0), vocab_size=6, seq_len=9)
    assert {name: v.depth(Progress(0), False) for name, v in model.variants.items()} == {"H2": (2, 1), "H5": (5, 1)}
    assert set(model.variant_metrics) == {"val_H2", "val_H5", "test_H2", "test_H5"}
    batch = tiny_batch()
    deep = model.solve(batch, strategy=model.variants["H5"])["logits"]
    reference = fixed(2, 1, h_test=5)
    carry = reference.refresh(model.net, reference.initial_carry(model.net, batch), batch)
    assert torch.equal(deep, reference.run_segment(model.net, carry, Progress(0), training=False).logits)
    plain = RecursiveReasoner(network=NetworkConfig(hidden_size=32, num_heads=4), vocab_size=6, seq_len=9)
    assert plain.variants == {} and len(plain.variant_metrics) == 0


def growing_depth(progress: Progress, training: bool) -> tuple[int, int]:
    """(H, L) = (1, 1) before step 2, (2, 1) from step 2 on: only `depth` matters to the callback."""
    return (1 if progress.step < 2 else 2), 1


def test_depth_growth_callback_ramps_the_lr_and_scales_the_moments() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = AdamATan2([param], lr=1.0, weight_decay=0.0)
    param.grad = torch.ones(3)
    optimizer.step()
    before = {k: v.clone() for k, v in optimizer.state[param].items()}
    callback = DepthGrowthCallback(lr_ramp_steps=4, moment_scale_on_growth=0.5)
    trainer = SimpleNamespace(global_step=0, optimizers=[optimizer])
    strategy = SimpleNamespace(depth=growing_depth)
    module = SimpleNamespace(strategy=strategy, progress=lambda: Progress(trainer.global_step, 10))
    lrs = []
    for step in range(8):
        trainer.global_step = step
        callback.on_train_batch_start(trainer, module, None, step)
        lrs.append(optimizer.param_groups[0]["lr"])
        callback.on_train_batch_end(trainer, module, None, None, step)
        assert optimizer.param_groups[0]["lr"] == 1.0  # the scheduler's value is back
    assert lrs == [1.0, 1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert torch.equal(optimizer.state[param]["exp_avg"], before["exp_avg"] * 0.5)  # scaled once, at step 2
    assert torch.equal(optimizer.state[param]["exp_avg_sq"], before["exp_avg_sq"] * 0.5)
    assert callback.state_dict() == {"depth": (2, 1), "change_step": 2}


def test_depth_growth_callback_keeps_a_value_the_scheduler_wrote() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param], lr=1.0)
    callback = DepthGrowthCallback(lr_ramp_steps=2)
    callback.depth, callback.change_step = (2, 1), 0
    trainer = SimpleNamespace(global_step=1, optimizers=[optimizer])
    module = SimpleNamespace(strategy=SimpleNamespace(depth=growing_depth), progress=lambda: Progress(3, 10))
    callback.on_train_batch_start(trainer, module, None, 1)
    assert optimizer.param_groups[0]["lr"] == 0.5
    optimizer.param_groups[0]["lr"] = 0.9  # what a step scheduler writes between the step and the batch end
    callback.on_train_batch_end(trainer, module, None, None, 1)
    assert optimizer.param_groups[0]["lr"] == 0.9


@pytest.mark.parametrize("mixer", ["mlp", "attention"])
def test_the_rsm_recipe_network_conforms_and_trains_every_parameter(mixer: str) -> None:
    """Channel norm, tied head and no Q head (the RSM recipes): every parameter learns, so DDP needs no search."""
    from strategies.conformance import check_strategy

    torch.manual_seed(0)
    config = NetworkConfig(hidden_size=32, num_heads=4, num_layers=1, puzzle_emb_len=2, mixer=mixer,
                           positions="rope" if mixer == "attention" else "none", token_mlp_norm="channels",
                           tie_embeddings=True, halt_head=False)
    net, strategy = ReasoningNetwork(config, 6, 9, 3), fixed(3, 2, p_detach=0.5)
    assert strategy.unused_parameters(net) == {}
    check_strategy(strategy, net)


def test_training_runs_at_least_two_outer_steps() -> None:
    """As the reference, training never runs fewer than 2 outer steps, even if the depth asks for 1."""
    net, strategy = tiny_net(), fixed(2, 1, p_detach=1.0)
    strategy.depth = lambda progress, training: (1, 1)  # type: ignore[method-assign]
    flags: list[bool] = []
    net.latent_module.register_forward_pre_hook(lambda module, args: flags.append(torch.is_grad_enabled()))
    training_segment(strategy, net, tiny_batch())
    assert flags == [False, False, True, True] and strategy.module_calls(Progress(0), True) == (4, 2)
    assert training_segment(strategy, net, tiny_batch())[1].calls == (4, 2)


def test_an_old_checkpoints_retired_settle_k_is_dropped_on_load() -> None:
    """RSM once recorded settle_k, which nothing read; checkpoints that hold it still load, and new runs refuse it."""
    saved = RSM(p_detach=1.0).hparams()
    saved["init_args"]["settle_k"] = 3
    assert RecursionStrategy.from_hparams(saved).p_detach == 1.0
    with pytest.raises(TypeError):
        RSM(settle_k=3)  # type: ignore[call-arg]
