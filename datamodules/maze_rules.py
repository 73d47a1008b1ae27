"""Maze rules in pure numpy: parsing, batched BFS, a shortest-path checker, a generator and the dihedral transforms.

A maze is a square grid of cell codes that are also the model's tokens (HRM's encoding of the characters ``# SGo``):
1 wall ``#``, 2 open `` ``, 3 start ``S``, 4 goal ``G``, 5 path ``o`` (0 is PAD and never part of a maze). Moves go
between 4-neighbouring non-wall cells; the grid edge is the boundary. The answer to a maze is the maze with the cells
of one shortest S -> G path (S and G excluded) marked ``o``.

Shapes: single-grid functions take ``[N, N]`` or a flat row-major ``[N * N]``; batch functions take ``[B, N * N]``
or ``[B, N, N]`` (the number of dimensions decides, so a batch is never mistaken for one grid). BFS runs on the whole
batch at once, one array step per BFS layer, so nothing loops over the batch. No torch dependency.
"""

from __future__ import annotations

import math

import numpy as np

from datamodules.chunks import map_chunks
from datamodules.dihedral import DIHEDRAL_INVERSE, dihedral, inverse_dihedral

__all__ = [
    "CHARS",
    "DIHEDRAL_INVERSE",
    "GOAL",
    "OPEN",
    "PAD",
    "PATH",
    "START",
    "WALL",
    "bfs_distances",
    "check_solvable",
    "dihedral",
    "dihedral_gather",
    "format_maze",
    "generate",
    "inverse_dihedral",
    "parse_maze",
    "shortest_path_length",
    "shortest_path_lengths",
    "solve",
    "solve_batch",
    "valid_paths",
]

PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
CHARS = "# SGo"  # CHARS[code - 1] is the character of a code
_LUT = np.full(256, 255, dtype=np.uint8)
_LUT[np.frombuffer(CHARS.encode(), dtype=np.uint8)] = np.arange(1, 6, dtype=np.uint8)
_CHUNK = 32  # mazes per generation chunk; fixed so results do not depend on the number of workers
_TRIES = 8  # starts drawn per wall layout


# ----------------------------------------------------------------------------------------------------------------
# Parsing and printing


def _where(index: int, side: int) -> str:
    """Describe a flat cell index as 'row r, column c' (0-based)."""
    return f"row {index // side}, column {index % side}"


def parse_maze(text: str, side: int | None = None) -> np.ndarray:
    """Parse a maze string into cell codes int64 [N, N].

    The text is either N * N characters in row-major order (the CSV form) or N lines of N characters. Spaces are
    open cells, so no whitespace is stripped except line breaks. 'o' path cells are allowed (answers).

    Args:
        text: The maze, characters ``# SGo``.
        side: Expected side N; None infers it from the length (which must then be a square).

    Raises:
        ValueError: On an unknown character, a length that is not a square (or not side * side), ragged lines, or
            not exactly one S and one G; the message gives the position.
    """
    text = str(text)
    if "\n" in text:
        lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
        n_rows = len(lines)
        if side is not None and n_rows != side:
            raise ValueError(f"maze has {n_rows} lines; a {side}x{side} maze needs {side} lines of {side} characters")
        for r, line in enumerate(lines):
            if len(line) != n_rows:
                raise ValueError(
                    f"maze line {r} has {len(line)} characters but the maze has {n_rows} lines; a maze is a square, "
                    "N lines of N characters"
                )
        chars = "".join(lines)
    else:
        chars = text
    n = len(chars)
    root = math.isqrt(n)
    if side is None:
        if n == 0 or root * root != n:
            raise ValueError(f"maze has {n} characters, which is not a square grid (N * N characters for N x N)")
        side = root
    elif n != side * side:
        raise ValueError(f"maze has {n} characters; a {side}x{side} maze needs {side * side}")
    codes = _LUT[np.frombuffer(chars.encode("latin-1", "replace"), dtype=np.uint8)].astype(np.int64)
    bad = np.flatnonzero(codes == 255)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"maze has invalid character {chars[i]!r} at {_where(i, side)}; use the characters '# SGo'")
    for code, name in ((START, "start S"), (GOAL, "goal G")):
        at = np.flatnonzero(codes == code)
        if at.size != 1:
            where = "; ".join(_where(int(i), side) for i in at[:4])
            suffix = f" (at {where})" if where else ""
            letter = name[-1]
            fix = f"mark one cell {letter}" if at.size == 0 else f"keep one {letter} and make the others ' '"
            raise ValueError(f"maze must have exactly one {name}, found {at.size}{suffix}; {fix}")
    return codes.reshape(side, side)


