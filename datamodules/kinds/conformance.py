"""Conformance checks any `PuzzleKind` (and any `PuzzleDataModule`) can run in its tests, built-in kinds and users'.

The twin of `strategies/conformance.py`: `check_kind(kind)` raises AssertionError naming the broken rule. It
rebuilds the kind from its description; on generated puzzles (or the `puzzles` given, for a kind without a
generator) it checks shapes and tokens, that the labels pass `check` and that one changed cell fails it, that the
solutions are unique where the kind can count them, that `compact` reads back through `parse` and answers through
`parse_answer`, that `text`, `frame` and a filmstrip of frames draw, and that `transforms` and `augment` keep the
rules and `transforms` undo exactly. `check_datamodule(datamodule)` checks the batches a data module serves against
its declared shape and kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from datamodules.kinds.base import Puzzle, PuzzleKind, kind_from_description
from datamodules.kinds.drawing import filmstrip
from recursive_reasoning.core.losses import IGNORE_LABEL_ID

__all__ = [
    "check_answers_follow_rules",
    "check_augment",
    "check_datamodule",
    "check_description",
    "check_drawing",
    "check_kind",
    "check_puzzles",
    "check_text",
    "check_transforms",
    "sample_puzzles",
]


def _who(kind: PuzzleKind) -> str:
    """The kind as error messages name it, e.g. SudokuKind(size=4)."""
    args = ", ".join(f"{k}={v!r}" for k, v in kind.init_args().items())
    return f"{type(kind).__name__}({args})"


def _generates(kind: PuzzleKind) -> bool:
    return type(kind).generate is not PuzzleKind.generate


def sample_puzzles(
    kind: PuzzleKind, count: int, rng: np.random.Generator, puzzles: list[Puzzle] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs [count, L] and labels [count, L] (None when some puzzle has no answer): `count` generated puzzles, or
    the `puzzles` given (a kind without a generator needs them)."""
    if puzzles is not None:
        inputs = np.stack([np.asarray(p.inputs) for p in puzzles])
        known = all(p.labels is not None for p in puzzles)
        return inputs, np.stack([np.asarray(p.labels) for p in puzzles]) if known else None
    if not _generates(kind):
        raise ValueError(f"{_who(kind)} has no generator: give check_kind some parsed puzzles (puzzles=...)")
    inputs, labels = kind.generate(count, rng)
    assert len(inputs) == len(labels) == count, (
        f"{_who(kind)}: generate({count}) gives {len(inputs)} inputs and {len(labels)} labels"
    )
    return inputs, labels


def check_description(kind: PuzzleKind) -> None:
    """`describe()` rebuilds the same kind (class, arguments, vocabulary and length) through `kind_from_description`."""
    description = kind.describe()
    rebuilt = kind_from_description(description)
    assert type(rebuilt) is type(kind), f"{_who(kind)}: describe() rebuilds a {type(rebuilt).__name__}"
    assert rebuilt.describe() == description, f"{_who(kind)}: describe() rebuilds {rebuilt.describe()}"
    assert (rebuilt.vocab_size, rebuilt.seq_len) == (kind.vocab_size, kind.seq_len), (
        f"{_who(kind)}: the kind rebuilt from describe() has another vocab_size or seq_len"
    )


def check_puzzles(kind: PuzzleKind, inputs: np.ndarray, labels: np.ndarray | None) -> None:
    """Inputs and labels are integer [B, seq_len] with tokens in 0..vocab_size-1."""
    for name, tokens in (("inputs", inputs), ("labels", labels)):
        if tokens is None:
            continue
        assert tokens.ndim == 2 and tokens.shape[1] == kind.seq_len, (
            f"{_who(kind)}: {name} have shape {list(tokens.shape)}, expected [B, {kind.seq_len}]"
        )
        assert np.issubdtype(tokens.dtype, np.integer), f"{_who(kind)}: {name} are {tokens.dtype}, not integers"
        assert tokens.min() >= 0 and tokens.max() < kind.vocab_size, (
            f"{_who(kind)}: {name} hold tokens {tokens.min()}..{tokens.max()}, outside 0..{kind.vocab_size - 1}"
        )
    if labels is not None:
        assert labels.shape == inputs.shape, f"{_who(kind)}: labels {labels.shape} and inputs {inputs.shape} differ"


