"""Puzzle formats: how one kind of puzzle is read from text, written back, checked, drawn, and transformed for
test-time voting. They know tokens and rules, nothing of models.

A data module names its format (`PuzzleDataModule.puzzle_format`) and saves its description in every checkpoint, so
`rr solve` knows how to read a puzzle for a trained model. Token encodings are the data modules' own.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules import arc_rules, maze_rules, sudoku_rules
from datamodules.dihedral import DIHEDRAL_INVERSE

__all__ = ["ARCFormat", "MazeFormat", "Puzzle", "PuzzleFormat", "SudokuFormat", "format_from_description",
           "read_puzzle_text"]

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


class PuzzleFormat(ABC):
    """Reading, writing, checking, drawing and test-time transforms of one kind of puzzle."""

    kind: str

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain data that rebuilds this format (`format_from_description`), saved in checkpoints."""

    @abstractmethod
    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """The puzzles in one text (a Sudoku string, a maze, an ARC task JSON); errors say what is wrong."""

    def read_file(self, path: str | Path) -> list[Puzzle]:
        """Every puzzle of a text file (`_read_text`) or of a CSV with a header naming its puzzle column and, if it
        has one, its answer column (`puzzle,solution`, or the data modules' `source,question,answer,rating`)."""
        path = Path(path)
        text = read_puzzle_text(path)
        puzzles = self._read_csv(path, text) if _is_csv(path, text) else self._read_text(path, text)
        if not puzzles:
            raise ValueError(f"{path} holds no puzzles")
        return puzzles

    def _read_text(self, path: Path, text: str) -> list[Puzzle]:
        """One puzzle per line, blank lines and lines starting with '#' skipped."""
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
        raise ValueError(f"{self.kind} puzzles take no answer column; give the puzzles alone")

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

    @abstractmethod
    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """`copies` transformed versions of a batch (copy 0 the identity) for test-time voting.

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
            f"{self.kind} puzzles have no reference perturbation set (Augmented HRM defines one for Sudoku and Maze); "
            "use perturbations='symmetries'"
        )


class SudokuFormat(PuzzleFormat):
    """N x N Sudoku: text of N*N digits with '.' or '0' for blanks; tokens 1 blank, 2..N+1 digits."""

    kind = "sudoku"

    def __init__(self, size: int) -> None:
        sudoku_rules.box_shape(size)
        self.size = size

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size}

    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """One puzzle: a digit string or a printed grid; refused when its givens already break the rules."""
        grid = sudoku_rules.parse_puzzle(text, self.size)
        sudoku_rules.check_givens(grid)
        return [Puzzle(inputs=grid + 1, name=name)]

    def _read_text(self, path: Path, text: str) -> list[Puzzle]:
        """One puzzle per line, or a grid of N lines of N cells as `rr solve` prints it (box rules and its report
        lines, e.g. 'rule checker: fails', skipped, so its text output reads back); blank lines and '#' comments
        skipped."""
        n, puzzles, rows, first = self.size, [], [], 0
        for number, raw in enumerate([*text.splitlines(), ""], 1):
            line = raw.strip()
            if not line or line.startswith("#") or REPORT_LINE.match(line):
                if rows:
                    raise ValueError(f"{path}:{first}: a grid of {len(rows)} rows; a {n}x{n} Sudoku needs {n} rows "
                                     f"of {n} cells ('.' for blanks), or all {n * n} cells on one line")
                continue
            cells = sum(c.isdigit() or c == "." for c in line)
            if cells == 0 and not line.strip("-+| "):
                continue  # a box rule of a printed grid
            if cells == n:
                first, rows = first if rows else number, [*rows, line]
                if len(rows) == n:
                    puzzles.extend(self._parse_at(path, first, "".join(rows)))
                    rows = []
                continue
            puzzles.extend(self._parse_at(path, number, line))
        return puzzles

    def parse_answer(self, text: str, inputs: np.ndarray) -> np.ndarray:
        """A complete solution keeping the puzzle's givens."""
        grid = sudoku_rules.parse_puzzle(text, self.size)
        blank = np.flatnonzero(grid == 0)
        if blank.size:
            raise ValueError(f"the solution has a blank at position {int(blank[0])}; give the complete solution")
        kept = (inputs <= 1) | (inputs == grid + 1)
        if not kept.all():
            raise ValueError(f"the solution changes the given at position {int(np.argmin(kept))}; check the row")
        return grid + 1

    def compact(self, tokens: np.ndarray) -> str:
        return "".join("." if d == 0 else str(int(d)) for d in np.clip(np.asarray(tokens) - 1, 0, None))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        return sudoku_rules.format_grid(np.clip(np.asarray(tokens) - 1, 0, None))

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """A complete valid solution that keeps every given."""
        puzzles, grids = np.clip(inputs - 1, 0, None), np.clip(predictions - 1, 0, None)
        return sudoku_rules.valid_solutions(grids) & sudoku_rules.is_consistent(puzzles, grids)

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        from recursive_reasoning.render import sudoku_frame

        n = self.size
        grid = np.clip(np.asarray(tokens) - 1, 0, None).reshape(n, n)
        givens = (np.asarray(inputs) > 1).reshape(n, n)
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(n, n)
        return sudoku_frame(grid, givens, changed, wrong=_sudoku_conflicts(grid))

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Validity-preserving symmetries (digit relabelling, transpose, band / row / stack / column orders)."""
        size, cells = self.size, self.size * self.size
        keys = rng.random((copies, sudoku_rules.symmetry_key_count(size)))
        digit_maps, gather = sudoku_rules.symmetries_from_keys(keys, size)
        digit_maps[0], gather[0] = np.arange(size + 1), np.arange(cells)
        grids = np.clip(inputs - 1, 0, None)  # [B, L]
        moved = np.stack([digit_maps[p][grids[:, gather[p]]] for p in range(copies)])
        inverse_gather = np.argsort(gather, axis=1)
        inverse_maps = np.argsort(digit_maps, axis=1)

        def inverse(answers: np.ndarray) -> np.ndarray:
            digits = np.clip(answers - 1, 0, None)
            back = np.stack([inverse_maps[p][digits[p][:, inverse_gather[p]]] for p in range(copies)])
            return back + 1

        return moved + 1, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse

    def reference_perturbations(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Copy k shifts every digit cyclically by k: d -> (d - 1 + k) mod N + 1, blanks kept (k = 0..copies-1).

        A relabelling of the digits, so a valid puzzle stays valid and its solution shifts with it; shifting back by
        -k inverts it. Augmented HRM votes over the 9 shifts of a 9x9 Sudoku.
        """
        n = self.size
        if copies > n:
            raise ValueError(f"a {n}x{n} Sudoku has {n} cyclic digit shifts; asked for {copies} copies")
        shifts = np.arange(copies).reshape(-1, 1, 1)

        def shifted(tokens: np.ndarray, by: np.ndarray) -> np.ndarray:
            digit = (tokens >= 2) & (tokens <= n + 1)  # tokens 2..N+1 are the digits 1..N
            return np.where(digit, (tokens - 2 + by) % n + 2, tokens)

        def inverse(answers: np.ndarray) -> np.ndarray:
            return shifted(answers, -shifts)

        moved = shifted(np.broadcast_to(inputs, (copies, *inputs.shape)), shifts)
        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse


