"""Collect's rules: maze generation, rewards, option termination, stochasticity, seeding."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.collect import AGENT, GOAL, TIME, WALL, CollectEnv
from envs.collect_maze import carve_maze, generate_maze, open_neighbours, removable_walls

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def layout(rows: list[str]) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """Walls, agent and goals from text: ``#`` wall, ``o`` agent, ``x`` goal."""
    grid = np.array([list(r) for r in rows])
    agent = tuple(int(v) for v in np.argwhere(grid == "o")[0])
    return grid == "#", agent, grid == "x"


# A 10x10 hand-made maze: a corridor along row 1, a junction at (1, 4) going down.
MAZE = [
    "##########",
    "#o  x    #",
    "####.#####",
    "####.#####",
    "####.#####",
    "##########",
    "##########",
    "##########",
    "##########",
    "##########",
]


def hand_env(rows: list[str] = MAZE, **kwargs) -> CollectEnv:
    env = CollectEnv(**kwargs)
    env.reset(seed=0)
    walls, agent, goals = layout([r.replace(".", " ") for r in rows])
    env.load_layout(walls, agent, goals)
    return env


def test_registered_ids_pass_gymnasium_check_env() -> None:
    for env_id in (
        "rlkit/Collect-v0",
        "rlkit/CollectStochastic-v0",
        "rlkit/CollectFewerGoals-v0",
        "rlkit/CollectMoreWalls-v0",
    ):
        env = gym.make(env_id, render_mode="rgb_array")
        check_env(env.unwrapped, skip_render_check=False)
        env.close()


def test_maze_has_border_dfs_corridors_and_holes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        walls = carve_maze(10, rng)
        assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
        open_cells = np.argwhere(~walls)
        # A DFS tree: connected, and no 2x2 open block (corridors one cell wide).
        assert not any((~walls[y : y + 2, x : x + 2]).all() for y in range(9) for x in range(9))
        seen, stack = {tuple(open_cells[0])}, [tuple(open_cells[0])]
        while stack:
            y, x = stack.pop()
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                if not walls[y + dy, x + dx] and (y + dy, x + dx) not in seen:
                    seen.add((y + dy, x + dx))
                    stack.append((y + dy, x + dx))
        assert len(seen) == len(open_cells)
        holed = generate_maze(10, 5, np.random.default_rng(1))
        assert 0 < (~holed).sum() - (~carve_maze(10, np.random.default_rng(1))).sum() <= 5


def test_removable_walls_separate_two_open_cells_in_a_line() -> None:
    walls, _, _ = layout(["#####", "#o# #", "#####", "#####", "#####"])
    assert removable_walls(walls) == [(1, 2)]
    walls, _, _ = layout(["#####", "##o##", "#####", "## ##", "#####"])
    assert removable_walls(walls) == [(2, 2)]


def test_reset_places_agent_and_goals_on_distinct_open_cells() -> None:
    env = CollectEnv()
    obs, _ = env.reset(seed=5)
    assert obs.shape == (10, 10, 4) and obs.dtype == np.float32
    assert obs[..., AGENT].sum() == 1 and obs[..., GOAL].sum() == 8
    assert not (obs[..., WALL] * (obs[..., AGENT] + obs[..., GOAL])).any()
    assert not (obs[..., AGENT] * obs[..., GOAL]).any()
    assert (obs[..., TIME] == 1.0).all()


def test_option_runs_to_goal_and_rewards_discounted_sum() -> None:
    env = hand_env()
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    # Two moves then the goal at (1, 4): -0.2, -0.2, +2.0; the goal cell is also a branch point.
    assert env.agent == (1, 4)
    assert info["duration"] == 3 and info["goals_collected"] == 1
    assert reward == pytest.approx(-0.2 - 0.2 * 0.98 + 2.0 * 0.98**2)
    assert info["primitive_reward"] == pytest.approx(1.6)
    assert terminated  # the only goal is collected
    assert obs[..., GOAL].sum() == 0 and obs[1, 4, AGENT] == 1


