"""The cost table's demo row against a hand count of its matmuls and its checkpoint's tensors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cost_table():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("cost_table", ROOT / "benchmarks" / "cost_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cost_table"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_demo_row_matches_a_hand_count() -> None:
    table = _cost_table()
    row = table.cost("demo_sudoku")
    # configs/demo_sudoku.yaml: 6x6 Sudoku (36 cells, vocab 8), D 64, 2 layers, MLP token mixing, no prefix, T 2, n 2.
    # SwiGLU inner width: 4 * 36 * 2/3 = 96 and 4 * 64 * 2/3 = 171, each rounded up to 256.
    cells, width, vocab, inner = 36, 64, 8, 256
    swiglu = 2 * width * cells * 2 * inner + 2 * width * inner * cells  # gate/up + down over 36 x 64 entries
    call = 2 * (swiglu + swiglu)  # 2 layers of token mixing + channel MLP
    heads = 2 * cells * width * vocab + 2 * width * 2  # lm_head over the cells, q_head on one position
    calls, with_grad = 2 * (2 + 1), 2 + 1
    per_example = calls * call + heads + 2 * (with_grad * call + heads)
    assert per_example == 169_980_672
    assert row.batch == 64 and row.max_steps == 1500
    assert row.step_flops == per_example * 64
    assert row.total_flops == per_example * 64 * 1500
    params = 154_754  # README
    assert row.puzzle_ids == 1
    assert row.weights_bytes == 4 * (params + 64 + 64)  # + the y and z initial-state buffers
    assert row.optimizer_bytes == 4 * (2 * params + 12)  # AdamATan2: two moments, a step per parameter tensor
    assert row.ema_bytes == 4 * params
    carry = 2 * cells * width * 4 + 4 + 1 + (cells + cells + 1) * 8  # y, z fp32; steps; halted; inputs/labels/ids
    assert row.carry_bytes == 64 * carry
    assert row.gpu_hours(0.5, peak=1e12) == pytest.approx(per_example * 64 * 1500 / 0.5e12 / 3600)


def test_rsm_depth_schedule_is_averaged() -> None:
    table = _cost_table()
    steps = 14_968
    mean = table.mean_step_flops("rsm_sudoku", steps)
    recipe = table.load_recipe("rsm_sudoku")
    from recursive_reasoning.core.network import ReasoningNetwork

    net = ReasoningNetwork(recipe.network, recipe.vocab_size, recipe.seq_len)
    strategy = recipe.strategy
    start = table.segment_flops(net, strategy, table.Progress(0, steps), True)["total"]
    end = table.segment_flops(net, strategy, table.Progress(steps - 1, steps), True)["total"]
    assert start < mean < end
