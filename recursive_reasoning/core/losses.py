"""Token-level and sequence-level losses of the recursive reasoning models.

The reference code trains with a "stablemax" cross-entropy: the exponential of softmax is replaced by
s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0, and the loss is computed in float64. Softmax cross-entropy is
the alternative. Both return a per-token loss that is 0 at ignored positions; :func:`sequence_loss` reduces it to a
per-row mean and also returns the exact-match flag and the token accuracy of each row.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_LABEL_ID = -100

LossName = Literal["stablemax", "softmax"]


def _stablemax_s(x: Tensor) -> Tensor:
    """The stablemax transform s(x), with both branches clamped so neither produces inf or NaN gradients."""
    return torch.where(x < 0, 1.0 / (1.0 - x.clamp(max=0.0)), x.clamp(min=0.0) + 1.0)


def stablemax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_LABEL_ID) -> Tensor:
    """Per-token stablemax cross-entropy, computed in float64.

    Args:
        logits: Scores of shape ``[..., V]``; cast to float64 before use.
        labels: Integer targets of shape ``[...]``; positions equal to ``ignore_index`` are ignored.
        ignore_index: Label value that marks positions without a target.

    Returns:
        Float64 tensor of shape ``[...]``: ``-log p_label`` at valid positions and 0 at ignored ones.
    """
    s = _stablemax_s(logits.to(torch.float64))
    ignored = labels == ignore_index
    safe_labels = labels.masked_fill(ignored, 0).long()
    s_label = torch.gather(s, -1, safe_labels.unsqueeze(-1)).squeeze(-1)
    log_prob = torch.log(s_label / s.sum(dim=-1))
    return (-log_prob).masked_fill(ignored, 0.0)


def softmax_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_LABEL_ID,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-token softmax cross-entropy.

    Args:
        logits: Scores of shape ``[..., V]``; cast to ``dtype`` before use.
        labels: Integer targets of shape ``[...]``; positions equal to ``ignore_index`` are ignored.
        ignore_index: Label value that marks positions without a target.
        dtype: Floating dtype the loss is computed in (float32 by default, float64 as an option).

    Returns:
        Tensor of shape ``[...]`` and dtype ``dtype``: the loss at valid positions and 0 at ignored ones.
    """
    vocab = logits.shape[-1]
    loss = F.cross_entropy(
        logits.to(dtype).reshape(-1, vocab),
        labels.long().reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return loss.view(labels.shape)


def sequence_loss(
    logits: Tensor,
    labels: Tensor,
    loss_fn: LossName = "stablemax",
    ignore_index: int = IGNORE_LABEL_ID,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sequence mean token loss, exact-match flag and token accuracy.

    Each token's loss is divided by the row's valid-token count ``max(n, 1)`` before the row sum, as in the
    reference code. The caller sums the per-row values and divides by the (global) batch size.

    Args:
        logits: Scores of shape ``[B, L, V]``.
        labels: Integer targets of shape ``[B, L]``; ``ignore_index`` marks positions without a target.
        loss_fn: ``"stablemax"`` (float64) or ``"softmax"`` (float32) token cross-entropy.
        ignore_index: Label value that marks positions without a target.

    Returns:
        A tuple ``(per_sequence_loss, exact, token_accuracy)``, each of shape ``[B]``: the per-row mean token loss
        (float64 for stablemax, float32 for softmax), whether the argmax matches the label at every valid
        position (a row with no valid label counts as exact), and the fraction of valid positions predicted
        correctly (float32, 0 for a row with no valid label).

    Raises:
        ValueError: If ``loss_fn`` is not a known loss name.
    """
    if loss_fn == "stablemax":
        token_loss = stablemax_cross_entropy(logits, labels, ignore_index)
    elif loss_fn == "softmax":
        token_loss = softmax_cross_entropy(logits, labels, ignore_index)
    else:
        raise ValueError(f"Unknown loss_fn {loss_fn!r}; expected 'stablemax' or 'softmax'.")

    mask = labels != ignore_index
    counts = mask.sum(dim=-1)
    divisor = counts.clamp(min=1).unsqueeze(-1)

    correct = mask & (logits.argmax(dim=-1) == labels)
    exact = correct.sum(dim=-1) == counts
    per_sequence_loss = (token_loss / divisor).sum(dim=-1)
    token_accuracy = (correct.to(torch.float32) / divisor).sum(dim=-1)
    return per_sequence_loss, exact, token_accuracy
