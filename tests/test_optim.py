"""Tests of AdamATan2, SignSGD (single process and over 2 gloo ranks), gradient clipping and the lr factor."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recursive_reasoning.optim import AdamATan2, OptimizerBundle, SignSGD, clip_gradients, lr_lambda, reference_schedule


def _reference_steps(
    p0: list[float], grads: list[list[float]], lr: float, b1: float, b2: float, wd: float
) -> list[list[float]]:
    """The AdamATan2 formula element by element in plain Python; returns the parameter after each step."""
    p = list(p0)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    history = []
    for t, g in enumerate(grads, start=1):
        bc1 = 1 - b1**t
        bc2 = 1 - b2**t
        for i in range(len(p)):
            p[i] = p[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            p[i] = p[i] - (lr / bc1) * math.atan2(m[i], math.sqrt(v[i] / bc2))
        history.append(list(p))
    return history


P0 = [0.5, -1.0, 2.0, 0.0]
GRADS = [[0.1, -0.2, 0.0, 3.0], [0.3, 0.1, -0.5, -3.0], [-0.2, 0.0, 0.5, 1.0]]


@pytest.mark.parametrize("wd", [0.0, 1.0])
@pytest.mark.parametrize("lr", [1e-2, torch.tensor(1e-2, dtype=torch.float64)])
def test_adam_atan2_matches_formula(wd: float, lr: float | torch.Tensor) -> None:
    p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float64))
    opt = AdamATan2([p], lr=lr, betas=(0.9, 0.95), weight_decay=wd)
    expected = _reference_steps(P0, GRADS, 1e-2, 0.9, 0.95, wd)
    for g, exp in zip(GRADS, expected):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert p.tolist() == pytest.approx(exp, rel=1e-12, abs=1e-14)
    state = opt.state[p]
    assert int(state["step"]) == 3
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}


def test_adam_atan2_float32() -> None:
    p = torch.nn.Parameter(torch.tensor(P0))
    opt = AdamATan2([p], lr=1e-2, weight_decay=0.1)
    expected = _reference_steps(P0, GRADS, 1e-2, 0.9, 0.95, 0.1)
    for g, exp in zip(GRADS, expected):
        p.grad = torch.tensor(g)
        opt.step()
        assert p.tolist() == pytest.approx(exp, rel=1e-5, abs=1e-6)


def test_weight_decay_is_decoupled() -> None:
    # With a zero gradient the atan2 term is atan2(0, 0) = 0, so only the decay p * (1 - lr * wd) acts.
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = AdamATan2([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert p.tolist() == pytest.approx([0.95, -1.9], rel=1e-12)
    # The decay is not mixed into the moments: the first step is atan2(0.1 g, |g|) = atan(0.1) whatever the size of g.
    q = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt_q = AdamATan2([q], lr=0.1, weight_decay=0.5)
    q.grad = torch.tensor([1e6], dtype=torch.float64)
    opt_q.step()
    assert q.item() == pytest.approx(0.95 - (0.1 / 0.1) * math.atan(0.1), rel=1e-12)


def test_param_without_grad_untouched_and_closure() -> None:
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = AdamATan2([a, b], lr=0.1, weight_decay=1.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (a**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0)
    assert b.tolist() == [3.0, 4.0]
    assert b not in opt.state
    assert not torch.equal(a.detach(), torch.tensor([1.0, 2.0]))


def test_bf16_param() -> None:
    p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.bfloat16))
    opt = AdamATan2([p], lr=1e-2, weight_decay=0.1)
    expected = _reference_steps(P0, GRADS, 1e-2, 0.9, 0.95, 0.1)
    for g, exp in zip(GRADS, expected):
        p.grad = torch.tensor(g, dtype=torch.bfloat16)
        opt.step()
        assert p.dtype == torch.bfloat16
        assert p.float().tolist() == pytest.approx(exp, rel=1e-2, abs=1e-2)
    assert opt.state[p]["exp_avg"].dtype == torch.float32


def test_sparse_grad_raises() -> None:
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = AdamATan2(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_invalid_hyperparameters() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError):
        AdamATan2([p], lr=-1.0)
    with pytest.raises(ValueError):
        AdamATan2([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError):
        AdamATan2([p], weight_decay=-0.1)


def test_lr_lambda_warmup_and_constant() -> None:
    assert lr_lambda(0, 2000, None) == 0.0
    assert lr_lambda(500, 2000, None) == 0.25
    assert lr_lambda(1999, 2000, None) == pytest.approx(1999 / 2000)
    assert lr_lambda(2000, 2000, None) == 1.0
    assert lr_lambda(10**6, 2000, 65104) == 1.0
    assert lr_lambda(0, 0, None) == 1.0
    assert lr_lambda(3, 0, None) == 1.0


def test_lr_lambda_cosine() -> None:
    warmup, total, ratio = 100, 1100, 0.1
    assert lr_lambda(50, warmup, total, ratio) == 0.5
    assert lr_lambda(100, warmup, total, ratio) == pytest.approx(1.0)
    assert lr_lambda(600, warmup, total, ratio) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_lambda(350, warmup, total, ratio) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_lambda(1100, warmup, total, ratio) == pytest.approx(0.1)
    assert lr_lambda(5000, warmup, total, ratio) == pytest.approx(0.1)
    assert lr_lambda(600, warmup, total, 0.0) == pytest.approx(0.5)


def test_lr_lambda_requires_total_for_cosine() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        lr_lambda(10, 5, None, 0.1)
    with pytest.raises(ValueError, match="total_steps"):
        lr_lambda(0, 5, None, 0.0)


def rates_used(warmup: int, total: int | None, ratio: float, updates: int) -> list[float]:
    """The lr each of `updates` updates runs at under `reference_schedule`, stepped after each update."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = AdamATan2([p], lr=1e-4)
    sched = reference_schedule(opt, warmup, total, ratio)
    lrs = []
    for _ in range(updates):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
    return lrs


