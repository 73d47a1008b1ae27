"""Tests of the stablemax / softmax cross-entropies and the per-sequence loss reduction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recursive_reasoning.core.losses import sequence_loss, softmax_cross_entropy, stablemax_cross_entropy


def _s(x: float) -> float:
    return x + 1.0 if x >= 0 else 1.0 / (1.0 - x)


def test_stablemax_hand_computed() -> None:
    logits = torch.tensor([[1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [2.5, -3.0, 0.5]])
    labels = torch.tensor([0, 1, 2])
    loss = stablemax_cross_entropy(logits, labels)
    expected = [
        -math.log(2.0 / 3.5),
        -math.log(0.5 / 3.5),
        -math.log(1.5 / (3.5 + 0.25 + 1.5)),
    ]
    assert loss.dtype == torch.float64
    assert loss.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_stablemax_matches_scalar_formula_on_random_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 7) * 3
    labels = torch.randint(0, 7, (4,))
    loss = stablemax_cross_entropy(logits, labels)
    for row in range(4):
        values = [_s(float(v)) for v in logits[row].double()]
        expected = -math.log(values[int(labels[row])] / sum(values))
        assert float(loss[row]) == pytest.approx(expected, rel=1e-12)


def test_stablemax_ignore_index_and_shape() -> None:
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[0, -100, 4], [-100, -100, 2]])
    loss = stablemax_cross_entropy(logits, labels)
    assert loss.shape == (2, 3)
    assert loss.dtype == torch.float64
    assert loss[0, 1] == 0 and loss[1, 0] == 0 and loss[1, 1] == 0
    assert (loss[labels != -100] > 0).all()

    custom = stablemax_cross_entropy(logits, torch.tensor([[0, 7, 4], [7, 7, 2]]), ignore_index=7)
    torch.testing.assert_close(custom, loss)


def test_stablemax_gradients_are_finite() -> None:
    logits = torch.tensor([[1.0, 0.0, -1.0, 5.0]], requires_grad=True)
    stablemax_cross_entropy(logits, torch.tensor([2])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_softmax_matches_torch_cross_entropy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 6)
    labels = torch.randint(0, 6, (3, 4))
    labels[0, 2] = -100
    loss = softmax_cross_entropy(logits, labels)
    expected = F.cross_entropy(logits.reshape(-1, 6), labels.reshape(-1), reduction="none").view(3, 4)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
    assert loss[0, 2] == 0

    loss64 = softmax_cross_entropy(logits, labels, dtype=torch.float64)
    assert loss64.dtype == torch.float64
    torch.testing.assert_close(loss64, expected.double(), rtol=1e-5, atol=1e-6)


def test_sequence_loss_reduction() -> None:
    logits = torch.tensor(
        [
            [[1.0, -1.0, 0.0], [0.0, 2.0, -1.0], [3.0, 0.0, 0.0]],
            [[1.0, -1.0, 0.0], [0.0, 2.0, -1.0], [3.0, 0.0, 0.0]],
            [[1.0, -1.0, 0.0], [0.0, 2.0, -1.0], [3.0, 0.0, 0.0]],
        ]
    )
    labels = torch.tensor([[0, 1, -100], [0, 2, 0], [-100, -100, -100]])
    per_seq, exact, acc = sequence_loss(logits, labels)

    token = stablemax_cross_entropy(logits, labels)
    assert per_seq.dtype == torch.float64
    assert float(per_seq[0]) == pytest.approx(float(token[0, :2].sum()) / 2, rel=1e-12)
    assert float(per_seq[1]) == pytest.approx(float(token[1].sum()) / 3, rel=1e-12)
    assert float(per_seq[2]) == 0.0
    assert float(per_seq[0]) == pytest.approx((-math.log(2.0 / 3.5) - math.log(3.0 / 4.5)) / 2, rel=1e-12)

    assert exact.tolist() == [True, False, True]
    assert acc.tolist() == pytest.approx([1.0, 2.0 / 3.0, 0.0])


def test_sequence_loss_softmax_and_unknown_name() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 5)
    labels = torch.randint(0, 5, (2, 4))
    per_seq, _, _ = sequence_loss(logits, labels, loss_fn="softmax")
    expected = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), reduction="none").view(2, 4).mean(-1)
    torch.testing.assert_close(per_seq, expected)
    with pytest.raises(ValueError, match="loss_fn"):
        sequence_loss(logits, labels, loss_fn="hinge")  # type: ignore[arg-type]
