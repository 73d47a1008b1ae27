"""CGAR on real tensors: the depth curriculum, its module-call count, and the supervision weighting of the loss."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch
from conftest import tiny_batch

from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import CGAR, TRM, Carry, Progress, SegmentOutput
from strategies.cgar import curriculum_call_fraction


def tiny_net(seed: int = 0) -> ReasoningNetwork:
    torch.manual_seed(seed)
    return ReasoningNetwork(NetworkConfig(hidden_size=32, num_heads=4, num_layers=2, puzzle_emb_len=2), 6, 9, 3)


def at(fraction: float) -> Progress:
    return Progress(round(fraction * 1000), 1000)


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.0, (1, 2)), (0.29, (1, 2)), (0.3, (2, 4)), (0.59, (2, 4)), (0.6, (3, 6)), (1.0, (3, 6))],
)
def test_default_stages_follow_training_progress(fraction: float, expected: tuple[int, int]) -> None:
    strategy = CGAR(cycles=3, latent_steps=6)
    assert strategy.stage_depths == [(1, 2), (2, 4), (3, 6)]
    assert strategy.depth(at(fraction), training=True) == expected


def test_evaluation_runs_full_depth_unless_asked_for_the_stage() -> None:
    assert CGAR().depth(at(0.1), training=False) == (3, 6)
    assert CGAR().depth(Progress(0), training=False) == (3, 6), "full-depth evaluation needs no total"
    assert CGAR(eval_full_depth=False).depth(at(0.1), training=False) == (1, 2)
    assert CGAR(eval_full_depth=False).depth(at(0.4), training=False) == (2, 4)


@pytest.mark.parametrize(("fraction", "calls"), [(0.0, 3), (0.45, 10), (0.8, 21)])
def test_each_stage_runs_t_times_n_plus_one_module_calls(fraction: float, calls: int) -> None:
    net = tiny_net()
    strategy = CGAR(cycles=3, latent_steps=6, supervision_steps=16)
    grad_enabled: list[bool] = []
    net.latent_module.register_forward_pre_hook(lambda module, args: grad_enabled.append(torch.is_grad_enabled()))
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, at(fraction), training=True)
    cycles, latent_steps = strategy.depth(at(fraction), training=True)
    assert len(grad_enabled) == calls
    assert grad_enabled == [False] * (calls - latent_steps - 1) + [True] * (latent_steps + 1), "TRM's gradient window"
    assert out.y.requires_grad
    grad_enabled.clear()
    strategy.run_segment(net, carry, at(fraction), training=False)
    assert len(grad_enabled) == 21, "evaluation runs the full depth"


def test_curriculum_saves_41_percent_of_module_calls() -> None:
    assert curriculum_call_fraction(3, 6) == pytest.approx(1 - 0.414, abs=1e-3)
    assert CGAR(cycles=3, latent_steps=6).flop_reduction() == pytest.approx(0.414, abs=1e-3)
    assert curriculum_call_fraction(3, 6, (0.5,), [(3, 6), (3, 6)]) == pytest.approx(1.0)


def test_paper_weights_use_each_slots_own_step_and_sum_to_one() -> None:
    net, lam, n_sup = tiny_net(), 0.7, 5
    strategy = CGAR(supervision_steps=n_sup, supervision_lambda=lam, weighting="paper")
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    z = sum(lam**j for j in range(n_sup))
    carry.steps = torch.tensor([0, 1, 2, 4], dtype=torch.int32)
    weights = strategy.sample_weights(carry, at(0.5))
    assert weights.shape == (4,)
    assert torch.allclose(weights, torch.tensor([1.0, lam, lam**2, lam**4]) / z)
    carry.steps = torch.arange(n_sup, dtype=torch.int32)
    assert strategy.sample_weights(carry, at(0.5)).sum().item() == pytest.approx(1.0)


def slot(data: Carry | SegmentOutput, i: int) -> Carry | SegmentOutput:
    """Slot i of a carry or a segment output, keeping the batch dimension."""
    sliced = {}
    for field in fields(data):
        value = getattr(data, field.name)
        if isinstance(value, dict):
            sliced[field.name] = {k: v[i : i + 1] for k, v in value.items()}
        elif isinstance(value, torch.Tensor):  # not the segment's reported calls, which hold for every slot
            sliced[field.name] = value[i : i + 1]
    return replace(data, **sliced)


def test_weighted_loss_is_trms_per_slot_loss_times_the_weights() -> None:
    net = tiny_net()
    cgar = CGAR(cycles=1, latent_steps=2, supervision_steps=4, weighting="paper")
    trm = TRM(cycles=1, latent_steps=2, supervision_steps=4)
    batch = tiny_batch()
    carry = cgar.refresh(net, cgar.initial_carry(net, batch), batch)
    carry.steps = torch.tensor([0, 1, 2, 3], dtype=torch.int32)
    out = cgar.run_segment(net, carry, at(1.0), training=True)
    weights = cgar.sample_weights(carry, at(1.0))
    per_slot = torch.stack([trm.loss(net, slot(carry, i), slot(out, i), at(1.0)).total for i in range(4)])
    total = cgar.loss(net, carry, out, at(1.0)).total
    assert torch.allclose(total, (weights.to(per_slot.dtype) * per_slot).sum())
    assert not torch.allclose(total, per_slot.sum()), "the weights change the loss"
    unweighted = CGAR(cycles=1, latent_steps=2, supervision_steps=4, weighting="none")
    assert torch.allclose(unweighted.loss(net, carry, out, at(1.0)).total, trm.loss(net, carry, out, at(1.0)).total)


def test_repo_weighting_is_the_public_codes_scalar_of_the_counters_before_the_reset() -> None:
    """The CGAR code multiplies the loss by 0.7 ** int(mean(carry.steps)) of the carry it was handed, before its
    reset: segments run counted from 0, the finished counts of the slots about to restart included."""
    net, batch = tiny_net(), tiny_batch()
    strategy = CGAR(cycles=1, latent_steps=2, supervision_steps=16, weighting="repo", supervision_lambda=0.7)
    trm = TRM(cycles=1, latent_steps=2, supervision_steps=16)
    first = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    assert torch.equal(strategy.sample_weights(first, at(0.5)), torch.ones(4))  # all counters 0: weight 1
    # As after an advance: slots 1 and 3 finished (16 and 2 segments) and restart; 0 and 2 continue at 3 and 5.
    before = replace(first, steps=torch.tensor([3, 16, 5, 2], dtype=torch.int32),
                     halted=torch.tensor([False, True, False, True]))
    carry = strategy.refresh(net, before, batch)
    assert carry.steps.tolist() == [3, 0, 5, 0]
    weights = strategy.sample_weights(carry, at(0.5))
    assert torch.allclose(weights, torch.full((4,), 0.7**6))  # mean(3, 16, 5, 2) = 6.5 -> 6; not mean(4, 1, 6, 1)
    out = strategy.run_segment(net, carry, at(1.0), training=True)
    expected = 0.7**6 * trm.loss(net, carry, out, at(1.0)).total
    assert torch.allclose(strategy.loss(net, carry, out, at(1.0)).total, expected)
    # Without a refresh in between (the in-step schedule) the counters are the advanced ones: mean(4, 1, 6, 1) = 3.
    advanced = strategy.advance(carry, out, training=True)
    assert torch.allclose(strategy.sample_weights(advanced, at(0.5)), torch.full((4,), 0.7**3))
    plain = trm.refresh(net, trm.initial_carry(net, batch), batch)
    with pytest.raises(TypeError, match="CGAR.refresh"):
        strategy.sample_weights(plain, at(0.5))


def test_unknown_total_in_training_raises_the_max_steps_error() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        CGAR().depth(Progress(5, None), training=True)
    net, strategy, batch = tiny_net(), CGAR(), tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    with pytest.raises(ValueError, match="max_steps"):
        strategy.run_segment(net, carry, Progress(5, None), training=True)


def test_bad_stage_config_raises() -> None:
    with pytest.raises(ValueError, match="stage_bounds"):
        CGAR(stage_bounds=(0.6, 0.3))
    with pytest.raises(ValueError, match="stage_bounds"):
        CGAR(stage_bounds=(0.0, 0.5))
    with pytest.raises(ValueError, match="stage_bounds"):
        CGAR(stage_bounds=(0.3, 1.0))
    with pytest.raises(ValueError, match="stage_depths"):
        CGAR(stage_bounds=(0.3, 0.6), stage_depths=[(1, 2), (3, 6)])
    with pytest.raises(ValueError, match="T >= 1"):
        CGAR(stage_bounds=(0.5,), stage_depths=[(0, 2), (3, 6)])
    with pytest.raises(ValueError, match="weighting"):
        CGAR(weighting="linear")


def test_round_trips_through_hparams() -> None:
    strategy = CGAR(stage_bounds=(0.5,), stage_depths=[(2, 3), (3, 6)], weighting="repo")
    rebuilt = CGAR.from_hparams(strategy.hparams())
    assert isinstance(rebuilt, CGAR)
    assert rebuilt.stage_depths == [(2, 3), (3, 6)] and rebuilt.weighting == "repo"


@pytest.mark.parametrize("fraction", [0.0, 0.45, 0.8])
def test_conforms_at_every_stage(fraction: float) -> None:
    from strategies.conformance import check_strategy

    check_strategy(CGAR(cycles=3, latent_steps=2, supervision_steps=3), tiny_net(), at(fraction))