def test_reference_schedule_gives_update_k_the_rate_of_step_k() -> None:
    """The reference counts the update before computing its rate: the first update is at 1/warmup of the peak."""
    assert rates_used(4, None, 1.0, 6) == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4], rel=0, abs=1e-18)
    # the trajectory test vectors' schedule (parity README, training settings): warmup 3, 16 steps, cosine to 0.1
    lrs = rates_used(3, 16, 0.1, 16)
    assert lrs[:3] == pytest.approx([1e-4 / 3, 2e-4 / 3, 1e-4], rel=1e-15)
    assert lrs[3] == pytest.approx(1e-4 * (0.1 + 0.45 * (1 + math.cos(math.pi / 13))), rel=1e-15)
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-15)
    assert rates_used(0, 10, 0.0, 1) == pytest.approx([1e-4 * 0.5 * (1 + math.cos(math.pi / 10))], rel=1e-15)


# --- SignSGD ---------------------------------------------------------------------------------------------------

LR, WD = 0.1, 0.5
TABLE = torch.arange(18, dtype=torch.float32).reshape(6, 3) / 4 - 2


def _sparse(ids: list[int], rows: list[list[float]]) -> torch.Tensor:
    """An uncoalesced row-sparse gradient of TABLE's shape, like nn.Embedding(sparse=True) writes."""
    return torch.sparse_coo_tensor(torch.tensor([ids]), torch.tensor(rows), TABLE.shape, check_invariants=True)


def _signsgd_step(grad: torch.Tensor | None, distributed: bool = True) -> torch.Tensor:
    """TABLE after one SignSGD step on ``grad``."""
    p = torch.nn.Parameter(TABLE.clone())
    p.grad = grad
    SignSGD([p], lr=LR, weight_decay=WD, distributed=distributed).step()
    return p.detach()


def test_signsgd_sparse_sums_repeated_ids_and_touches_only_their_rows() -> None:
    # id 1 twice (+1 and -3: sum -2), id 4 cancelling to 0 (decay only), rows 0, 2, 3, 5 untouched.
    grad = _sparse([1, 4, 1, 4], [[1.0, -1.0, 0.0], [2.0, 2.0, 2.0], [-3.0, 2.0, 0.0], [-2.0, -2.0, -2.0]])
    out = _signsgd_step(grad)
    expected = TABLE.clone()
    expected[1] = TABLE[1] * (1 - LR * WD) - LR * torch.tensor([-1.0, 1.0, 0.0])
    expected[4] = TABLE[4] * (1 - LR * WD)
    assert torch.equal(out, expected)


def test_signsgd_dense_matches_formula() -> None:
    grad = torch.tensor([[1.0, -2.0, 0.0]] * 6)
    assert torch.equal(_signsgd_step(grad), TABLE * (1 - LR * WD) - LR * grad.sign())


