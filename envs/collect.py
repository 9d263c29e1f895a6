"""Collect (Oh, Singh & Lee 2017, "Value Prediction Network"), with the official configuration.

A 10x10 grid maze (wall border included) with 8 goals; the agent collects as many as it
can in 20 primitive steps. Its actions are 4 *options*, one per direction: an option keeps
moving until the agent stands at the end of a corridor (the next cell that way is a wall),
has just collected a goal, or stands on a branch point (more than 2 open neighbours).

Primitive rewards: -0.2 per move, -0.5 for bumping into a wall, +2.0 for entering a goal
cell (instead of the move reward; the goal disappears). The episode ends after
``max_steps`` primitive steps or when every goal is collected. Since the remaining time is
part of the observation, running out of time is a termination, not a truncation.

A step returns the option's reward ``sum_i gamma^i r_i`` over its primitive rewards ``r_i``
(``gamma`` = 0.98 per primitive step) and puts into ``info``:

- ``duration``: the number of primitive steps the option took (so ``gamma ** duration``
  is its discount),
- ``primitive_reward``: the undiscounted sum of its primitive rewards (an episode's sum of
  these is the paper's "average reward" score),
- ``goals_collected``: goals collected during the option.

Stochastic variant (``stochastic=True``): at a branch point the option fails to stop with
probability ``slip_prob`` (0.3), and after each primitive step that does not end the
episode each goal moves to a random adjacent empty cell with probability ``goal_move_prob``
(0.3).

Observation: float32 ``(10, 10, 4)``, channels last: wall, agent and goal indicators, and a
constant plane holding the fraction of time remaining (1 at the start, 0 at the end).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.collect_maze import DX, DY, generate_maze, open_neighbours

WALL, AGENT, GOAL, TIME = 0, 1, 2, 3
OPTION_NAMES = ("up", "right", "down", "left")
_COLORS = {
    "empty": (255, 255, 255),
    "wall": (44, 42, 60),
    "agent": (91, 255, 123),
    "goal": (52, 152, 219),
}


class CollectEnv(gym.Env):
    """The Collect domain as a Gymnasium env whose actions are the 4 direction options.

    Args:
        stochastic: slip past branch points and move goals at random (the paper's stochastic Collect).
        size: grid side including the wall border (10).
        num_goals: goals placed at the start (8; fewer for the "fewer goals" split).
        holes: walls removed after carving (5; fewer means more walls).
        max_steps: primitive steps per episode (20).
        gamma: per-primitive-step discount used for the option reward (0.98).
        move_reward, bump_reward, goal_reward: primitive rewards.
        slip_prob, goal_move_prob: the stochastic variant's probabilities (ignored otherwise).
        render_mode: ``"rgb_array"`` or None.
        cell_pixels: side of one cell in rendered frames.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        stochastic: bool = False,
        size: int = 10,
        num_goals: int = 8,
        holes: int = 5,
        max_steps: int = 20,
        gamma: float = 0.98,
        move_reward: float = -0.2,
        bump_reward: float = -0.5,
        goal_reward: float = 2.0,
        slip_prob: float = 0.3,
        goal_move_prob: float = 0.3,
        render_mode: str | None = None,
        cell_pixels: int = 24,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if num_goals < 1 or max_steps < 1 or size < 4 or holes < 0:
            raise ValueError("Collect needs num_goals >= 1, max_steps >= 1, size >= 4, holes >= 0")
        self.stochastic = stochastic
        self.size, self.num_goals, self.holes, self.max_steps = size, num_goals, holes, max_steps
        self.gamma = gamma
        self.move_reward, self.bump_reward, self.goal_reward = move_reward, bump_reward, goal_reward
        self.slip_prob = slip_prob if stochastic else 0.0
        self.goal_move_prob = goal_move_prob if stochastic else 0.0
        self.render_mode = render_mode
        self.cell_pixels = cell_pixels
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size, size, 4), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.walls = np.ones((size, size), dtype=bool)
        self.goals = np.zeros((size, size), dtype=bool)
        self.agent = (1, 1)
        self.t = 0
        self.done = True

    # ----------------------------------------------------------------- state
    def load_layout(
        self, walls: np.ndarray, agent: tuple[int, int], goals: np.ndarray
    ) -> np.ndarray:
        """Start an episode on a given layout (hand-made mazes, tests); returns the observation."""
        walls = np.asarray(walls, dtype=bool)
        goals = np.asarray(goals, dtype=bool)
        if walls.shape != (self.size, self.size) or goals.shape != walls.shape:
            raise ValueError(f"walls and goals must have shape ({self.size}, {self.size})")
        if walls[agent] or (goals & walls).any() or goals[agent]:
            raise ValueError("the agent and goals must stand on distinct open cells")
        self.walls, self.goals, self.agent = (
            walls.copy(),
            goals.copy(),
            (int(agent[0]), int(agent[1])),
        )
        self.t, self.done = 0, False
        return self._obs()

    def _obs(self) -> np.ndarray:
        obs = np.zeros((self.size, self.size, 4), dtype=np.float32)
        obs[..., WALL] = self.walls
        obs[self.agent[0], self.agent[1], AGENT] = 1.0
        obs[..., GOAL] = self.goals
        obs[..., TIME] = (self.max_steps - self.t) / self.max_steps
        return obs

    def is_branch(self, y: int, x: int) -> bool:
        """More than 2 open neighbours: a junction where an option stops."""
        return not self.walls[y, x] and open_neighbours(self.walls, y, x) > 2

    def _empty(self, y: int, x: int) -> bool:
        return not (self.walls[y, x] or self.goals[y, x] or (y, x) == self.agent)

    # ------------------------------------------------------------ dynamics
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new random maze with ``num_goals`` goals; returns the observation
        ``(size, size, 4)`` and an empty info. ``options`` is ignored."""
        super().reset(seed=seed)
        rng = self.np_random
        walls = generate_maze(self.size, self.holes, rng)
        free = np.argwhere(~walls)
        if len(free) < self.num_goals + 1:
            raise RuntimeError(
                f"maze has {len(free)} open cells, too few for {self.num_goals} goals"
            )
        picks = free[rng.choice(len(free), size=self.num_goals + 1, replace=False)]
        goals = np.zeros_like(walls)
        goals[picks[1:, 0], picks[1:, 1]] = True
        return self.load_layout(walls, (int(picks[0, 0]), int(picks[0, 1])), goals), {}

    def primitive_step(self, direction: int) -> tuple[float, bool, bool]:
        """One primitive move; returns (reward, goal collected, episode over)."""
        self.t += 1
        y, x = self.agent[0] + DY[direction], self.agent[1] + DX[direction]
        if self.walls[y, x]:
            reward = self.bump_reward
        else:
            self.agent = (y, x)
            reward = self.move_reward
        collected = bool(self.goals[self.agent])
        if collected:
            self.goals[self.agent] = False
            reward = self.goal_reward
        self.done = self.t >= self.max_steps or not self.goals.any()
        if not self.done and self.goal_move_prob > 0:
            self._move_goals()
        return reward, collected, self.done

    def _move_goals(self) -> None:
        """Each goal, with probability ``goal_move_prob``, moves to a random adjacent empty cell."""
        rng = self.np_random
        for y, x in np.argwhere(self.goals):
            if rng.random() >= self.goal_move_prob:
                continue
            moves = [d for d in range(4) if self._empty(y + DY[d], x + DX[d])]
            if moves:
                d = moves[int(rng.integers(len(moves)))]
                self.goals[y, x] = False
                self.goals[y + DY[d], x + DX[d]] = True

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Run the option of direction ``action`` (0..3) to its end; never truncates (see the
        module docstring for the reward and info). Raises RuntimeError after the episode's
        end, ValueError for another action."""
        if self.done:
            raise RuntimeError("step() called on a finished episode; call reset()")
        direction = int(action)
        if not 0 <= direction < 4:
            raise ValueError(f"action must be in 0..3, got {action}")
        option_reward, primitive_sum, discount, duration, goals = 0.0, 0.0, 1.0, 0, 0
        while not self.done:
            reward, collected, _ = self.primitive_step(direction)
            option_reward += discount * reward
            primitive_sum += reward
            discount *= self.gamma
            duration += 1
            goals += int(collected)
            y, x = self.agent
            if self.walls[y + DY[direction], x + DX[direction]] or collected:
                break
            if self.is_branch(y, x) and not (
                self.slip_prob > 0 and self.np_random.random() < self.slip_prob
            ):
                break
        info = {"duration": duration, "primitive_reward": primitive_sum, "goals_collected": goals}
        return self._obs(), float(option_reward), self.done, False, info

    # ------------------------------------------------------------- display
    def render(self) -> np.ndarray | None:
        """An RGB frame ``(size * cell_pixels, size * cell_pixels, 3)`` uint8, or None."""
        if self.render_mode != "rgb_array":
            return None
        grid = np.empty((self.size, self.size, 3), dtype=np.uint8)
        grid[:] = _COLORS["empty"]
        grid[self.walls] = _COLORS["wall"]
        grid[self.goals] = _COLORS["goal"]
        grid[self.agent] = _COLORS["agent"]
        return np.repeat(np.repeat(grid, self.cell_pixels, axis=0), self.cell_pixels, axis=1)

    def to_string(self) -> str:
        """The maze as text: ``#`` wall, ``o`` agent, ``x`` goal."""
        rows = []
        for y in range(self.size):
            row = ""
            for x in range(self.size):
                row += (
                    "#" if self.walls[y, x]
                    else "o" if (y, x) == self.agent
                    else "x" if self.goals[y, x]
                    else " "
                )  # fmt: skip
            rows.append(row)
        return "\n".join(rows)
