"""The multi-tensor AdamATan2 against the per-parameter update it replaced (bit for bit), its op count per step at
demo size, and the step count read without touching the parameters' device."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch import Tensor

from recursive_reasoning import optim
from recursive_reasoning.dispatch_counts import OpCounter
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from recursive_reasoning.optim import AdamATan2


class PerParameterAdamATan2(torch.optim.Optimizer):
    """The oracle: AdamATan2 as it was before the multi-tensor step, one parameter at a time."""

    def __init__(self, params: Any, lr: float | Tensor, betas: tuple[float, float], weight_decay: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group["lr"], beta1, beta2, group["weight_decay"])

    def _update(self, p: Tensor, lr: float | Tensor, beta1: float, beta2: float, weight_decay: float) -> None:
        compute_dtype = torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, dtype=compute_dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=compute_dtype, memory_format=torch.preserve_format)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        t = int(state["step"].item())
        grad = p.grad.to(compute_dtype)
        value = p.to(compute_dtype)
        value.mul_(1 - lr * weight_decay)
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq / (1 - beta2**t)).sqrt_()
        value.sub_(torch.atan2(exp_avg, denom).mul_(lr / (1 - beta1**t)))
        if value is not p:
            p.copy_(value)


def ops_per_step(opt: torch.optim.Optimizer, params: list[Tensor], steps: int = 3) -> Counter[str]:
    """The aten ops of the last of `steps` optimiser steps on random gradients (the first creates the state)."""
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn_like(p)
        with OpCounter() as counter:
            opt.step()
    ops = counter.counts.by_name()
    ops.pop("_record_function_enter_new", None)  # the profiler hook of Optimizer.step, not the update
    ops.pop("_record_function_exit", None)
    return ops


def demo_parameters() -> list[Tensor]:
    """The parameters of the demo recipe's network (configs/demo_sudoku.yaml: D 64, 2 token-MLP layers)."""
    torch.manual_seed(0)
    config = NetworkConfig(hidden_size=64, num_heads=4, num_layers=2, mixer="mlp", positions="none", puzzle_emb_len=0)
    return list(ReasoningNetwork(config, vocab_size=8, seq_len=36).parameters())


def clone_parameters(params: list[Tensor]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def run_both(
    groups: list[dict[str, Any]], steps: int, lr: float | Tensor, skip: dict[int, set[int]] | None = None
) -> tuple[AdamATan2, PerParameterAdamATan2]:
    """Steps AdamATan2 and the oracle on equal parameters and gradients; `skip[step]` lists parameters (by index
    over all groups) left without a gradient at that step."""
    ours = [{**g, "params": clone_parameters(g["params"])} for g in groups]
    theirs = [{**g, "params": clone_parameters(g["params"])} for g in groups]
    new, old = AdamATan2(ours, lr=lr, betas=(0.9, 0.95)), PerParameterAdamATan2(theirs, lr, (0.9, 0.95), 0.0)
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        a = [p for g in new.param_groups for p in g["params"]]
        b = [p for g in old.param_groups for p in g["params"]]
        for i, (p, q) in enumerate(zip(a, b, strict=True)):
            grad = None if i in (skip or {}).get(step, set()) else torch.randn(p.shape, generator=generator)
            p.grad = q.grad = None if grad is None else grad.to(p.dtype)
        new.step()
        old.step()
    return new, old


def assert_same(new: AdamATan2, old: PerParameterAdamATan2) -> None:
    a = [p for g in new.param_groups for p in g["params"]]
    b = [p for g in old.param_groups for p in g["params"]]
    for i, (p, q) in enumerate(zip(a, b, strict=True)):
        assert p.dtype == q.dtype and torch.equal(p, q), f"parameter {i}"
        assert new.state[p].keys() == old.state[q].keys(), f"state keys of parameter {i}"
        for key, value in old.state[q].items():
            mine = new.state[p][key]
            assert mine.dtype == value.dtype and mine.device == value.device, f"{key} of parameter {i}"
            assert torch.equal(mine, value), f"{key} of parameter {i}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lr", [3e-2, torch.tensor(3e-2)], ids=["float-lr", "tensor-lr"])
def test_foreach_step_is_bit_identical_to_the_per_parameter_update(dtype: torch.dtype, lr: float | Tensor) -> None:
    params = [p.to(dtype) for p in demo_parameters()]
    groups = [{"params": params[:5], "weight_decay": 0.1}, {"params": params[5:], "weight_decay": 0.0}]
    # parameter 2 misses steps 1 and 2, so its step count (and bias correction) lags the others
    new, old = run_both(groups, steps=5, lr=lr, skip={1: {2}, 2: {2, 7}})
    assert_same(new, old)
    counts = {int(new.state[p]["step"]) for g in new.param_groups for p in g["params"]}
    assert counts == {3, 4, 5}, "the lagging counts are the oracle's"