def test_signsgd_rejects_non_row_sparse_gradients() -> None:
    p = torch.nn.Parameter(TABLE.clone())
    p.grad = TABLE.to_sparse(2)
    with pytest.raises(RuntimeError, match="sparse_dim 1"):
        SignSGD([p], lr=LR).step()


# Each rank's gradient: different sizes, ids shared between the ranks (1, 3), a rank-local repeat (1 on rank 0) and
# id 3 cancelling across the ranks (+v on rank 0, -v on rank 1) so only its decay applies.
RANK_GRADS = [
    ([0, 1, 1, 3], [[1.0, -1.0, 0.5], [-0.5, 0.0, 2.0], [1.0, 0.0, -1.0], [0.5, -2.0, 1.0]]),
    ([3, 1, 5], [[-0.5, 2.0, -1.0], [-1.0, 0.25, -1.0], [0.0, 1.0, -3.0]]),
]
DENSE_GRADS = [torch.tensor([[1.0, -1.0, 2.0]] * 6), torch.tensor([[-1.0, -1.0, -3.0]] * 6)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One gloo rank: steps TABLE on its own gradients in several cases and saves the results for the test."""
    os.environ.update(MASTER_ADDR="localhost", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = {
            "sparse": _signsgd_step(_sparse(*RANK_GRADS[rank])),
            "one_rank_without_grad": _signsgd_step(_sparse(*RANK_GRADS[0]) if rank == 0 else None),
            "dense": _signsgd_step(DENSE_GRADS[rank]),
            "local": _signsgd_step(_sparse(*RANK_GRADS[rank]), distributed=False),
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_signsgd_sums_gradients_over_ranks(tmp_path: Path) -> None:
    mp.spawn(_distributed_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    summed = _sparse(RANK_GRADS[0][0] + RANK_GRADS[1][0], RANK_GRADS[0][1] + RANK_GRADS[1][1])
    expected = {
        "sparse": _signsgd_step(summed),
        "one_rank_without_grad": _signsgd_step(_sparse(*RANK_GRADS[0])),
        "dense": _signsgd_step(DENSE_GRADS[0] + DENSE_GRADS[1]),
    }
    assert torch.equal(expected["sparse"][3], TABLE[3] * (1 - LR * WD)), "id 3 cancels: decay only"
    assert torch.equal(expected["sparse"][2], TABLE[2]), "an id no rank has stays untouched"
    for rank, results in enumerate(ranks):
        for case, table in expected.items():
            assert torch.equal(results[case], table), f"rank {rank}, {case}"
        assert torch.equal(results["local"], _signsgd_step(_sparse(*RANK_GRADS[rank]))), "distributed=False"
        assert not torch.equal(results["local"], expected["sparse"]), "the summed step differs from a local one"


# --- gradient clipping -------------------------------------------------------------------------------------------


def _bundle_with_grads() -> tuple[OptimizerBundle, torch.nn.Embedding, torch.nn.Linear]:
    """An AdamATan2 + SignSGD bundle over a linear layer and a sparse embedding, after one backward."""
    torch.manual_seed(0)
    emb, lin = torch.nn.Embedding(5, 4, sparse=True), torch.nn.Linear(4, 2)
    lin(emb(torch.tensor([1, 2, 2]))).pow(2).sum().mul(100).backward()
    bundle = OptimizerBundle([AdamATan2(lin.parameters()), SignSGD(emb.parameters())])
    return bundle, emb, lin


def test_clip_gradients_by_norm_skips_the_sign_descent_table() -> None:
    bundle, emb, lin = _bundle_with_grads()
    table_grad = emb.weight.grad.coalesce().values().clone()
    dense_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in lin.parameters()]))
    total = clip_gradients(bundle, 0.5, "norm")
    assert total is not None and torch.allclose(total, dense_norm)
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in lin.parameters()]))
    assert clipped == pytest.approx(0.5, rel=1e-4)
    assert torch.equal(emb.weight.grad.coalesce().values(), table_grad)


def test_clip_gradients_by_value_and_unknown_algorithm() -> None:
    bundle, emb, lin = _bundle_with_grads()
    clip_gradients(bundle, 0.01, "value")
    assert all(p.grad.abs().max() <= 0.01 for p in lin.parameters())
    assert emb.weight.grad.coalesce().values().abs().max() > 0.01
    with pytest.raises(ValueError, match="algorithm"):
        clip_gradients(bundle, 1.0, "l1")
