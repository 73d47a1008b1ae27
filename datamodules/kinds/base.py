"""The puzzle-kind contract (`PuzzleKind`), the puzzle record and reading puzzle files.

A kind knows tokens and rules, nothing of models: it reads a puzzle from text and writes an answer back, checks an
answer against the rules, draws a grid, and maps a batch through its symmetries and back. Data modules name their
kind (`PuzzleDataModule.kind`) and save its description in every checkpoint, so `rr solve` reads puzzles for a trained
model without being told what they are.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datamodules.kinds.drawing import filmstrip

__all__ = ["Inverse", "Puzzle", "PuzzleKind", "kind_from_description", "read_puzzle_text"]

Inverse = Callable[[np.ndarray], np.ndarray]
INPUT_COLUMNS = ("puzzle", "question", "quizzes", "input")  # CSV headers naming the puzzle column
LABEL_COLUMNS = ("solution", "answer", "solutions", "output")  # and the answer column, when there is one
REPORT_LINE = re.compile(r"^([a-z][a-z ()_-]*:|wrote \d+ answers to )")  # `rr solve` text output around its grids


def read_puzzle_text(path: Path, what: str = "puzzle file") -> str:
    """The text of a puzzle file, gzip read transparently (by its .gz suffix or its magic bytes); errors name the
    problem and the fix instead of a decode error or traceback."""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, not a file; give one file of puzzles with --file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = path.read_bytes()
        if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except PermissionError:
        raise ValueError(f"cannot read {what} {path}: permission denied; make it readable (chmod u+r) or copy it"
                         ) from None
    except (OSError, EOFError) as err:
        raise ValueError(f"{what} {path} is not a readable gzip file ({err}); give plain text or a whole .gz") from None
    if b"\0" in data:
        raise ValueError(f"{what} {path} is a binary file, not text; give puzzles as text (one per line, or a CSV), "
                         "plain or gzipped (.gz)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x}); give "
                         "puzzles as plain text, plain or gzipped (.gz)") from None


def _is_csv(path: Path, text: str) -> bool:
    """A CSV of puzzles: named .csv(.gz), or its first line (past '#' comments) has a comma (no puzzle holds one)."""
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    return path.name.removesuffix(".gz").endswith(".csv") or "," in first


@dataclass
class Puzzle:
    """One puzzle to solve: its input tokens [L], puzzle id, a name for reports, and its answer tokens if known."""

    inputs: np.ndarray
    name: str
    puzzle_id: int = 0
    labels: np.ndarray | None = None


class PuzzleKind(ABC):
    """Everything about one kind of puzzle: its tokens, reading and writing, the rule checker, drawing, the
    validity-preserving symmetries and, where it has one, its generator. Nothing of models or loaders.

    A kind makes itself known by its class path, as strategies do: `describe()` saves the class path and the
    constructor's arguments in every checkpoint, and `kind_from_description` imports the class back, so a new kind
    is one module with no central list to edit. `strategies/conformance.py` has a twin here,
    `datamodules.kinds.conformance.check_kind`, which any kind can run.

    Subclasses set `name` (what reports call it) and implement the abstract methods; `init_args` returns the
    constructor's arguments.
    """

    name: ClassVar[str]
    registry: ClassVar[dict[str, type[PuzzleKind]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # by name, only for checkpoints written before class paths were saved
            PuzzleKind.registry.setdefault(cls.name, cls)

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids of the encoding (ids 0..vocab_size-1; 0 is padding where a kind pads)."""

    @property
    @abstractmethod
    def seq_len(self) -> int:
        """Tokens per puzzle (the input and the answer have the same length)."""

    def init_args(self) -> dict[str, Any]:
        """The constructor's arguments as plain data (what `describe` saves)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Plain data that rebuilds this kind (`kind_from_description`): its class path and `init_args`."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": self.init_args()}

    @classmethod
    def from_init_args(cls, init_args: dict[str, Any], **context: Any) -> PuzzleKind:
        """The kind from saved `init_args`; `context` carries what a checkpoint knows beside them (ARC: the training
        run's puzzle-id map), which kinds that do not need it ignore."""
        return cls(**init_args)

    @classmethod
    def from_shape(cls, seq_len: int, vocab_size: int) -> PuzzleKind:
        """The kind whose tokens fit a model of `seq_len` positions and `vocab_size` tokens (`rr import` of a
        checkpoint that does not say what it solves). Override it where the shape determines the arguments (Sudoku:
        the side of a square grid); the default refuses with an error saying to give the arguments."""
        raise ValueError(f"{cls.name} puzzles cannot be inferred from a model's shape; give the kind's arguments")

    def generate(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` random puzzles, all drawn from `rng`: inputs and labels int [count, seq_len], every label passing
        `check`. Each puzzle should have one solution (`count_solutions` verifies it where it can count), so any
        other answer fails `check`. The default refuses: kinds without a generator read their puzzles from files."""
        raise ValueError(f"{self.name} puzzles have no generator; read them from files")

    def augment(
        self, inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row [B, seq_len] of a training batch under its own random validity-preserving symmetry, the same one
        for its input and its label (vectorised over the batch), so augmented labels still pass `check`. The default
        returns the batch unchanged: a kind without symmetries needs nothing here."""
        return inputs, labels

    def count_solutions(self, inputs: np.ndarray, limit: int = 2) -> np.ndarray | None:
        """How many solutions each puzzle [B, seq_len] has, counted up to `limit` (int [B]; limit=2 tells unique
        from ambiguous), or None when the kind has no solver that can count (the default)."""
        return None

    @abstractmethod
    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """The puzzles in one text (a Sudoku string, a maze, an ARC task JSON); errors say what is wrong."""

    def read_file(self, path: str | Path) -> list[Puzzle]:
        """Every puzzle of a text file (`read_text`) or of a CSV with a header naming its puzzle column and, if it
        has one, its answer column (`puzzle,solution`, or the data modules' `source,question,answer,rating`)."""
        path = Path(path)
        text = read_puzzle_text(path)
        puzzles = self._read_csv(path, text) if _is_csv(path, text) else self.read_text(path, text)
        if not puzzles:
            raise ValueError(f"{path} holds no puzzles")
        return puzzles

    def read_text(self, path: Path, text: str) -> list[Puzzle]:
        """The puzzles of a text file that is not a CSV (`read_file` calls it): by default one puzzle per line
        (`parse`), blank lines and lines starting with '#' skipped. Override it for puzzles spread over several
        lines (a printed Sudoku grid, a maze), reporting errors by file and line as `_parse_at` does."""
        puzzles: list[Puzzle] = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                puzzles.extend(self._parse_at(path, number, line.strip()))
        return puzzles

    def _parse_at(self, path: Path, number: int, text: str) -> list[Puzzle]:
        """`parse` of the puzzle at a line of a file, its errors prefixed with the file and line."""
        try:
            return self.parse(text, name=f"{path.name}:{number}")
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None

    def _read_csv(self, path: Path, text: str) -> list[Puzzle]:
        """The puzzles of a CSV, with their answers as labels when it has an answer column."""
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in next(reader, [])]
        column = next((header.index(c) for c in INPUT_COLUMNS if c in header), None)
        label = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
        if column is None:
            raise ValueError(
                f"{path}:1: a CSV of puzzles needs a header naming its puzzle column ({', '.join(INPUT_COLUMNS)}), "
                f"e.g. 'puzzle,solution' or 'source,question,answer,rating'; got {','.join(header)!r}"
            )
        puzzles: list[Puzzle] = []
        for record in reader:
            if not any(field.strip() for field in record):
                continue
            number = reader.line_num
            if len(record) <= max(column, label or 0):
                raise ValueError(f"{path}:{number}: {len(record)} columns, but the header names {len(header)}")
            found = self._parse_at(path, number, record[column])
            if label is not None and record[label].strip():
                try:
                    for puzzle in found:
                        puzzle.labels = self.parse_answer(record[label], puzzle.inputs)
                except ValueError as err:
                    raise ValueError(f"{path}:{number}: {header[label]}: {err}") from None
            puzzles.extend(found)
        return puzzles

    def parse_answer(self, text: str, inputs: np.ndarray) -> np.ndarray:
        """The answer tokens [L] of a known solution given as text (a labelled CSV's answer column)."""
        raise ValueError(f"{self.name} puzzles take no answer column; give the puzzles alone")

    @abstractmethod
    def compact(self, tokens: np.ndarray) -> str:
        """Tokens [L] (a puzzle or an answer) as one machine-readable string that `parse` reads back."""

    @abstractmethod
    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        """The answer tokens [L] of a puzzle as readable text."""

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray | None:
        """Whether each predicted answer [B, L] obeys the puzzle's rules (bool [B]); None when there is no checker."""
        return None

    @abstractmethod
    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """A picture (uint8 [H, W, 3]) of the answer tokens [L], cells changed since `previous` marked."""

    def trace(self, inputs: np.ndarray, answers: np.ndarray, halt_probabilities: np.ndarray | None = None,
              title: str | None = None, per_row: int = 9) -> np.ndarray:
        """A filmstrip (uint8 [H, W, 3]) of the reasoning on one puzzle: its input, then the answer after every step
        (answers [S, L]), each frame marking what changed and captioned with sigmoid(q_halt) [S] where known (NaN: not
        shown). `rr solve --trace` and the TensorBoard filmstrips draw it."""
        frames, captions, previous = [self.frame(inputs, inputs, None)], ["input"], None
        for step, tokens in enumerate(answers):
            frames.append(self.frame(inputs, tokens, previous))
            q = None if halt_probabilities is None else float(halt_probabilities[step])
            captions.append(f"step {step + 1}" + ("" if q is None or math.isnan(q) else f" q {q:.2f}"))
            previous = tokens
        return filmstrip(frames, captions, title=title, per_row=per_row)

    @abstractmethod
    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """`copies` versions of a batch under random validity-preserving symmetries (copy 0 the identity), for
        test-time voting. The transforms are drawn from `rng` independently of the tokens, so the same `rng` state
        moves a batch of answers the same way (`conformance.check_transforms` moves the labels so).

        Args:
            inputs: Input tokens [B, L].
            puzzle_ids: Puzzle ids [B].
            copies: Number of versions P.
            rng: Source of the random transforms.

        Returns:
            inputs [P, B, L], puzzle ids [P, B], and a function mapping answers [P, B, L] of the transformed
            versions back to the original frame (equal answers then mean the same answer).
        """

    def reference_perturbations(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Augmented HRM's fixed perturbation set (renrua52/hrm-mechanistic-analysis), copy 0 the identity; returns
        what `transforms` does. Only Sudoku (cyclic digit shifts) and Maze (start/goal swap) have one."""
        raise ValueError(
            f"{self.name} puzzles have no reference perturbation set (Augmented HRM defines one for Sudoku and Maze); "
            "use perturbations='symmetries'"
        )


def kind_from_description(description: dict[str, Any], **context: Any) -> PuzzleKind:
    """Rebuild a kind saved by `describe()`: import its class path and pass it the saved arguments and `context`.

    Checkpoints written before class paths were saved hold {"kind": name, ...arguments}; those resolve by the kind's
    `name` among the kinds imported so far (the built-in ones always are).
    """
    if "class_path" in description:
        module_name, _, class_name = str(description["class_path"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"the checkpoint's puzzle kind {description['class_path']!r} cannot be imported ({err}); "
                             "install the package that defines it, or put its module on PYTHONPATH") from None
        if not (isinstance(cls, type) and issubclass(cls, PuzzleKind)):
            raise ValueError(f"{description['class_path']!r} is not a PuzzleKind")
        return cls.from_init_args(dict(description.get("init_args") or {}), **context)
    name = description.get("kind")
    cls = PuzzleKind.registry.get(str(name))
    if cls is None:
        raise ValueError(f"unknown puzzle kind {name!r} in the checkpoint; known by name: "
                         f"{', '.join(sorted(PuzzleKind.registry))}")
    return cls.from_init_args({k: v for k, v in description.items() if k != "kind"}, **context)
