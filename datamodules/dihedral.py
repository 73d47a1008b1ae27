"""The 8 dihedral transforms of a grid (HRM's order), shared by the maze and ARC augmentations.

k: 0 identity, 1 rotate 90 degrees counter-clockwise, 2 rotate 180, 3 rotate 270, 4 flip left-right, 5 flip up-down,
6 transpose, 7 anti-transpose. Transforms 1, 3, 6 and 7 swap the height and width of a rectangular grid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DIHEDRAL_INVERSE", "SWAPS_AXES", "dihedral", "inverse_dihedral"]

DIHEDRAL_INVERSE: tuple[int, ...] = (0, 3, 2, 1, 4, 5, 6, 7)  # dihedral(., DIHEDRAL_INVERSE[k]) undoes dihedral(., k)
SWAPS_AXES: tuple[bool, ...] = (False, True, False, True, False, False, True, True)  # k turns [H, W] into [W, H]


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Apply dihedral transform k to the last two axes of [..., H, W] (a view where numpy allows)."""
    arr = np.asarray(grid)
    if arr.ndim < 2:
        raise ValueError(f"dihedral transforms need [..., H, W] grids, got shape {tuple(arr.shape)}")
    if k in (1, 2, 3):
        return np.rot90(arr, k, axes=(-2, -1))
    if k == 4:
        return np.flip(arr, -1)
    if k == 5:
        return np.flip(arr, -2)
    if k == 6:
        return np.swapaxes(arr, -1, -2)
    if k == 7:
        return np.flip(np.rot90(arr, 1, axes=(-2, -1)), -1)
    if k == 0:
        return arr
    raise ValueError(f"dihedral transform index must be 0..7, got {k}")


def inverse_dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Undo `dihedral(., k)`: ``inverse_dihedral(dihedral(g, k), k) == g``."""
    if k not in range(8):
        raise ValueError(f"dihedral transform index must be 0..7, got {k}")
    return dihedral(grid, DIHEDRAL_INVERSE[k])
