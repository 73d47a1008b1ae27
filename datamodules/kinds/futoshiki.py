"""N x N Futoshiki as a puzzle kind: a Latin square with inequality clues between neighbouring cells, its rules,
16 symmetries, a uniqueness-checking solver and a seeded generator; the worked example of docs/puzzles.md."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from datamodules.dihedral import DIHEDRAL_INVERSE, dihedral
from datamodules.kinds.base import Inverse, Puzzle, PuzzleKind
from datamodules.kinds.drawing import BLACK, Colour, digit_frame, grid_layout

__all__ = ["FutoshikiKind"]

GIVEN_SHARE = 0.25  # of the clues the generator adds, the share that are given digits (the rest are inequalities)
SYMMETRIES = 16  # the 8 dihedral maps of the grid, each with or without the digit reversal d -> N + 1 - d
FRAME_CELL, FRAME_GAP = 32, 16  # pixels of a cell and of the gap between two cells, where the inequalities go
SIGN_WRONG: Colour = (210, 0, 0)  # an inequality the filled cells break


class FutoshikiKind(PuzzleKind):
    """N x N Futoshiki (3 <= N <= 9): every digit 1..N once per row and column, every inequality between orthogonal
    neighbours kept, every given digit kept.

    Tokens lie on a (2N-1) x (2N-1) grid, row-major: cells at (even, even) positions hold 1 blank or 2..N+1 the
    digits 1..N; the gap between two cells (the positions between them in a row or a column) holds N+2 no clue,
    N+3 '<' (the first cell, left or top, is smaller) or N+4 '>' (the first is larger); the corners between four
    cells hold the filler N+5. 0 is padding and never used, so vocab_size is N+6 and seq_len (2N-1)^2. An answer
    is the same grid with every cell filled (gaps and corners copied).

    Text: the 2N-1 rows of the grid, cells as digits or '.' (or '0') for blanks, row gaps as '<', '>' or ' ',
    column gaps as '^' (the top cell is smaller), 'v' (the top cell is larger) or ' ', corners ' '; rows are lines
    (a short line ends in blanks and no clues) or, on one line, separated by '/' with '-' for no clue and '+' for a
    corner: `compact`'s form, one puzzle per line of a file. The 4x4 puzzle (its one solution is 3412/1324/4231/2143)

        3 . . .
          v
        . . . .

        . 2 . .
              ^
        . . .>.

    is '3-.-.-./-+v+-+-/.-.-.-./-+-+-+-/.-2-.-./-+-+-+^/.-.-.>.' (spaces for '-' and '+' are read too).
    """

    name = "futoshiki"

    def __init__(self, size: int = 5) -> None:
        if not 3 <= size <= 9:
            raise ValueError(f"Futoshiki size must be 3..9 (one digit per cell), got {size}")
        self.size = size

    @property
    def vocab_size(self) -> int:
        """PAD, blank, the N digits, no clue, '<', '>' and the corner filler."""
        return self.size + 6

    @property
    def seq_len(self) -> int:
        return self.side * self.side

    @property
    def side(self) -> int:
        """Side of the token grid, 2N - 1."""
        return 2 * self.size - 1

    def init_args(self) -> dict[str, Any]:
        return {"size": self.size}

    @classmethod
    def from_shape(cls, seq_len: int, vocab_size: int) -> FutoshikiKind:
        """The N x N Futoshiki of a model with (2N-1)^2 positions and N+6 tokens."""
        size = vocab_size - 6
        if not 3 <= size <= 9 or (2 * size - 1) ** 2 != seq_len:
            raise ValueError(f"a model of {seq_len} positions and {vocab_size} tokens is no Futoshiki (N x N takes "
                             "(2N-1)^2 positions and N+6 tokens); give the size")
        return cls(size)

    # Tokens and layout.

    @property
    def tokens(self) -> dict[str, int]:
        """The token ids by meaning."""
        n = self.size
        return {"blank": 1, "none": n + 2, "lt": n + 3, "gt": n + 4, "fill": n + 5}

    @cached_property
    def _layout(self) -> dict[str, np.ndarray]:
        """Positions of the cells and gaps in the flat token grid, each gap's first and second cell (indices of the
        N*N cells) and whether it is a row gap (the rest hold the corner filler)."""
        n, g = self.size, self.side
        r, c = np.divmod(np.arange(n * n), n)
        cells = 2 * r * g + 2 * c
        hr, hc = np.divmod(np.arange(n * (n - 1)), n - 1)
        vr, vc = np.divmod(np.arange((n - 1) * n), n)
        first = np.concatenate([hr * n + hc, vr * n + vc])
        second = np.concatenate([hr * n + hc + 1, (vr + 1) * n + vc])
        gaps = np.concatenate([2 * hr * g + 2 * hc + 1, (2 * vr + 1) * g + 2 * vc])
        return {"cells": cells, "gaps": gaps, "first": first, "second": second,
                "horizontal": np.arange(len(gaps)) < n * (n - 1)}

    def _tokens(self, digits: np.ndarray, relations: np.ndarray) -> np.ndarray:
        """Token grids [B, L] from cell digits [B, N*N] (0 blank) and gap relations [B, gaps] (0 none, 1 <, 2 >)."""
        t, lay = self.tokens, self._layout
        out = np.full((len(digits), self.seq_len), t["fill"], dtype=np.int64)
        out[:, lay["cells"]] = digits + 1
        out[:, lay["gaps"]] = relations + t["none"]
        return out

    def _cells(self, tokens: np.ndarray) -> np.ndarray:
        """Cell digits [..., N*N] (0 for blanks or anything that is no digit) of token grids [..., L]."""
        cells = np.asarray(tokens)[..., self._layout["cells"]].astype(np.int64) - 1
        return np.where((cells >= 1) & (cells <= self.size), cells, 0)

    def _relations(self, tokens: np.ndarray) -> np.ndarray:
        """Gap relations [..., gaps] (0 none, 1 first smaller, 2 first larger) of token grids [..., L]."""
        rel = np.asarray(tokens)[..., self._layout["gaps"]].astype(np.int64) - self.tokens["none"]
        return np.where((rel >= 0) & (rel <= 2), rel, 0)

    # Text.

    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """One puzzle: the 2N-1 lines of the grid, or the compact one-line form ('/' between rows); refused when its
        givens repeat a digit in a row or column or break an inequality between them."""
        tokens = self._read_grid(text, answer=False)
        digits, rel = self._cells(tokens), self._relations(tokens)
        if not self._consistent(digits[None], rel[None], partial=True)[0]:
            raise ValueError(f"the givens of {name} break the rules (a digit twice in a row or column, or two "
                             "givens against their inequality); check the puzzle")
        return [Puzzle(inputs=tokens, name=name)]

    def parse_answer(self, text: str, inputs: np.ndarray) -> np.ndarray:
        """A complete solution in the puzzle's text form, keeping the puzzle's givens (its gaps are the puzzle's)."""
        grid = self._cells(self._read_grid(text, answer=True))
        if (grid == 0).any():
            raise ValueError(f"the solution has a blank at cell {int(np.argmin(grid))}; give the complete solution")
        given = self._cells(inputs)
        if ((given > 0) & (given != grid)).any():
            raise ValueError(f"the solution changes the given at cell {int(np.argmax((given > 0) & (given != grid)))};"
                             " check it against the puzzle")
        out = np.array(inputs, dtype=np.int64)
        out[self._layout["cells"]] = grid + 1
        return out

    def _read_grid(self, text: str, answer: bool) -> np.ndarray:
        """Token grid [L] of a puzzle's (or an answer's) text: lines or '/'-separated rows."""
        n, g = self.size, self.side
        rows = text.strip("\n").split("/") if "/" in text else text.strip("\n").splitlines()
        if len(rows) != g:
            raise ValueError(f"a {n}x{n} Futoshiki has {g} rows (cell rows and the gap rows between them, '/' between "
                             f"rows on one line); got {len(rows)}")
        t = self.tokens
        out = np.full((g, g), t["fill"], dtype=np.int64)
        for i, row in enumerate(rows):
            row = row.rstrip("\r")
            if len(row) > g:
                raise ValueError(f"row {i + 1} has {len(row)} characters; a {n}x{n} Futoshiki row has {g}: {row!r}")
            for j, ch in enumerate(row):
                out[i, j] = self._token_of(ch, i, j, answer)
            out[i, len(row):] = [1 if i % 2 == 0 and j % 2 == 0 else t["none"] if (i + j) % 2 else t["fill"]
                                 for j in range(len(row), g)]  # a short row ends in blanks and no clues
        return out.reshape(-1)

    def _token_of(self, ch: str, i: int, j: int, answer: bool) -> int:
        """The token of character `ch` at row i, column j of the grid; errors say what belongs there."""
        t = self.tokens
        if i % 2 == 0 and j % 2 == 0:
            if ch in ".0" and not answer or ch.isdigit() and 1 <= int(ch) <= self.size:
                return 1 if ch in ".0" else int(ch) + 1
            want = f"a digit 1..{self.size}" + ("" if answer else " or '.'")
        elif i % 2 == 1 and j % 2 == 1:
            if ch in " +":
                return t["fill"]
            want = "' ' or '+' (a corner between four cells)"
        else:
            signs = "<>" if i % 2 == 0 else "^v"
            if ch in " -":
                return t["none"]
            if ch in signs:
                return t["lt"] if ch == signs[0] else t["gt"]
            want = f"{signs[0]!r}, {signs[1]!r} or ' ' (a {'row' if i % 2 == 0 else 'column'} gap)"
        raise ValueError(f"row {i + 1}, column {j + 1}: {ch!r} where {want} belongs")

    def _chars(self, tokens: np.ndarray, none: str, corner: str) -> list[str]:
        """The grid rows of tokens [L] as text, with `none` for gaps without a clue and `corner` for corners."""
        t, g = self.tokens, self.side
        grid = np.asarray(tokens).reshape(g, g)
        rows = []
        for i in range(g):
            chars = []
            for j in range(g):
                v = int(grid[i, j])
                if i % 2 == 0 and j % 2 == 0:
                    chars.append(str(v - 1) if 2 <= v <= self.size + 1 else ".")
                elif i % 2 == 1 and j % 2 == 1:
                    chars.append(corner)
                else:
                    signs = "<>" if i % 2 == 0 else "^v"
                    chars.append(signs[0] if v == t["lt"] else signs[1] if v == t["gt"] else none)
            rows.append("".join(chars))
        return rows

    def compact(self, tokens: np.ndarray) -> str:
        return "/".join(self._chars(tokens, "-", "+"))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        return "\n".join(row.rstrip() for row in self._chars(tokens, " ", " "))

    # Rules.

    def _consistent(self, digits: np.ndarray, relations: np.ndarray, partial: bool) -> np.ndarray:
        """Whether grids [B, N*N] (0 blank, allowed only when `partial`) repeat no digit in a row or column and keep
        every inequality [B, gaps] between two filled cells."""
        n = self.size
        grid = digits.reshape(-1, n, n)
        counts = [(grid[..., None] == np.arange(1, n + 1)).sum(axis=axis) for axis in (1, 2)]  # [B, N, N] each
        ok = np.all([(c <= 1).all(axis=(1, 2)) if partial else (c == 1).all(axis=(1, 2)) for c in counts], axis=0)
        a, b = digits[:, self._layout["first"]], digits[:, self._layout["second"]]
        filled = (a > 0) & (b > 0)
        broken = filled & (((relations == 1) & (a >= b)) | ((relations == 2) & (a <= b)))
        return ok & ~broken.any(axis=1) & (partial | (digits > 0).all(axis=1))

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """A Latin square keeping every inequality and every given of the puzzle, its gaps and corners copied from
        the puzzle (bool [B])."""
        inputs, predictions = np.atleast_2d(inputs), np.atleast_2d(predictions)
        given, grid = self._cells(inputs), self._cells(predictions)
        copied = np.delete(predictions == inputs, self._layout["cells"], axis=1).all(axis=1)
        kept = ((given == 0) | (given == grid)).all(axis=1) & copied
        return self._consistent(grid, self._relations(inputs), partial=False) & kept

    def _wrong(self, inputs: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cells [N*N] that repeat in their row or column or change a given, and gaps [gaps] whose inequality the
        filled cells beside them break."""
        n, lay = self.size, self._layout
        grid, given, rel = self._cells(tokens), self._cells(inputs), self._relations(inputs)
        square = grid.reshape(n, n)
        same = square[:, :, None] == np.arange(1, n + 1)
        repeats = (same.sum(axis=1, keepdims=True) > 1) | (same.sum(axis=0, keepdims=True) > 1)
        cells = ((repeats & same).any(axis=2).reshape(-1) & (grid > 0)) | ((given > 0) & (given != grid))
        a, b = grid[lay["first"]], grid[lay["second"]]
        gaps = (a > 0) & (b > 0) & (((rel == 1) & (a >= b)) | ((rel == 2) & (a <= b)))
        return cells, gaps

    # Drawing.

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """The board as `digit_frame` draws digits (givens black, filled digits blue, cells changed since
        `previous` yellow, cells breaking a rule red), wide gaps between the cells holding the inequalities as
        chevrons pointing at the smaller cell, black or, where the filled cells break them, red."""
        n, lay = self.size, self._layout
        grid, given = self._cells(tokens), self._cells(inputs)
        changed = None if previous is None else (grid != self._cells(previous)).reshape(n, n)
        wrong_cells, wrong_gaps = self._wrong(inputs, tokens)
        image = digit_frame(grid.reshape(n, n), (given > 0).reshape(n, n), changed, wrong_cells.reshape(n, n),
                            cell=FRAME_CELL, line=FRAME_GAP)
        layout = grid_layout(n, cell=FRAME_CELL, line=FRAME_GAP)
        picture = Image.fromarray(image)
        draw = ImageDraw.Draw(picture)
        s, cell = FRAME_GAP * 0.3, FRAME_CELL
        for k, rel in enumerate(self._relations(inputs)):
            if not rel:
                continue
            r, c = divmod(int(lay["first"][k]), n)
            d = -s if rel == 1 else s  # '<' and '^' point back, at the first cell
            if lay["horizontal"][k]:
                x, y = layout.lefts[c] + cell + FRAME_GAP / 2, layout.tops[r] + cell / 2
                points = [(x - d, y - s * 1.4), (x + d, y), (x - d, y + s * 1.4)]
            else:
                x, y = layout.lefts[c] + cell / 2, layout.tops[r] + cell + FRAME_GAP / 2
                points = [(x - s * 1.4, y - d), (x, y + d), (x + s * 1.4, y - d)]
            draw.line(points, fill=SIGN_WRONG if wrong_gaps[k] else BLACK, width=3, joint="curve")
        return np.array(picture)

    # Symmetries.

    @cached_property
    def _symmetries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per symmetry s = 2k + r (dihedral map k, digit reversal r): the gather [16, L] of positions, whether each
        output position's inequality flips [16, L], whether digits reverse [16], and the inverse symmetry [16]."""
        g, lay = self.side, self._layout
        first_of = np.full(g * g, -1)
        first_of[lay["gaps"]] = lay["cells"][lay["first"]]  # each gap position -> the position of its first cell
        gathers, flips = [], []
        for k in range(8):
            gather = dihedral(np.arange(g * g).reshape(g, g), k).reshape(-1)
            lands = np.argsort(gather)  # where each input position lands
            flip = np.zeros(g * g, bool)
            # a gap flips when its first cell does not land on the first cell of the gap it lands on
            flip[lands[lay["gaps"]]] = lands[first_of[lay["gaps"]]] != first_of[lands[lay["gaps"]]]
            gathers.append(gather)
            flips.append(flip)
        gather = np.repeat(np.stack(gathers), 2, axis=0)
        reverse = np.tile([False, True], 8)
        is_gap = np.zeros(g * g, bool)
        is_gap[lay["gaps"]] = True
        flip = np.repeat(np.stack(flips), 2, axis=0) ^ (reverse[:, None] & is_gap)
        inverse = np.array([2 * DIHEDRAL_INVERSE[s // 2] + s % 2 for s in range(SYMMETRIES)])
        return gather, flip, reverse, inverse

    def apply_symmetry(self, tokens: np.ndarray, symmetry: np.ndarray) -> np.ndarray:
        """Token grids [..., L] under symmetry ids [...] (0..15; 0 the identity): positions moved, inequalities
        re-oriented, digits reversed for odd ids. Vectorised over every leading axis."""
        gather, flip, reverse, _ = self._symmetries
        t, n = self.tokens, self.size
        tokens = np.asarray(tokens)
        symmetry = np.broadcast_to(np.asarray(symmetry), tokens.shape[:-1])
        moved = np.take_along_axis(tokens, gather[symmetry], axis=-1)
        flipped = flip[symmetry] & ((moved == t["lt"]) | (moved == t["gt"]))
        moved = np.where(flipped, t["lt"] + t["gt"] - moved, moved)
        digit = (moved >= 2) & (moved <= n + 1) & reverse[symmetry][..., None]
        return np.where(digit, n + 3 - moved, moved)

    def inverse_symmetry(self, symmetry: np.ndarray) -> np.ndarray:
        """The symmetry ids that undo `symmetry` (ids 0..15)."""
        return self._symmetries[3][np.asarray(symmetry)]

    def augment(
        self, inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row under its own random one of the 16 symmetries, the same for its input and its label."""
        symmetry = rng.integers(SYMMETRIES, size=inputs.shape[:-1])
        return self.apply_symmetry(inputs, symmetry), self.apply_symmetry(labels, symmetry)

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Copy 0 the identity, the others distinct random symmetries (cycling once all 15 are used)."""
        symmetry = np.concatenate([[0], np.resize(rng.permutation(SYMMETRIES - 1) + 1, copies - 1)]).astype(int)
        moved = self.apply_symmetry(np.broadcast_to(inputs, (copies, *inputs.shape)), symmetry[:, None])
        back = self.inverse_symmetry(symmetry)[:, None]

        def inverse(answers: np.ndarray) -> np.ndarray:
            return self.apply_symmetry(answers, back)

        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse

    # Solver and generator.

    @cached_property
    def _solver(self) -> _Solver:
        return _Solver(self.size)

    def count_solutions(self, inputs: np.ndarray, limit: int = 2) -> np.ndarray:
        """Solutions of each puzzle [B, L], counted up to `limit` (int [B]): 1 means a unique solution."""
        inputs = np.atleast_2d(inputs)
        digits, rel = self._cells(inputs), self._relations(inputs)
        first, second = self._layout["first"], self._layout["second"]
        counts = []
        for d, r in zip(digits, rel):
            pairs = _pairs(first, second, r)
            counts.append(len(self._solver.solve(d.tolist(), pairs, limit)))
        return np.array(counts, dtype=np.int64)

    def generate(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` puzzles with unique solutions and no redundant clue: a random Latin square (randomised
        backtracking), then clues that rule out a second solution the solver finds (a given where it differs, or an
        inequality it breaks) until none is left, then every clue that is not needed dropped, in random order."""
        n, lay = self.size, self._layout
        first, second = lay["first"], lay["second"]
        digits = np.zeros((count, n * n), dtype=np.int64)
        relations = np.zeros((count, len(first)), dtype=np.int64)
        squares = np.zeros((count, n * n), dtype=np.int64)
        for i in range(count):
            square = np.array(self._solver.solve([0] * (n * n), [], 1, rng)[0])
            truth = np.where(square[first] < square[second], 1, 2)
            given = np.zeros(n * n, bool)
            clue = np.zeros(len(first), bool)

            def solutions() -> list[list[int]]:
                """Up to two solutions of the square's chosen clues."""
                return self._solver.solve(np.where(given, square, 0).tolist(),
                                          _pairs(first, second, np.where(clue, truth, 0)), 2)

            while True:
                found = solutions()
                if len(found) == 1:
                    break
                other = np.array(found[0] if found[0] != square.tolist() else found[1])
                cells = np.flatnonzero(other != square)
                gaps = np.flatnonzero(np.where(other[first] < other[second], 1, 2) != truth)
                if gaps.size and (not cells.size or rng.random() >= GIVEN_SHARE):
                    clue[rng.choice(gaps)] = True
                else:
                    given[rng.choice(cells)] = True
            for k in rng.permutation(n * n + len(first)):
                mask = given if k < n * n else clue
                j = k if k < n * n else k - n * n
                if not mask[j]:
                    continue
                mask[j] = False
                mask[j] = len(solutions()) != 1
            digits[i], relations[i], squares[i] = np.where(given, square, 0), np.where(clue, truth, 0), square
        return self._tokens(digits, relations), self._tokens(squares, relations)


def _pairs(first: np.ndarray, second: np.ndarray, relations: np.ndarray) -> list[tuple[int, int]]:
    """(smaller cell, larger cell) of every inequality of one puzzle."""
    lt, gt = relations == 1, relations == 2
    return list(zip(first[lt].tolist(), second[lt].tolist())) + list(zip(second[gt].tolist(), first[gt].tolist()))


class _Solver:
    """Backtracking over candidate bitmasks with constraint propagation (naked and hidden singles in rows and
    columns, bounds along inequalities); counts solutions up to a limit."""

    def __init__(self, size: int) -> None:
        n = size
        self.n, self.full = n, (1 << n) - 1
        self.units = [[r * n + c for c in range(n)] for r in range(n)] + [[r * n + c for r in range(n)]
                                                                          for c in range(n)]
        self.peers = [[p for p in set(self.units[k // n]) | set(self.units[n + k % n]) if p != k]
                      for k in range(n * n)]
        masks = range(1 << n)
        self.count = [bin(m).count("1") for m in masks]
        self.below = [(1 << (m.bit_length() - 1)) - 1 if m else 0 for m in masks]  # digits under m's largest
        self.above = [self.full & ~((m & -m) * 2 - 1) if m else 0 for m in masks]  # digits over m's smallest

    def solve(self, digits: list[int], pairs: list[tuple[int, int]], limit: int,
              rng: np.random.Generator | None = None) -> list[list[int]]:
        """Up to `limit` solutions (digit lists) of the grid `digits` (0 blank) with `pairs` (a, b) meaning cell a <
        cell b; candidates are tried in a random order when `rng` is given, else ascending."""
        domains = [self.full if d == 0 else 1 << (d - 1) for d in digits]
        found: list[list[int]] = []
        if self._propagate(domains, pairs):
            self._search(domains, pairs, limit, rng, found)
        return found

    def _propagate(self, dom: list[int], pairs: list[tuple[int, int]]) -> bool:
        count, below, above, peers, units, full = self.count, self.below, self.above, self.peers, self.units, self.full
        done = [False] * len(dom)
        changed = True
        while changed:
            changed = False
            for a, b in pairs:
                da, db = dom[a], dom[b]
                na, nb = da & below[db], db & above[da]
                if na != da or nb != db:
                    if not na or not nb:
                        return False
                    dom[a], dom[b], changed = na, nb, True
            for k, m in enumerate(dom):
                if not done[k] and count[m] == 1:
                    done[k] = True
                    for p in peers[k]:
                        if dom[p] & m:
                            dom[p] &= ~m
                            if not dom[p]:
                                return False
                            changed = True
            for unit in units:
                once = twice = 0
                for k in unit:
                    twice |= once & dom[k]
                    once |= dom[k]
                if once != full:
                    return False
                hidden = once & ~twice
                if hidden:
                    for k in unit:
                        m = dom[k] & hidden
                        if m and dom[k] != m:
                            if count[m] > 1:
                                return False
                            dom[k], changed = m, True
        return True

    def _search(self, dom: list[int], pairs: list[tuple[int, int]], limit: int, rng: np.random.Generator | None,
                found: list[list[int]]) -> None:
        count = self.count
        best, best_count = -1, self.n + 1
        for k, m in enumerate(dom):
            if 1 < count[m] < best_count:
                best, best_count = k, count[m]
        if best < 0:
            found.append([m.bit_length() for m in dom])
            return
        m = dom[best]
        bits = [1 << i for i in range(self.n) if m >> i & 1]
        if rng is not None:
            bits = [bits[i] for i in rng.permutation(len(bits))]
        for bit in bits:
            trial = dom.copy()
            trial[best] = bit
            if self._propagate(trial, pairs):
                self._search(trial, pairs, limit, rng, found)
                if len(found) >= limit:
                    return