def test_mixed_dtypes_in_one_group_and_float64() -> None:
    params = demo_parameters()
    mixed = [p.to(torch.bfloat16) if i % 3 == 0 else p.double() if i % 3 == 1 else p for i, p in enumerate(params)]
    new, old = run_both([{"params": mixed, "weight_decay": 1.0}], steps=4, lr=1e-2)
    assert_same(new, old)


def test_group_without_gradients_is_skipped() -> None:
    new, old = run_both([{"params": demo_parameters()[:2]}, {"params": demo_parameters()[2:4]}], steps=2, lr=1e-2,
                        skip={0: {2, 3}, 1: {2, 3}})
    assert all(p not in new.state for p in new.param_groups[1]["params"])
    assert_same(new, old)


def test_resumed_state_continues_identically() -> None:
    new, old = run_both([{"params": demo_parameters(), "weight_decay": 0.1}], steps=2, lr=1e-2)
    resumed = AdamATan2([p for g in new.param_groups for p in g["params"]], lr=1e-2, weight_decay=0.1)
    resumed.load_state_dict(new.state_dict())
    ours = [p for g in resumed.param_groups for p in g["params"]]
    theirs = [p for g in old.param_groups for p in g["params"]]
    for p, q in zip(ours, theirs, strict=True):
        p.grad = q.grad = torch.randn_like(p)
    resumed.step()
    old.step()
    assert_same(resumed, old)


def test_demo_step_runs_a_few_multi_tensor_ops() -> None:
    """Demo size (12 tensors), without the profiler's two record_function ops: one parameter at a time, 12 ops per
    tensor (144, a step read among them); now 22, of which 12 are atan2 (torch has no foreach atan2; on CUDA one
    atan2 over the concatenation replaces them), and the step counts are followed on the host."""
    params, old_params = demo_parameters(), demo_parameters()
    old_ops = ops_per_step(PerParameterAdamATan2(old_params, 1e-3, (0.9, 0.95), 0.1), old_params)
    new_ops = ops_per_step(AdamATan2(params, lr=1e-3, weight_decay=0.1), params)
    assert sum(old_ops.values()) == 12 * len(params) and old_ops["_local_scalar_dense"] == len(params)
    assert new_ops == Counter({"atan2": len(params), "_foreach_mul_": 4, "_foreach_add_": 2,
                               "_foreach_addcmul_": 1, "_foreach_div": 1, "_foreach_sqrt_": 1, "_foreach_sub_": 1})
    assert "_local_scalar_dense" not in new_ops, "the step counts are read without a per-tensor item()"


def test_fused_path_runs_atan2_once_over_the_concatenation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path of devices with fused foreach kernels (CUDA), run on the CPU: one atan2 for all tensors (and views),
    within an ulp of the per-tensor values (a CPU's scalar and vector atan2 differ there; on CUDA they cannot)."""
    params = demo_parameters()
    ys = [torch.randn_like(p) for p in params]
    xs = [torch.rand_like(p) for p in params]
    monkeypatch.setattr(optim, "_FUSED_FOREACH_DEVICES", frozenset({"cpu"}))
    with OpCounter() as counter:
        flat = optim._foreach_atan2(ys, xs)
    ops = counter.counts.by_name()
    assert ops["atan2"] == 1 and ops["cat"] == 2
    assert set(ops) <= {"atan2", "cat", "split_with_sizes", "view"}
    for y, x, value in zip(ys, xs, flat, strict=True):
        assert value.shape == y.shape
        torch.testing.assert_close(value, torch.atan2(y, x), rtol=2e-7, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_foreach_step_is_bit_identical_to_the_per_parameter_update(dtype: torch.dtype) -> None:
    params = [p.to("cuda", dtype) for p in demo_parameters()]
    new, old = run_both([{"params": params, "weight_decay": 0.1}], steps=4, lr=1e-2)
    assert_same(new, old)


def test_step_reads_nothing_from_the_parameters_device() -> None:
    """On the meta device any read of a value (a host sync on a GPU) raises: the step counts are CPU tensors."""
    params = [torch.nn.Parameter(torch.empty(4, 3, device="meta")), torch.nn.Parameter(torch.empty(5, device="meta"))]
    opt = AdamATan2(params, lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        for p in params:
            p.grad = torch.empty_like(p)
        opt.step()
    assert all(opt.state[p]["step"].device.type == "cpu" and int(opt.state[p]["step"]) == 2 for p in params)