def check_solvable(grid: np.ndarray) -> None:
    """Refuse a maze whose goal G cannot be reached from its start S through open cells: it has no answer.

    Raises:
        ValueError: naming where S and G are.
    """
    maze = _single(grid)
    if shortest_path_length(maze) < 0:
        side = maze.shape[0]
        start, goal = int(np.argmax(maze == START)), int(np.argmax(maze == GOAL))
        raise ValueError(
            f"G ({_where(goal, side)}) cannot be reached from S ({_where(start, side)}): walls '#' cut every path, "
            "so the maze has no answer; open a path of ' ' cells between them"
        )


def _single(grid: np.ndarray) -> np.ndarray:
    """Return one maze ([N, N] or flat [N * N]) as int64 [N, N]."""
    arr = np.asarray(grid)
    if arr.ndim == 1:
        side = math.isqrt(arr.shape[0])
        if side * side != arr.shape[0] or side == 0:
            raise ValueError(f"a flat maze of {arr.shape[0]} cells is not a square grid")
        arr = arr.reshape(side, side)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"expected one maze of shape [N, N] or [N * N], got {tuple(arr.shape)}")
    return arr.astype(np.int64, copy=False)


def format_maze(grid: np.ndarray, lines: bool = False) -> str:
    """Render one maze ([N, N] or flat [N * N] codes) as characters ``# SGo``.

    Args:
        grid: Cell codes 1..5.
        lines: Join the rows with newlines (for printing) instead of the flat CSV form.
    """
    cells = _single(grid)
    side = cells.shape[0]
    flat = cells.reshape(-1)
    bad = np.flatnonzero((flat < WALL) | (flat > PATH))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"code {flat[i]} at {_where(i, side)} is not a maze cell (1 wall .. 5 path)")
    text = np.frombuffer(CHARS.encode(), dtype=np.uint8)[flat - 1].tobytes().decode()
    if lines:
        return "\n".join(text[r * side : (r + 1) * side] for r in range(side))
    return text


# ----------------------------------------------------------------------------------------------------------------
# Batched BFS


def _batch(grids: np.ndarray, name: str = "grids") -> np.ndarray:
    """Return a batch ([B, N * N] or [B, N, N]) as int64 [B, N, N]."""
    arr = np.asarray(grids)
    if arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1] or side == 0:
            raise ValueError(f"{name}: rows of {arr.shape[1]} cells are not square mazes")
        arr = arr.reshape(arr.shape[0], side, side)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"{name}: expected a batch [B, N * N] or [B, N, N], got shape {tuple(arr.shape)}")
    return arr.astype(np.int64, copy=False)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """The 4-neighbourhood of a boolean mask [B, N, N] (the cells themselves excluded)."""
    out = np.zeros_like(mask)
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def _neighbour_count(mask: np.ndarray) -> np.ndarray:
    """Number of 4-neighbours of each cell that lie in the boolean mask [B, N, N]."""
    m = mask.astype(np.int8)
    out = np.zeros_like(m)
    out[:, 1:] += m[:, :-1]
    out[:, :-1] += m[:, 1:]
    out[:, :, 1:] += m[:, :, :-1]
    out[:, :, :-1] += m[:, :, 1:]
    return out