def _sudoku_conflicts(grid: np.ndarray) -> np.ndarray:
    """Cells [N, N] whose digit repeats in their row, column or box."""
    n = grid.shape[0]
    rows, cols = sudoku_rules.box_shape(n)
    conflict = np.zeros_like(grid, dtype=bool)
    for r in range(n):
        for c in range(n):
            d = grid[r, c]
            if d == 0:
                continue
            r0, c0 = r - r % rows, c - c % cols
            box = grid[r0 : r0 + rows, c0 : c0 + cols]
            conflict[r, c] = (grid[r] == d).sum() > 1 or (grid[:, c] == d).sum() > 1 or (box == d).sum() > 1
    return conflict


class MazeFormat(PuzzleFormat):
    """N x N maze: text of '# SG' (N lines of N characters, or N*N in a row); tokens are the cell codes."""

    kind = "maze"

    def __init__(self, side: int) -> None:
        self.side = side

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "side": self.side}

    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """One maze; refused when it marks path cells already or G cannot be reached from S."""
        grid = maze_rules.parse_maze(text.strip("\n"), self.side)
        if (grid == maze_rules.PATH).any():
            raise ValueError("the maze already marks path cells 'o'; give the maze without its answer")
        maze_rules.check_solvable(grid)
        return [Puzzle(inputs=grid.reshape(-1), name=name)]

    def _read_text(self, path: Path, text: str) -> list[Puzzle]:
        """Mazes separated by blank lines (each N lines of N characters), or one N*N-character maze per line."""
        blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip("\n")]
        text_blocks = [line for b in blocks for line in ([b] if "\n" in b.strip("\n") else b.split("\n")) if line]
        puzzles = []
        for i, block in enumerate(text_blocks):
            try:
                puzzles.extend(self.parse(block, name=f"{path.name}#{i}"))
            except ValueError as err:
                raise ValueError(f"{path}: maze {i}: {err}") from None
        return puzzles

    def parse_answer(self, text: str, inputs: np.ndarray) -> np.ndarray:
        """The maze with its shortest path marked 'o', on the puzzle's walls."""
        codes = maze_rules.parse_maze(text.strip("\n"), self.side).reshape(-1)
        kept = (codes == inputs) | ((codes == maze_rules.PATH) & (inputs == maze_rules.OPEN))
        if not kept.all():
            cell = int(np.argmin(kept))
            raise ValueError(f"the answer differs from its maze at row {cell // self.side}, column {cell % self.side} "
                             "(only open cells may become path 'o'); check the row")
        return codes

    def compact(self, tokens: np.ndarray) -> str:
        return maze_rules.format_maze(np.clip(np.asarray(tokens), maze_rules.WALL, maze_rules.PATH))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        codes = np.clip(np.asarray(tokens), maze_rules.WALL, maze_rules.PATH)
        return maze_rules.format_maze(codes, lines=True)

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """The prediction marks a shortest S -> G path of its maze."""
        return maze_rules.valid_paths(inputs, predictions)

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        from recursive_reasoning.render import MAZE_PALETTE, colour_frame

        n = self.side
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(n, n)
        return colour_frame(np.asarray(tokens).reshape(n, n), MAZE_PALETTE, changed, cell=max(6, 240 // n))

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """The dihedral transforms, in order (at most 8 distinct copies)."""
        if copies > 8:
            raise ValueError(f"a maze has 8 dihedral transforms; asked for {copies} copies")
        gather = maze_rules.dihedral_gather(self.side)
        moved = np.stack([inputs[:, gather[p]] for p in range(copies)])

        def inverse(answers: np.ndarray) -> np.ndarray:
            return np.stack([answers[p][:, gather[DIHEDRAL_INVERSE[p]]] for p in range(copies)])

        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse

    def reference_perturbations(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Copy 1 swaps start and goal (Augmented HRM's maze perturbation): the same shortest paths, so the same
        answer with S and G swapped back; the swap is its own inverse."""
        if copies > 2:
            raise ValueError(f"a maze has 2 reference perturbations (itself, start/goal swapped); asked for {copies}")
        swap = np.arange(copies).reshape(-1, 1, 1) == 1

        def swapped(tokens: np.ndarray) -> np.ndarray:
            flipped = np.where(tokens == maze_rules.START, maze_rules.GOAL,
                               np.where(tokens == maze_rules.GOAL, maze_rules.START, tokens))
            return np.where(swap, flipped, tokens)

        moved = swapped(np.broadcast_to(inputs, (copies, *inputs.shape)))
        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), swapped


class ARCFormat(PuzzleFormat):
    """ARC task JSON: every test input is a puzzle on the 30x30 canvas; tokens 0 PAD, 1 EOS, colours 2..11.

    With the training run's puzzle-id map, a task the model trained on (by task id) is solved under its own ids and
    augmentations, as TRM evaluates; any other task gets the blank id 0 (the model never saw its demonstrations).
    """

    kind = "arc"

    def __init__(self, puzzle_map: Any | None = None) -> None:
        self.puzzle_map = puzzle_map

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def _ids_of(self, task_name: str) -> np.ndarray:
        """Puzzle ids of a task in the map (identity first), matched by the task id after 'set:'; empty if absent."""
        if self.puzzle_map is None:
            return np.zeros(0, dtype=np.int64)
        matches = [i for i, qualified in enumerate(self.puzzle_map.task_names)
                   if qualified.rpartition(":")[2] == task_name]
        if not matches:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.puzzle_map.task_of_id == matches[-1])

    def parse(self, text: str, name: str = "task") -> list[Puzzle]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}: not valid JSON ({err})") from None
        tasks = data if isinstance(data, dict) and "train" not in data else {name: data}
        if not tasks:
            raise ValueError(f"{name}: holds no ARC task (an empty JSON object); give a task "
                             '{"train": [{"input": ..., "output": ...}], "test": [{"input": ...}]} or {task_id: task}')
        puzzles = []
        for task_name, obj in tasks.items():
            task = arc_rules._task(task_name, obj, name)
            if not task.test:
                raise ValueError(f"{name}: task {task_name} has no test inputs, so there is nothing to solve; add "
                                 '"test": [{"input": [[...]]}] to it')
            ids = self._ids_of(task_name)
            for index, pair in enumerate(task.test):
                bank, shapes = _bank([pair.input] + ([pair.output] if pair.output is not None else []))
                zero = np.zeros((1, 2), dtype=np.int64)
                inputs = arc_rules.encode(bank, shapes, np.array([0]), arc_rules.IDENTITY[None], zero)[0]
                labels = None
                if pair.output is not None:
                    labels = arc_rules.encode(bank, shapes, np.array([1]), arc_rules.IDENTITY[None], zero)[0]
                puzzles.append(Puzzle(inputs=inputs, name=f"{task_name}[{index}]",
                                      puzzle_id=int(ids[0]) if len(ids) else 0, labels=labels))
        return puzzles

    def read_file(self, path: str | Path) -> list[Puzzle]:
        """One task JSON (named by the file), a combined {task_id: task} file, a Kaggle challenges file (with its
        solutions beside it) or a directory of task files."""
        path = Path(path)
        if path.is_dir() or "_challenges" in path.name:
            tasks = arc_rules.read_tasks(path)
            return self.parse(json.dumps({name: _task_json(task) for name, task in tasks.items()}), name=path.name)
        text = read_puzzle_text(path, "ARC task file")
        name = path.name.removesuffix(".gz").removesuffix(".json")
        try:
            return self.parse(text, name=name)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def compact(self, tokens: np.ndarray) -> str:
        """The grid as compact JSON rows, e.g. [[1,2],[3,4]]."""
        return json.dumps(arc_rules.crop(np.asarray(tokens)).tolist(), separators=(",", ":"))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        grid = arc_rules.crop(np.asarray(tokens))
        return "\n".join("".join(str(int(c)) for c in row) for row in grid) if grid.size else "(empty grid)"

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        from recursive_reasoning.render import ARC_PALETTE, colour_frame

        tokens = np.asarray(tokens)
        colours = np.where(tokens >= 2, tokens - 2, np.where(tokens == 1, 11, 10)).reshape(30, 30)
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(30, 30)
        return colour_frame(colours, ARC_PALETTE, changed, cell=8)

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """A task in the map uses its own first `copies` augmentations and their ids; others random ones, id 0."""
        size = len(inputs)
        grids = [arc_rules.crop(row) for row in inputs]
        bank, shapes = _bank(grids)
        augmentations = np.empty((copies, size, 11), dtype=np.uint8)
        ids = np.zeros((copies, size), dtype=np.int64)
        for b in range(size):
            own = np.zeros(0, dtype=np.int64)
            if self.puzzle_map is not None and puzzle_ids[b] > 0:
                task = self.puzzle_map.task_of_id[puzzle_ids[b]]
                own = np.flatnonzero(self.puzzle_map.task_of_id == task)
            for p in range(copies):
                if p < len(own):
                    augmentations[p, b], ids[p, b] = self.puzzle_map.augmentations[own[p]], own[p]
                elif p == 0:
                    augmentations[p, b] = arc_rules.IDENTITY
                else:
                    augmentations[p, b] = np.concatenate([[rng.integers(8), 0], 1 + rng.permutation(9)])
        zero = np.zeros((size, 2), dtype=np.int64)
        moved = np.stack([arc_rules.encode(bank, shapes, np.arange(size), augmentations[p], zero)
                          for p in range(copies)])

        def inverse(answers: np.ndarray) -> np.ndarray:
            out = np.empty_like(answers)
            for p in range(copies):
                restored = [arc_rules.restore(arc_rules.crop(answers[p, b]), augmentations[p, b]) for b in range(size)]
                for b, grid in enumerate(restored):
                    if grid.size == 0:
                        out[p, b] = arc_rules.PAD
                        continue
                    one, one_shape = _bank([grid])
                    out[p, b] = arc_rules.encode(one, one_shape, np.array([0]), arc_rules.IDENTITY[None],
                                                 np.zeros((1, 2), dtype=np.int64))[0]
            return out

        return moved, ids, inverse


def _bank(grids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    bank = np.zeros((len(grids), arc_rules.CANVAS, arc_rules.CANVAS), dtype=np.uint8)
    shapes = np.zeros((len(grids), 2), dtype=np.int64)
    for i, grid in enumerate(grids):
        bank[i, : grid.shape[0], : grid.shape[1]] = grid
        shapes[i] = grid.shape
    return bank, shapes


def _task_json(task: arc_rules.Task) -> dict[str, Any]:
    def pair(p: arc_rules.Pair) -> dict[str, Any]:
        out = {"input": p.input.tolist()}
        if p.output is not None:
            out["output"] = p.output.tolist()
        return out

    return {"train": [pair(p) for p in task.train], "test": [pair(p) for p in task.test]}


def format_from_description(description: dict[str, Any], puzzle_map: Any | None = None) -> PuzzleFormat:
    """Rebuild a format saved by `describe()` (the ARC one with the training run's puzzle-id map, if any)."""
    kind = description.get("kind")
    if kind == "sudoku":
        return SudokuFormat(int(description["size"]))
    if kind == "maze":
        return MazeFormat(int(description["side"]))
    if kind == "arc":
        return ARCFormat(puzzle_map)
    raise ValueError(f"unknown puzzle kind {kind!r} in the checkpoint; known: sudoku, maze, arc")

