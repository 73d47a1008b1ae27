"""Faithfulness of RSM against the public reference code (navidivan/rsm): the RSM vectors in ../shared/parity.

Each vector holds reference weights (original names, `lm_head.weight` tied to the token embedding), a batch, the
evaluation outputs after outer steps 1..5 (states, logits, loss, metrics), five training cases (H 2, 3, 5 with the
one- and two-step gradient window: logits, loss, every gradient, the puzzle-table gradient, which core calls ran
with gradient) and the reference's stochastic-depth draws for seeds 0..31. We load the weights through
`recursive_reasoning.reference_names` and match every tensor within the README's tolerance.
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import require_shared
from test_parity import as_batch, assert_close

from recursive_reasoning.reference_names import load_reference_weights, network_config_from_reference, reference_key_to_ours
from recursive_reasoning.core.network import ReasoningNetwork
from strategies import RSM, Progress

pytestmark = pytest.mark.usefixtures("one_thread")

RSM_VECTORS = ["rsm_mlpt_nopos", "rsm_att_rope"]
TRAIN_CASES = ["H3_1step", "H3_2step", "H2_2step", "H2_1step", "H5_2step"]


@functools.cache
def vector(name: str) -> dict:
    return torch.load(require_shared(f"parity/{name}.pt"), weights_only=True)


def load_network(name: str) -> ReasoningNetwork:
    v = vector(name)
    net_config, vocab, seq_len, num_ids = network_config_from_reference(v["config"], v["model_class"])
    torch.manual_seed(0)
    net = ReasoningNetwork(net_config, vocab, seq_len, num_ids)
    load_reference_weights(net, v["state_dict"])
    return net


def strategy(name: str, outer: int, p_detach: float | None = None) -> RSM:
    """RSM at `outer` outer steps (training and evaluation) and the vector's L."""
    config = vector(name)["config"]
    latent = config["L_cycles"]
    return RSM(h_schedule=[(0.0, max(2, outer))], l_schedule=[(0.0, latent)], h_test=outer, l_test=latent,
               p_detach=config["prob_detach_prev_H"] if p_detach is None else p_detach)


def check_loss_and_metrics(record: dict, carry, loss, label: str) -> None:
    """RSM's loss head: the lm loss alone; count, accuracy and exact counts over rows with at least one label."""
    expected = record["loss"].item()
    assert abs(loss.total.item() - expected) <= 1e-6 * abs(expected), f"{label} loss {loss.total.item()} != {expected}"
    assert loss.terms.keys() == {"lm_loss"}, f"{label}: RSM trains on the lm loss only, got {sorted(loss.terms)}"
    metrics = record["metrics"]
    valid = (carry.batch["labels"] != -100).any(-1)
    assert max(int(valid.sum()), 1) == int(metrics["count"]), f"{label} count"
    assert_close(loss.token_accuracy[valid].sum(), metrics["accuracy"], f"{label} accuracy")
    assert int((loss.exact & valid).sum()) == int(metrics["exact_accuracy"]), f"{label} exact count"


@pytest.mark.parametrize("name", RSM_VECTORS)
def test_parameter_count_and_tied_head(name: str) -> None:
    net = load_network(name)
    assert net.num_parameters() == vector(name)["num_params"]
    assert net.lm_head.weight is net.token_embedding.weight and net.q_head is None
    assert torch.equal(net.lm_head.weight, vector(name)["state_dict"]["lm_head.weight"])


@pytest.mark.parametrize("name", RSM_VECTORS)
def test_evaluation_after_each_outer_step(name: str) -> None:
    v, net = vector(name), load_network(name)
    net.eval()
    batch = as_batch(v["batch"])
    for record in v["expected"]["eval"]:
        h = record["outer_steps"]
        check_evaluation(net, strategy(name, h), batch, record, f"{name} eval H={h}")


def check_evaluation(net: ReasoningNetwork, method: RSM, batch: dict, record: dict, label: str) -> None:
    """One evaluation of `method` on `batch` against a reference eval record: states, logits, preds, loss, metrics."""
    with torch.inference_mode():
        carry = method.refresh(net, method.initial_carry(net, batch), batch)
        out = method.run_segment(net, carry, Progress(0), training=False)
        loss = method.loss(net, carry, out, Progress(0), training=False)
    assert_close(out.y, record["z_H"], f"{label} z_H (answer state)")
    assert_close(out.z, record["z_L"], f"{label} z_L (latent state)")
    assert_close(out.logits, record["logits"], f"{label} logits")
    assert torch.equal(out.logits.argmax(-1), record["preds"]), f"{label} preds"
    assert torch.equal(out.halt_logits, torch.zeros(out.halt_logits.shape[0])), f"{label}: no Q head, zero halt logits"
    check_loss_and_metrics(record, carry, loss, label)


