"""Every built-in strategy passes the reusable conformance checks of `strategies.conformance`."""

from __future__ import annotations

import pytest
import torch

from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import HRM, RSM, TRM, Progress, RecursionStrategy
from strategies.conformance import check_gradient_window, check_strategy


def small_net(shared: bool, mixer: str = "mlp") -> ReasoningNetwork:
    torch.manual_seed(0)
    config = NetworkConfig(hidden_size=32, num_heads=4, num_layers=1, shared=shared, mixer=mixer,
                           positions="rope" if mixer == "attention" else "none", puzzle_emb_len=2)
    return ReasoningNetwork(config, 6, 9, num_puzzle_ids=3)


CASES = {
    "trm": (TRM(cycles=3, latent_steps=2, supervision_steps=3), True, "mlp"),
    "trm_attention": (TRM(cycles=2, latent_steps=3, supervision_steps=2), True, "attention"),
    "hrm": (HRM(cycles=2, latent_steps=2, supervision_steps=3), False, "attention"),
    "rsm": (RSM(h_schedule=[(0.0, 2), (0.5, 3)], l_schedule=[(0.0, 2)], p_detach=0.0, h_test=4), True, "mlp"),
    "rsm_detached": (RSM(h_schedule=[(0.0, 3)], l_schedule=[(0.0, 1)], p_detach=1.0), False, "attention"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_builtin_strategy_conforms(name: str) -> None:
    strategy, shared, mixer = CASES[name]
    check_strategy(strategy, small_net(shared, mixer))


def test_the_checker_catches_a_wrong_gradient_window() -> None:
    class LeakyTRM(TRM):
        """Runs every cycle with gradient while declaring TRM's window: the checker must notice."""

        def recurse(self, net, y, z, x, progress, training):
            for _ in range(self.cycles):
                y, z = self.cycle(net, y, z, x, self.latent_steps)
            return y, z

    with pytest.raises(AssertionError, match="with gradient"):
        check_gradient_window(LeakyTRM(cycles=2, latent_steps=1), small_net(True), Progress(0, 10))


def test_the_checker_catches_gradient_into_the_previous_segment() -> None:
    class NoDetachTRM(TRM):
        """Keeps the graph in the carry, so the next segment's loss trains the previous one."""

        def advance(self, carry, out, training):
            advanced = super().advance(carry, out, training)
            advanced.y, advanced.z = out.y, out.z
            return advanced

    with pytest.raises(AssertionError, match="previous segment"):
        check_gradient_window(NoDetachTRM(cycles=1, latent_steps=1), small_net(True), Progress(0, 10))


def test_strategies_declare_their_windows() -> None:
    assert TRM(cycles=3, latent_steps=6).module_calls(Progress(0), True) == (21, 7)
    assert HRM(cycles=2, latent_steps=2).module_calls(Progress(0), True) == (6, 2)
    assert issubclass(TRM, RecursionStrategy)
