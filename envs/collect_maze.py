"""Maze generation for Collect (Oh, Singh & Lee 2017), following the paper's official code.

A maze is a boolean wall grid ``(size, size)`` with a wall border. Its inside is carved by a
randomized depth-first search that never turns twice in a row (long corridors, few
zigzags); then ``holes`` wall cells that each separate two open cells in a straight line
are removed, which opens loops.
"""

from __future__ import annotations

import numpy as np

# Directions in the order the options use: up, right, down, left (row, column deltas).
DY = (-1, 0, 1, 0)
DX = (0, 1, 0, -1)


def carve_maze(size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(size, size)`` bool wall grid: border walls, inner cells carved by a DFS.

    The DFS starts at a random inner cell. It may only open a wall cell that touches
    exactly one open cell (so corridors stay one cell wide), and after a turn it must go
    straight once before it may turn again.
    """
    inner = size - 2
    if inner < 2:
        raise ValueError(f"a maze needs size >= 4, got {size}")
    open_ = np.zeros((inner, inner), dtype=bool)
    sy, sx = int(rng.integers(inner)), int(rng.integers(inner))
    open_[sy, sx] = True
    stack: list[tuple[int, int, int]] = [(sy, sx, 0)]
    while stack:
        cy, cx, cd = stack[-1]
        # Just turned (direction differs from the previous move): only straight on is allowed.
        turned = len(stack) > 2 and cd != stack[-2][2]
        candidates = []
        for d in [cd] if turned else range(4):
            ny, nx = cy + DY[d], cx + DX[d]
            if not (0 <= ny < inner and 0 <= nx < inner) or open_[ny, nx]:
                continue
            touching = sum(
                1
                for e in range(4)
                if 0 <= ny + DY[e] < inner
                and 0 <= nx + DX[e] < inner
                and open_[ny + DY[e], nx + DX[e]]
            )
            if touching == 1:
                candidates.append(d)
        if candidates:
            d = candidates[int(rng.integers(len(candidates)))]
            ny, nx = cy + DY[d], cx + DX[d]
            open_[ny, nx] = True
            stack.append((ny, nx, d))
        else:
            stack.pop()
    walls = np.ones((size, size), dtype=bool)
    walls[1:-1, 1:-1] = ~open_
    return walls


def removable_walls(walls: np.ndarray) -> list[tuple[int, int]]:
    """Inner wall cells between two open cells in a line (open left/right with walls up/down, or
    the transpose): removing one joins two corridors without opening a room."""
    size = walls.shape[0]
    out = []
    for y in range(1, size - 1):
        for x in range(1, size - 1):
            if not walls[y, x]:
                continue
            up, down, left, right = (
                walls[y - 1, x],
                walls[y + 1, x],
                walls[y, x - 1],
                walls[y, x + 1],
            )
            if (up and down and not left and not right) or (left and right and not up and not down):
                out.append((y, x))
    return out


def generate_maze(size: int, holes: int, rng: np.random.Generator) -> np.ndarray:
    """A carved maze with up to ``holes`` removable walls removed (fewer if none is left)."""
    walls = carve_maze(size, rng)
    for _ in range(holes):
        candidates = removable_walls(walls)
        if not candidates:
            break
        y, x = candidates[int(rng.integers(len(candidates)))]
        walls[y, x] = False
    return walls


def open_neighbours(walls: np.ndarray, y: int, x: int) -> int:
    """How many of the 4 neighbours of ``(y, x)`` are not walls."""
    return sum(not walls[y + DY[d], x + DX[d]] for d in range(4))
