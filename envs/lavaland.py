"""Lavaland as a Gymnasium env (``rlkit/Lavaland-v0``) and as a tabular MDP for exact planning.

Dynamics: 4-direction moves (0 up, 1 right, 2 down, 3 left); a move off the grid stays put;
the target is absorbing (every action stays there). An episode lasts exactly ``horizon``
steps (truncation, never termination), and each step earns ``w^T phi(cell entered)``, so a
policy's return is ``w^T`` (its feature counts), and the terrain part of the counts sums to
the horizon. The default horizon is ``3 * size``, enough for a detour around any lava patch.

Maps, terrain and the latent observations live in :mod:`envs.lavaland_maps`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from envs.lavaland_maps import (
    DEFAULT_SIZE,
    LAVA,
    N_FEATURES,
    N_TERRAIN,
    TERRAIN_NAMES,
    TRUE_WEIGHTS,
    LatentTerrain,
    LavalandMap,
    add_lava,
    generate_map,
    onehot_features,
)

MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
N_ACTIONS = len(MOVES)


def default_horizon(size: int) -> int:
    """Episode length for a ``size x size`` map: ``3 * size``."""
    return 3 * size


def grid_next_state(lmap: LavalandMap) -> np.ndarray:
    """Deterministic successor of every (cell, action), shape ``(H * W, N_ACTIONS)``, int64.

    Cells are indexed row-major; moves off the grid stay put and the target is absorbing.
    """
    h, w = lmap.shape
    rows, cols = np.divmod(np.arange(h * w), w)
    nr = np.clip(rows[:, None] + MOVES[None, :, 0], 0, h - 1)
    nc = np.clip(cols[:, None] + MOVES[None, :, 1], 0, w - 1)
    nxt = nr * w + nc
    nxt[lmap.cell_index(lmap.target)] = lmap.cell_index(lmap.target)
    return nxt.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class GridMDP:
    """A deterministic finite-horizon MDP over grid cells, for exact planning.

    Attributes:
        next_state: successor state per (state, action), shape ``(S, A)``, int64.
        features: features of each state, earned on entering it, shape ``(S, d)``.
        start: the start state's index.
        horizon: number of steps ``T``; a policy's feature counts are the sum of the features
            of the ``T`` states it enters.
        shape: ``(H, W)`` of the grid (``S == H * W``), for drawing paths.
    """

    next_state: np.ndarray
    features: np.ndarray
    start: int
    horizon: int
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        s = self.next_state.shape[0]
        if self.features.ndim != 2 or self.features.shape[0] != s:
            raise ValueError(f"features must have shape ({s}, d), got {self.features.shape}")
        if self.shape[0] * self.shape[1] != s:
            raise ValueError(f"shape {self.shape} does not hold {s} states")
        if not 0 <= self.start < s or self.horizon < 1:
            raise ValueError("need 0 <= start < S and horizon >= 1")

    def with_features(self, features: np.ndarray) -> GridMDP:
        """The same dynamics seen through other per-state features, shape ``(S, d')``."""
        return dataclasses.replace(self, features=np.asarray(features, dtype=np.float64))


def tabular_mdp(
    lmap: LavalandMap, features: np.ndarray | None = None, horizon: int | None = None
) -> GridMDP:
    """The tabular view of a map: ``features`` default to the true ``[one-hot terrain, 1]``."""
    feats = onehot_features(lmap.terrain) if features is None else np.asarray(features, float)
    return GridMDP(
        next_state=grid_next_state(lmap),
        features=feats,
        start=lmap.cell_index(lmap.start),
        horizon=default_horizon(lmap.shape[0]) if horizon is None else int(horizon),
        shape=lmap.shape,
    )


class LavalandEnv(gym.Env):
    """Lavaland as a Gymnasium env.

    Observation: float32 ``(H, W, 1 + C)``; channel 0 marks the agent's cell, the other ``C``
    channels show the terrain: its one-hot (``observation="onehot"``, ``C = 4``) or a noisy
    latent vector per cell (``observation="latent"``, ``C = latent.dim``). Reward: the true
    reward ``reward_weights^T phi(cell entered)`` with ``phi = [one-hot terrain, 1]``; ``info``
    holds those features (``"features"``), the terrain name and whether it is lava.

    Each reset draws a fresh map from the env's seeded generator (with a lava patch when
    ``lava=True``) unless a fixed ``lavaland_map`` is given.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        lava: bool = True,
        horizon: int | None = None,
        reward_weights: np.ndarray | None = None,
        observation: Literal["onehot", "latent"] = "onehot",
        latent: LatentTerrain | None = None,
        lavaland_map: LavalandMap | None = None,
        render_mode: str | None = None,
    ) -> None:
        if observation not in ("onehot", "latent"):
            raise ValueError(f"observation must be 'onehot' or 'latent', got {observation!r}")
        self.fixed_map = lavaland_map
        self.size = lavaland_map.shape[0] if lavaland_map is not None else size
        h, w = lavaland_map.shape if lavaland_map is not None else (size, size)
        self.lava = lava
        self.horizon = default_horizon(self.size) if horizon is None else int(horizon)
        weights = TRUE_WEIGHTS if reward_weights is None else np.asarray(reward_weights, float)
        if weights.shape != (N_FEATURES,):
            raise ValueError(f"reward_weights must have shape ({N_FEATURES},)")
        self.reward_weights = weights
        self.observation_kind = observation
        self.latent = latent or LatentTerrain()
        if observation == "onehot":
            self.observation_space = gym.spaces.Box(0.0, 1.0, (h, w, 1 + N_TERRAIN), np.float32)
        else:
            # Gaussian observations are unbounded.
            shape = (h, w, 1 + self.latent.dim)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self.render_mode = render_mode
        self.map: LavalandMap | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start at the map's start cell on the fixed map or a newly drawn one; returns the
        observation ``(H, W, 1 + C)`` and the start cell's ``"features"``. ``options`` is
        ignored."""
        super().reset(seed=seed)
        if self.fixed_map is not None:
            self.map = self.fixed_map
        else:
            self.map = generate_map(self.np_random, self.size)
            if self.lava:
                self.map = add_lava(self.map, self.np_random)
        if self.observation_kind == "onehot":
            self._terrain_obs = np.eye(N_TERRAIN, dtype=np.float32)[self.map.terrain]
        else:
            self._terrain_obs = self.latent.observe(self.map.terrain, self.np_random)
        self._features = onehot_features(self.map.terrain)
        self._next = grid_next_state(self.map)
        self.state = self.map.cell_index(self.map.start)
        self.t = 0
        return self._obs(), {"features": self._features[self.state].copy()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move in direction ``action``; never terminates, truncates after ``horizon`` steps.
        Raises RuntimeError before the first reset, ValueError for an action outside 0..3."""
        if self.map is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in 0..{N_ACTIONS - 1}, got {action!r}")
        self.state = int(self._next[self.state, int(action)])
        self.t += 1
        feats = self._features[self.state]
        terrain = int(self.map.terrain.reshape(-1)[self.state])
        info = {
            "features": feats.copy(),
            "terrain": TERRAIN_NAMES[terrain],
            "lava": terrain == LAVA,
        }
        return self._obs(), float(self.reward_weights @ feats), False, self.t >= self.horizon, info

    def _obs(self) -> np.ndarray:
        h, w = self.map.shape  # type: ignore[union-attr]
        agent = np.zeros((h, w, 1), dtype=np.float32)
        agent.reshape(-1)[self.state] = 1.0
        return np.concatenate([agent, self._terrain_obs], axis=-1)

    def tabular(self, features: np.ndarray | None = None) -> GridMDP:
        """The current map as a :class:`GridMDP` (true features unless ``features`` given)."""
        if self.map is None:
            raise RuntimeError("call reset() before tabular()")
        return tabular_mdp(self.map, features, self.horizon)

    def render(self) -> np.ndarray | None:
        """The terrain in colour with the agent's cell white, 8 pixels per cell:
        ``(8 * H, 8 * W, 3)`` uint8; None before the first reset."""
        if self.map is None:
            return None
        colours = np.array([[150, 110, 60], [70, 160, 60], [240, 200, 30], [220, 40, 20]])
        img = colours[self.map.terrain].astype(np.uint8)
        r, c = divmod(self.state, self.map.shape[1])
        img[r, c] = (255, 255, 255)
        return np.kron(img, np.ones((8, 8, 1), dtype=np.uint8))