def test_option_stops_at_branch_point_and_at_corridor_end() -> None:
    env = hand_env(NO_GOAL_ON_ROW_1)
    _, reward, terminated, _, info = env.step(RIGHT)  # stops on the branch point (1, 4)
    assert env.agent == (1, 4) and info["duration"] == 3 and not terminated
    assert reward == pytest.approx(-0.2 * (1 + 0.98 + 0.98**2))
    _, _, _, _, info = env.step(RIGHT)  # runs to the end of the corridor (1, 8)
    assert env.agent == (1, 8) and info["duration"] == 4
    _, _, _, _, info = env.step(UP)  # bumps: one step, -0.5, no move
    assert env.agent == (1, 8) and info["duration"] == 1 and info["primitive_reward"] == -0.5
    obs, _, _, _, _ = env.step(LEFT)
    assert env.agent == (1, 4)  # stops again at the junction
    assert obs[0, 0, TIME] == pytest.approx((20 - 3 - 4 - 1 - 4) / 20)


NO_GOAL_ON_ROW_1 = [r.replace("x", " ") for r in MAZE[:4]] + ["####x#####"] + MAZE[5:]


def test_episode_ends_after_max_steps_mid_option() -> None:
    env = hand_env(NO_GOAL_ON_ROW_1, max_steps=2)
    _, _, terminated, truncated, info = env.step(RIGHT)
    assert terminated and not truncated and info["duration"] == 2 and env.agent == (1, 3)
    with pytest.raises(RuntimeError):
        env.step(LEFT)


def test_stochastic_slip_frequency_at_branch_points() -> None:
    stops, trials = 0, 2000
    env = hand_env(NO_GOAL_ON_ROW_1, stochastic=True, goal_move_prob=0.0)
    walls, agent, goals = layout(NO_GOAL_ON_ROW_1)
    for _ in range(trials):
        env.load_layout(walls, agent, goals)
        env.step(RIGHT)
        stops += env.agent == (1, 4)
    # The option fails to stop at the junction with probability 0.3.
    assert stops / trials == pytest.approx(0.7, abs=0.04)


def test_stochastic_goal_moves_with_probability_03_to_empty_neighbours() -> None:
    rows = [
        "##########",
        "#o       #",
        "######## #",
        "#        #",
        "#   x    #",
        "#        #",
        "##########",
        "##########",
        "##########",
        "##########",
    ]
    env = hand_env(rows, stochastic=True, slip_prob=0.0)
    walls, agent, goals = layout(rows)
    moved, trials = 0, 3000
    for _ in range(trials):
        env.load_layout(walls, agent, goals)
        env.step(UP)  # a bump: exactly one primitive step
        ((y, x),) = np.argwhere(env.goals)
        assert abs(y - 4) + abs(x - 4) <= 1 and not env.walls[y, x]
        moved += (y, x) != (4, 4)
    assert moved / trials == pytest.approx(0.3, abs=0.03)


def test_deterministic_variant_never_slips_or_moves_goals() -> None:
    env = CollectEnv()
    rng = np.random.default_rng(0)
    for seed in range(20):
        env.reset(seed=seed)
        goals = env.goals.copy()
        done = False
        while not done:
            _, _, done, _, info = env.step(int(rng.integers(4)))
            goals[env.agent] = False
            assert (env.goals == goals).all()


def test_seeding_reproduces_layouts_and_stochastic_rollouts() -> None:
    def rollout(seed: int) -> list:
        env = gym.make("rlkit/CollectStochastic-v0")
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in [0, 1, 2, 3, 1, 1, 2, 0]:
            obs, r, term, _, _ = env.step(a)
            out += [obs, r]
            if term:
                break
        return out

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_render_returns_rgb_frame_with_agent_colour() -> None:
    env = CollectEnv(render_mode="rgb_array", cell_pixels=4)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (40, 40, 3) and frame.dtype == np.uint8
    y, x = env.agent
    assert tuple(frame[4 * y + 1, 4 * x + 1]) == (91, 255, 123)


def test_open_neighbours_and_branch_cells() -> None:
    walls, _, _ = layout([r.replace(".", " ") for r in MAZE])
    assert open_neighbours(walls, 1, 4) == 3 and open_neighbours(walls, 1, 2) == 2
    env = CollectEnv()
    env.walls = walls
    assert env.is_branch(1, 4) and not env.is_branch(1, 2)