def _corrupt(labels: np.ndarray, cells: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels with one cell of each row, among `cells` [B, L], changed to another token its label uses; and which
    rows had such a cell. Vectorised over the batch."""
    rows = np.flatnonzero(cells.any(axis=1))
    pick = np.argmax(np.where(cells[rows], rng.random(cells[rows].shape), -1.0), axis=1)  # [R]
    current = labels[rows, pick]
    used = (labels[rows][:, :, None] == np.arange(labels.max() + 1)).any(axis=1)  # [R, V] tokens the label uses
    used[np.arange(len(rows)), current] = False
    rows, pick, used = rows[used.any(axis=1)], pick[used.any(axis=1)], used[used.any(axis=1)]
    corrupted = labels[rows].copy()
    corrupted[np.arange(len(rows)), pick] = np.argmax(np.where(used, rng.random(used.shape), -1.0), axis=1)
    return corrupted, rows


def check_answers_follow_rules(kind: PuzzleKind, inputs: np.ndarray, labels: np.ndarray,
                               rng: np.random.Generator) -> None:
    """The labels pass `check`; a label with one cell it fills in changed, or one cell it keeps from the input (a
    given) changed, to another token it uses fails `check` (the puzzles have one solution); the solutions are
    unique where `count_solutions` can count them; `parse_answer` reads `compact` answers back."""
    passed = kind.check(inputs, labels)
    if passed is not None:
        assert passed.shape == (len(inputs),) and passed.dtype == bool, (
            f"{_who(kind)}: check returns {passed.dtype} {list(passed.shape)}, expected bool [{len(inputs)}]"
        )
        assert passed.all(), f"{_who(kind)}: check rejects the correct labels of puzzles {np.flatnonzero(~passed)}"
        for cells, what in ((inputs != labels, "a cell the answer fills in"), (inputs == labels, "a given")):
            corrupted, rows = _corrupt(labels, cells, rng)
            if len(rows):
                wrong = kind.check(inputs[rows], corrupted)
                assert not wrong.any(), (
                    f"{_who(kind)}: check accepts a label with {what} changed (puzzles {rows[wrong]}); it must "
                    "refuse every answer but the solution"
                )
    counts = kind.count_solutions(inputs, limit=2)
    if counts is not None:
        assert (np.asarray(counts) == 1).all(), (
            f"{_who(kind)}: generated puzzles {np.flatnonzero(np.asarray(counts) != 1)} do not have exactly one "
            f"solution (count_solutions gives {np.asarray(counts).tolist()})"
        )
    if type(kind).parse_answer is not PuzzleKind.parse_answer:
        for b in range(len(inputs)):
            answer = kind.parse_answer(kind.compact(labels[b]), inputs[b])
            assert np.array_equal(answer, labels[b]), f"{_who(kind)}: parse_answer(compact(label)) differs, puzzle {b}"


def check_text(kind: PuzzleKind, inputs: np.ndarray) -> None:
    """`parse(compact(inputs))` gives back each puzzle's tokens, and `text` writes a non-empty string."""
    for b, row in enumerate(inputs):
        compact = kind.compact(row)
        found = kind.parse(compact, name="conformance")
        assert len(found) == 1 and np.array_equal(found[0].inputs, row), (
            f"{_who(kind)}: parse(compact(inputs)) does not give back puzzle {b} (compact wrote {compact!r})"
        )
        text = kind.text(row, row)
        assert isinstance(text, str) and text.strip(), f"{_who(kind)}: text() of puzzle {b} is empty"


def check_drawing(kind: PuzzleKind, inputs: np.ndarray, labels: np.ndarray | None) -> None:
    """`frame` draws uint8 [H, W, 3] pictures, marks changed cells (an answer drawn against its input differs from
    it drawn alone), and a filmstrip of the frames draws."""
    answers = inputs if labels is None else labels
    frames = []
    for b in range(len(inputs)):
        plain = kind.frame(inputs[b], answers[b], None)
        assert isinstance(plain, np.ndarray) and plain.dtype == np.uint8 and plain.ndim == 3 and plain.shape[2] == 3, (
            f"{_who(kind)}: frame() gives {type(plain).__name__} {getattr(plain, 'dtype', '')} "
            f"{list(getattr(plain, 'shape', []))}, expected uint8 [H, W, 3]"
        )
        marked = kind.frame(inputs[b], answers[b], inputs[b])
        assert marked.shape == plain.shape, f"{_who(kind)}: frame() changes size when cells are marked"
        if (answers[b] != inputs[b]).any():
            assert not np.array_equal(marked, plain), f"{_who(kind)}: frame() does not mark the changed cells"
        frames += [plain, marked]
    strip = filmstrip(frames, [f"frame {i}" for i in range(len(frames))], title=_who(kind), per_row=4)
    assert strip.shape[0] > frames[0].shape[0] and strip.shape[1] > frames[0].shape[1], (
        f"{_who(kind)}: a filmstrip of its frames is smaller than one frame"
    )


def check_transforms(kind: PuzzleKind, inputs: np.ndarray, labels: np.ndarray | None, seed: int,
                     copies: int = 3) -> None:
    """`transforms`: copies [P, B, L] with ids [P, B], copy 0 the identity, the inverse giving back the inputs of
    every copy; the labels moved the same way (`transforms` of the labels with the rng in the same state, so a kind
    must draw its transforms independently of the tokens) pass `check` against the moved inputs, and come back.
    """
    ids = np.zeros(len(inputs), dtype=np.int64)
    moved, moved_ids, inverse = kind.transforms(inputs, ids, copies, np.random.default_rng(seed))
    shape = (copies, *inputs.shape)
    assert moved.shape == shape, f"{_who(kind)}: transforms gives {list(moved.shape)}, expected {list(shape)}"
    assert moved_ids.shape == (copies, len(inputs)), f"{_who(kind)}: transforms gives ids {list(moved_ids.shape)}"
    assert np.array_equal(moved[0], inputs), f"{_who(kind)}: copy 0 of transforms is not the identity"
    back = inverse(moved)
    for p in range(copies):
        assert np.array_equal(back[p], inputs), f"{_who(kind)}: inverse(transforms) differs from the inputs, copy {p}"
    if labels is None:
        return
    moved_labels, _, label_inverse = kind.transforms(labels, ids, copies, np.random.default_rng(seed))
    assert np.array_equal(label_inverse(moved_labels), np.broadcast_to(labels, shape)), (
        f"{_who(kind)}: inverse(transforms(labels)) differs from the labels: the draws depend on the tokens"
    )
    for p in range(copies):
        passed = kind.check(moved[p], moved_labels[p])
        if passed is not None:
            assert passed.all(), (
                f"{_who(kind)}: transforms breaks the rules: copy {p} of puzzles {np.flatnonzero(~passed)} fails check"
            )


def check_augment(kind: PuzzleKind, inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """`augment` keeps the shapes and the rules: augmented labels pass `check` against augmented inputs."""
    moved_inputs, moved_labels = kind.augment(inputs, labels, rng)
    assert moved_inputs.shape == inputs.shape and moved_labels.shape == labels.shape, (
        f"{_who(kind)}: augment changes the shapes to {list(moved_inputs.shape)} / {list(moved_labels.shape)}"
    )
    passed = kind.check(moved_inputs, moved_labels)
    if passed is not None:
        assert passed.all(), f"{_who(kind)}: augment breaks the rules: puzzles {np.flatnonzero(~passed)} fail check"


def check_kind(kind: PuzzleKind, count: int = 8, seed: int = 0, puzzles: list[Puzzle] | None = None) -> None:
    """Run every conformance check on `kind`: on `count` generated puzzles, or on `puzzles` (parsed, with their
    answers where known) for a kind without a generator. Raises AssertionError naming the broken rule."""
    rng = np.random.default_rng(seed)
    check_description(kind)
    inputs, labels = sample_puzzles(kind, count, rng, puzzles)
    check_puzzles(kind, inputs, labels)
    if labels is not None:
        check_answers_follow_rules(kind, inputs, labels, rng)
        check_augment(kind, inputs, labels, rng)
    check_text(kind, inputs)
    check_drawing(kind, inputs, labels)
    check_transforms(kind, inputs, labels, seed)


def _kind_of(datamodule: Any) -> PuzzleKind | None:
    """The data module's `puzzle_kind` (a property; the older `puzzle_format()` method accepted too)."""
    if hasattr(datamodule, "puzzle_kind"):
        kind = datamodule.puzzle_kind
        return kind() if callable(kind) else kind
    return datamodule.puzzle_format()


def check_datamodule(datamodule: Any) -> None:
    """After `setup`, a training and a validation batch hold inputs and labels [B, seq_len] with tokens below
    vocab_size (labels may be the ignore label) and puzzle ids [B] below num_puzzle_ids; the data module's kind has
    its vocabulary and length, and the validation labels pass the kind's `check`."""
    name = type(datamodule).__name__
    datamodule.setup("fit")
    vocab, length, num_ids = datamodule.vocab_size, datamodule.seq_len, datamodule.num_puzzle_ids
    kind = _kind_of(datamodule)
    if kind is not None:
        assert (kind.vocab_size, kind.seq_len) == (vocab, length), (
            f"{name}: its kind {_who(kind)} has vocab_size {kind.vocab_size} and seq_len {kind.seq_len}, the data "
            f"module {vocab} and {length}"
        )
    for split, loader in (("train", datamodule.train_dataloader()), ("val", datamodule.val_dataloader())):
        batch = next(iter(loader))
        inputs, labels, ids = batch["inputs"], batch["labels"], batch["puzzle_ids"]
        size = len(inputs)
        for key, tokens in (("inputs", inputs), ("labels", labels)):
            assert isinstance(tokens, torch.Tensor) and tokens.shape == (size, length), (
                f"{name}: {split} {key} have shape {list(tokens.shape)}, expected [B, {length}]"
            )
            scored = tokens[tokens != IGNORE_LABEL_ID] if key == "labels" else tokens
            assert scored.min() >= 0 and scored.max() < vocab, (
                f"{name}: {split} {key} hold tokens {int(scored.min())}..{int(scored.max())}, outside 0..{vocab - 1}"
            )
        assert ids.shape == (size,) and ids.min() >= 0 and ids.max() < num_ids, (
            f"{name}: {split} puzzle_ids {ids.tolist()[:8]} must be [B] in 0..{num_ids - 1}"
        )
        if kind is not None and split == "val" and not (labels == IGNORE_LABEL_ID).any():
            passed = kind.check(inputs.numpy(), labels.numpy())
            assert passed is None or passed.all(), (
                f"{name}: validation labels {np.flatnonzero(~passed).tolist()} fail {_who(kind)}.check"
            )