@pytest.mark.parametrize("case", TRAIN_CASES)
@pytest.mark.parametrize("name", RSM_VECTORS)
def test_training_case_gradients_and_gradient_window(name: str, case: str) -> None:
    v, net = vector(name), load_network(name)
    record = v["expected"]["train"][case]
    method = strategy(name, record["override_H_cycles"], p_detach=record["prob_detach_prev_H"])
    net.train()
    calls: list[dict[str, bool]] = []
    hook = net.latent_module.register_forward_pre_hook(lambda module, args: calls.append({
        "grad_enabled": torch.is_grad_enabled(), "state_requires_grad": args[0].requires_grad,
        "injection_requires_grad": args[1].requires_grad}))
    batch = as_batch(v["batch"])
    carry = method.refresh(net, method.initial_carry(net, batch), batch)
    try:
        out = method.run_segment(net, carry, Progress(0), training=True)
    finally:
        hook.remove()
    loss = method.loss(net, carry, out, Progress(0))
    loss.total.backward()

    label = f"{name} train {case}"
    latent = vector(name)["config"]["L_cycles"]
    assert out.calls[1] == latent + 1 + int(record["include_prev_H"]), f"{label} gradient window"
    assert calls == record["core_calls"], f"{label}: core calls (grad enabled, state / injection requires grad)"
    assert out.calls == (len(calls), sum(c["grad_enabled"] for c in calls)), f"{label} reported window"
    assert_close(out.logits, record["logits"], f"{label} logits")
    assert torch.equal(out.logits.argmax(-1), record["preds"]), f"{label} preds"
    check_loss_and_metrics(record, carry, loss, label)

    ours = dict(net.named_parameters())  # the tied matrix once, as token_embedding.weight
    grads = record["grads"]
    assert len(grads) == len(ours) - 1, "every parameter except the puzzle table has a reference gradient"
    assert record["no_grad_params"] == [] and all(p.grad is not None for p in ours.values())
    for ref_name, ref_grad in grads.items():
        assert_close(ours[reference_key_to_ours(ref_name, shared=True)].grad, ref_grad, f"{label} grad {ref_name}")
    table_grad = net.puzzle_embedding.weight.grad.to_dense()
    local = torch.zeros_like(table_grad).index_add_(
        0, record["puzzle_emb_local_ids"].long(), record["puzzle_emb_local_grad"])
    assert_close(table_grad, local, f"{label} puzzle-embedding gradient")


def test_stochastic_depth_draws_match_the_reference() -> None:
    """Seeded as the reference was, our one draw per training segment picks the same window for seeds 0..31; with
    p_detach 0 no random number is drawn at all."""
    name = "rsm_mlpt_nopos"
    draws, net = vector(name)["expected"]["draws"], load_network(name)
    method = strategy(name, 2, p_detach=draws["p"])
    batch = as_batch(vector(name)["batch"])
    carry = method.refresh(net, method.initial_carry(net, batch), batch)
    one_step = method.module_calls(Progress(0), training=True)[1]  # the declared window: without the penultimate
    got = []
    for seed in draws["seeds"]:
        torch.manual_seed(seed)
        with torch.no_grad():
            got.append(method.run_segment(net, carry, Progress(0), training=True).calls[1] == one_step + 1)
    assert got == draws["include_prev_H"]

    never = strategy(name, 2, p_detach=0.0)
    torch.manual_seed(7)
    with torch.no_grad():
        window = never.run_segment(net, carry, Progress(0), training=True).calls
    after = torch.rand(1)
    torch.manual_seed(7)
    assert window == never.module_calls(Progress(0), training=True) == (window[0], one_step + 1)
    assert torch.equal(after, torch.rand(1))


def test_token_mlp_norm_over_positions_does_not_match_rsm() -> None:
    """TRM's token-MLP block (norm over positions) is not RSM's: the logits differ far beyond the tolerance."""
    v = vector("rsm_mlpt_nopos")
    net_config, vocab, seq_len, num_ids = network_config_from_reference(v["config"], v["model_class"])
    net_config.token_mlp_norm = "positions"
    net = ReasoningNetwork(net_config, vocab, seq_len, num_ids)
    load_reference_weights(net, v["state_dict"])
    net.eval()
    batch, record = as_batch(v["batch"]), v["expected"]["eval"][2]
    method = strategy("rsm_mlpt_nopos", record["outer_steps"])
    with torch.inference_mode():
        out = method.run_segment(net, method.refresh(net, method.initial_carry(net, batch), batch), Progress(0),
                                 training=False)
    error = ((out.logits - record["logits"]).abs().max() / record["logits"].abs().max()).item()
    assert error > 1e-2, f"norm over positions reproduced RSM's logits (error {error:.1e}); the test lost its power"