def bfs_distances(passable: np.ndarray, sources: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """BFS move counts from the source cells over 4-neighbours, for a whole batch at once.

    One array step per BFS layer (not per maze): the loop runs at most as many times as the longest distance.

    Args:
        passable: bool [B, N, N], the cells that can be entered.
        sources: bool [B, N, N], distance 0 (usually one S per maze).
        targets: bool [B, N, N] or None; when given, the search stops once every maze has reached a target or
            run out of cells, so cells farther than a maze's target distance may stay -1.

    Returns:
        int32 [B, N, N]: moves from the nearest source, -1 where not reached.
    """
    dist = np.full(passable.shape, -1, dtype=np.int32)
    dist[sources] = 0
    frontier = sources.copy()
    unvisited = passable & ~sources
    step = 0
    while frontier.any():
        if targets is not None:
            done = (targets & (dist >= 0)).any(axis=(1, 2)) | ~frontier.any(axis=(1, 2))
            if done.all():
                break
        step += 1
        frontier = _dilate(frontier) & unvisited
        unvisited &= ~frontier
        dist[frontier] = step
    return dist


def _endpoints(grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices [B] of S and G; ValueError naming the maze without exactly one of each."""
    flat = grids.reshape(grids.shape[0], -1)
    for code, name in ((START, "start S"), (GOAL, "goal G")):
        counts = (flat == code).sum(axis=1)
        if (counts != 1).any():
            b = int(np.argmax(counts != 1))
            raise ValueError(f"maze {b} must have exactly one {name}, found {int(counts[b])}")
    return np.argmax(flat == START, axis=1), np.argmax(flat == GOAL, axis=1)


def _distances_to_goal(grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(BFS distance field from S, S -> G moves [B], -1 when unreachable) of a batch [B, N, N]."""
    _endpoints(grids)
    dist = bfs_distances(grids != WALL, grids == START, grids == GOAL)
    return dist, dist[grids == GOAL]


def shortest_path_lengths(grids: np.ndarray) -> np.ndarray:
    """Return int [B]: BFS moves from S to G of each maze of a batch ([B, N * N] or [B, N, N]); -1 if unreachable."""
    return _distances_to_goal(_batch(grids))[1].astype(np.int64)


def shortest_path_length(grid: np.ndarray) -> int:
    """Return the BFS moves from S to G of one maze ([N, N] or [N * N]); -1 when G cannot be reached."""
    return int(shortest_path_lengths(_single(grid)[None])[0])


def _trace(grids: np.ndarray, dist: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """Mark one shortest path (codes PATH) in mazes [B, N, N] with S-distance fields; all G must be reachable.

    Walks back from G, each step to the first neighbour (up, down, left, right) one move closer to S; the walk is
    one array step per move for the whole batch.
    """
    b, side, _ = grids.shape
    out = np.where(grids == PATH, OPEN, grids)
    padded = np.full((b, side + 2, side + 2), -1, dtype=np.int32)
    padded[:, 1:-1, 1:-1] = dist
    rows = np.arange(b)
    goal = np.argmax(grids.reshape(b, -1) == GOAL, axis=1)
    r, c = goal // side + 1, goal % side + 1
    offsets = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])
    for step in range(int(moves.max(initial=0)) - 1, 0, -1):
        active = moves > step
        nr, nc = r[:, None] + offsets[:, 0], c[:, None] + offsets[:, 1]  # [B, 4]
        choice = np.argmax(padded[rows[:, None], nr, nc] == step, axis=1)
        r = np.where(active, nr[rows, choice], r)
        c = np.where(active, nc[rows, choice], c)
        out[rows[active], r[active] - 1, c[active] - 1] = PATH
    return out


def solve_batch(grids: np.ndarray) -> np.ndarray:
    """Mark one shortest S -> G path with 'o' (code 5) in every maze of a batch; same shape and dtype as the input.

    Existing path cells are treated as open and replaced. Ties between shortest paths are broken deterministically.

    Raises:
        ValueError: When a maze lacks exactly one S and one G or G cannot be reached from S.
    """
    arr = np.asarray(grids)
    mazes = _batch(arr)
    dist, moves = _distances_to_goal(np.where(mazes == PATH, OPEN, mazes))
    if (moves < 0).any():
        b = int(np.argmax(moves < 0))
        side = mazes.shape[1]
        s, g = (int(np.argmax(mazes[b].reshape(-1) == code)) for code in (START, GOAL))
        raise ValueError(
            f"maze {b} has no path from S at {_where(s, side)} to G at {_where(g, side)}: walls separate them"
        )
    return _trace(mazes, dist, moves).astype(arr.dtype, copy=False).reshape(arr.shape)


def solve(grid: np.ndarray) -> np.ndarray:
    """Return one maze ([N, N] or [N * N]) with one shortest S -> G path marked 'o', in the input's shape.

    Raises:
        ValueError: When the maze lacks exactly one S and one G, or no path joins them.
    """
    arr = np.asarray(grid)
    try:
        return solve_batch(_single(arr)[None])[0].astype(arr.dtype, copy=False).reshape(arr.shape)
    except ValueError as err:
        raise ValueError(str(err).replace("maze 0 ", "maze ", 1)) from None


def valid_paths(inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Return bool [B]: whether each prediction marks a shortest S -> G path of its maze.

    A prediction is valid when (1) walls, S and G are where the input has them and every other cell is open or
    path, and (2) the path cells plus S and G form a shortest S -> G path. (2) is checked with array ops only:
    S and G have exactly one neighbour in that set, every path cell exactly two, and the set has BFS(S, G) + 1
    cells. A set with these degrees is one S -> G path plus disjoint cycles; that path has at least BFS + 1 cells,
    so the count leaves no room for cycles and forces the path to be a shortest one. Conversely a shortest path
    has no shortcuts between its cells, so it passes. The BFS distance itself is computed for the whole batch at
    once (one array step per BFS layer, no Python loop over the batch). A maze whose G cannot be reached has no
    valid prediction (False).

    Args:
        inputs: Mazes [B, N * N] or [B, N, N] (codes 1..4; path cells are treated as open).
        predictions: Predicted grids of the same shape (any integers; PAD or out-of-range codes are invalid).
    """
    x = _batch(inputs, "inputs")
    y = _batch(predictions, "predictions")
    if x.shape != y.shape:
        raise ValueError(f"inputs {x.shape} and predictions {y.shape} must have the same shape")
    if x.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    x = np.where(x == PATH, OPEN, x)
    _, moves = _distances_to_goal(x)
    fixed = (x == WALL) | (x == START) | (x == GOAL)
    cells_ok = np.where(fixed, y == x, (y == OPEN) | (y == PATH)).all(axis=(1, 2))
    route = (y == PATH) | (y == START) | (y == GOAL)
    degree = _neighbour_count(route)
    ends = (y == START) | (y == GOAL)
    degree_ok = np.where(ends, degree == 1, np.where(y == PATH, degree == 2, True)).all(axis=(1, 2))
    count_ok = route.sum(axis=(1, 2)) == moves + 1
    return cells_ok & degree_ok & count_ok & (moves >= 0)


# ----------------------------------------------------------------------------------------------------------------
# Generation


def _wall_range(side: int, wall_fraction: tuple[float, float]) -> tuple[int, int]:
    """Inclusive (min, max) wall counts of an N x N maze for a fraction range; at least two free cells remain."""
    lo, hi = wall_fraction
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"wall_fraction must be (lo, hi) with 0 <= lo <= hi < 1, got {wall_fraction}")
    cells = side * side
    return min(int(lo * cells), cells - 2), min(int(hi * cells), cells - 2)


def _generate_chunk(args: tuple[int, int, int, tuple[float, float], int, tuple[int, ...]]) -> np.ndarray:
    """Generate one chunk of mazes (questions, uint8 [count, N * N]) from its own seed (a worker task)."""
    side, count, min_path, wall_fraction, max_layouts, entropy = args
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    cells = side * side
    w_lo, w_hi = _wall_range(side, wall_fraction)
    found: list[np.ndarray] = []
    layouts = 0
    batch = 4 * _CHUNK  # layouts per round; independent of count, so a shorter chunk is a prefix of a longer one
    while len(found) < count:
        if layouts >= max_layouts:
            raise ValueError(
                f"found only {len(found)} of {count} {side}x{side} mazes with a shortest path >= {min_path} moves "
                f"after {layouts} wall layouts; lower min_path or change wall_fraction"
            )
        n = min(batch, max_layouts - layouts)
        layouts += n
        order = np.argsort(rng.random((n, cells)), axis=1)  # a uniform shuffle of the cells per layout
        walls = rng.integers(w_lo, w_hi + 1, size=n)
        grid = np.full((n, cells), OPEN, dtype=np.int64)
        is_wall = np.arange(cells)[None, :] < walls[:, None]  # the first `walls` cells of the shuffled order
        np.put_along_axis(grid, order, np.where(is_wall, WALL, OPEN), axis=1)
        free = cells - walls  # [n]; the free cells are order[walls:] of each layout
        pick_s = rng.integers(0, free[:, None], size=(n, _TRIES))
        s = np.take_along_axis(order, walls[:, None] + pick_s, axis=1).reshape(-1)  # [n * TRIES]
        tries = np.repeat(grid, _TRIES, axis=0)  # [n * TRIES, cells]
        rows = np.arange(len(tries))
        sources = np.zeros(tries.shape, dtype=bool)
        sources[rows, s] = True
        passable = (tries != WALL).reshape(-1, side, side)
        far = bfs_distances(passable, sources.reshape(passable.shape)).reshape(len(tries), cells) >= min_path
        ok = far.any(axis=1).reshape(n, _TRIES)
        keep = np.flatnonzero(ok.any(axis=1))
        chosen = keep * _TRIES + np.argmax(ok[keep], axis=1)  # at most one maze per layout: the first S that works
        keys = np.where(far[chosen], rng.random((len(chosen), cells)), -1.0)
        g = np.argmax(keys, axis=1)  # uniform among the cells at >= min_path moves from S
        mazes = tries[chosen]
        mazes[np.arange(len(chosen)), s[chosen]] = START
        mazes[np.arange(len(chosen)), g] = GOAL
        found.extend(mazes)
    return np.stack(found[:count]).astype(np.uint8)


def generate(
    side: int,
    count: int,
    min_path: int | None = None,
    wall_fraction: tuple[float, float] = (0.3, 0.5),
    seed: int = 0,
    workers: int | None = None,
    max_layouts: int = 1_000_000,
    _entropy: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate random mazes with long shortest paths; returns (questions, answers) uint8 [count, N * N] codes.

    The procedure of Lehnert et al. 2024 (the generator Maze-Hard cites): shuffle the N * N cells, draw a wall count
    uniformly from the wall_fraction range and make the first cells of the shuffled list walls (no border walls;
    the grid edge is the boundary); draw the start uniformly among the free cells, up to 8 per layout, and the goal
    uniformly among the free cells whose BFS distance from the start is at least `min_path` moves; keep the first
    start that has such a goal (at most one maze per layout). Drawing the goal from one BFS of the start is what
    redrawing a uniform goal until it passes the filter gives, only far cheaper: drawing start-goal pairs and
    rejecting them is hopeless at Maze-Hard's filter (about 3e-5 of uniform 30x30 pairs have >= 110 moves,
    against about 1e-3 of starts with some goal that far). The answer marks one shortest path (`solve_batch`).
    Work is split into chunks of 32 mazes, each seeded from
    ``(seed, chunk_index)``, so the result depends only on the arguments, never on `workers`, and
    ``generate(n)`` is a prefix of ``generate(m)`` for ``m > n``.

    Args:
        side: Side N of the square grid (>= 2).
        count: Number of mazes.
        min_path: Minimum shortest-path length in moves; None uses N (Lehnert et al.). Maze-Hard is 30x30 with 110.
        wall_fraction: Range (lo, hi) of the fraction of cells that are walls.
        seed: Random seed.
        workers: Processes to use (None = all CPU cores; 1 = in this process).
        max_layouts: Wall layouts tried per chunk before giving up with ValueError.
    """
    if side < 2:
        raise ValueError(f"side must be >= 2, got {side}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    min_path = side if min_path is None else min_path
    if not 1 <= min_path <= side * side - 1:
        raise ValueError(f"min_path must be between 1 and {side * side - 1} moves for a {side}x{side} maze")
    _wall_range(side, wall_fraction)
    entropy = (seed,) if _entropy is None else tuple(_entropy)
    tasks = [
        (side, min(_CHUNK, count - start), min_path, tuple(wall_fraction), max_layouts, (*entropy, start // _CHUNK))
        for start in range(0, count, _CHUNK)
    ]
    results = map_chunks(_generate_chunk, tasks, workers)
    if not results:
        empty = np.zeros((0, side * side), dtype=np.uint8)
        return empty, empty.copy()
    questions = np.concatenate(results)
    return questions, solve_batch(questions)


# ----------------------------------------------------------------------------------------------------------------
# Dihedral transforms


def dihedral_gather(side: int) -> np.ndarray:
    """Return int64 [8, N * N]: transform k of a flat grid ``g`` is ``g[..., gather[k]]``."""
    cells = np.arange(side * side).reshape(side, side)
    return np.stack([dihedral(cells, k).reshape(-1) for k in range(8)])
