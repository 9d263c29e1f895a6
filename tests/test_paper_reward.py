"""The paper's MuJoCo rewards (envs.paper_reward): the formula at every step, the episodes
that never end early, and the preference loop's teacher and evaluation using them."""

import dataclasses
import json

import numpy as np
import pytest

from envs import EnvSpec, make_env, make_vec_env
from envs.paper_reward import PAPER_TASKS, paper_task
from rlkit.cli import main
from rlkit.core.errors import ConfigError, UserError
from rlkit.core.rundir import save_config
from rlkit.loops.evaluation import eval_spec, evaluate_policy_true
from rlkit.loops.preference import PreferenceLoop
from tests.benchmark_scripts import load_benchmark
from tests.prefs_tiny import tiny_hopper


def random_steps(env_id: str, steps: int, seed: int = 0) -> list[tuple[float, dict, float]]:
    """``(paper reward, info, torso height after the step)`` for ``steps`` random actions."""
    spec = EnvSpec(env_id, terminate_when_unhealthy=False, reward="paper")
    env = make_env(spec, seed)()
    task = paper_task(env_id)
    out = []
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and not truncated  # falls never end the episode
        qpos = env.unwrapped.data.qpos
        height = float(qpos[task.height_index]) if task.height_index is not None else 0.0
        out.append((float(reward), info, height))
    return out


@pytest.mark.parametrize(
    ("env_id", "offset"), [("Hopper-v5", 0.0), ("Walker2d-v5", 1.0), ("HalfCheetah-v5", None)]
)
def test_reward_is_forward_progress_plus_height_without_the_torque_penalty(env_id, offset):
    rows = random_steps(env_id, 300)
    for reward, info, height in rows:
        extra = 0.0 if offset is None else height - offset
        assert reward == pytest.approx(info["reward_forward"] + extra, abs=1e-12)
        # Gymnasium's reward kept beside it: forward progress, its healthy bonus, the torque cost
        healthy = info.get("reward_survive", 0.0)
        gym_reward = info["reward_forward"] + healthy + info["reward_ctrl"]
        assert info["reward_gymnasium"] == pytest.approx(gym_reward, abs=1e-12)
    if offset is not None:
        heights = np.array([h for _, _, h in rows])
        assert heights.min() < 0.8 < heights.max()  # random actions fall: the height moves


def test_a_fallen_walker_earns_less_the_lower_it_lies():
    """Where Gymnasium's healthy bonus is 0 for every fallen step, the paper's reward keeps
    ranking them by height (the forward term aside)."""
    rows = random_steps("Walker2d-v5", 400, seed=3)
    fallen = [(r - info["reward_forward"], h) for r, info, h in rows if info["reward_survive"] == 0]
    assert len(fallen) > 50
    bonus, height = np.array(fallen).T
    assert np.ptp(height) > 0.2 and np.allclose(bonus, height - 1.0)
    upright = [r - info["reward_forward"] for r, info, _ in rows if info["reward_survive"] == 1]
    assert min(upright) > max(bonus)  # upright (z >= 0.8) always above fallen here


def test_envs_without_a_paper_reward_are_one_line_errors():
    assert set(PAPER_TASKS) >= {"Hopper", "Walker2d", "HalfCheetah"}
    for env_id in ("ALE/Pong-v5", "Hopper-v4", "Humanoid-v5"):
        with pytest.raises(UserError, match=f"not for {env_id}$"):
            make_vec_env(EnvSpec(env_id, reward="paper"), 1, 0)
    with pytest.raises(ConfigError, match="not for ALE/Pong-v5"):
        tiny_hopper(env="ALE/Pong-v5", env_reward="paper")
    with pytest.raises(ConfigError, match="drop --early-termination"):
        tiny_hopper(env_reward="paper", early_termination=True)
    # scoring a run on the other reward: the paper's runs episodes to the time limit
    scored = tiny_hopper(early_termination=True).scored_on("paper")
    assert scored.env_reward == "paper" and not scored.early_termination
    assert tiny_hopper(early_termination=True).scored_on("gymnasium").early_termination
    with pytest.raises(ConfigError, match="not for ALE/Pong-v5"):
        tiny_hopper(env="ALE/Pong-v5").scored_on("paper")


def test_the_loop_labels_and_evaluates_with_the_paper_reward(tmp_path, capsys):
    """A tiny Walker2d run: every pool segment's true rewards are the paper's, recomputed
    from its render states (qpos after each step), and evaluation uses the same env; a kept
    run scored on the other reward by benchmarks/eval_other_reward.py and `rlkit prefs eval`."""
    run_dir = tmp_path / "Walker2d-v5_seed0" / "run"
    run_dir.mkdir(parents=True)
    cfg = dataclasses.replace(
        tiny_hopper(env="Walker2d-v5", env_reward="paper", steps=512, labels=20), run_dir=run_dir
    )
    save_config(run_dir, cfg)
    assert eval_spec(cfg).reward == "paper"
    loop = PreferenceLoop(cfg, run_dir)
    assert loop.spec.reward == "paper"
    loop.run()
    segments = [loop.pool[i] for i in loop.pool.ids()]
    assert segments
    dt = 0.008  # Walker2d-v5: 4 frames of 2 ms
    for seg in segments:
        x, z = seg.render_state[:, 0], seg.render_state[:, 1]  # qpos at each action
        # step t's reward: forward velocity (x_{t+1} - x_t) / dt + height after it - 1
        expected = np.diff(x) / dt + z[1:] - 1.0
        assert np.allclose(seg.true_rews[:-1], expected, atol=1e-6)

    loop.agent.save(run_dir.parent / "true_reward_agent.zip")  # stands in for bench's TRPO
    loop.close()  # the agent stays usable for predictions
    scored = {
        reward: load_benchmark("eval_other_reward").evaluate_kept(run_dir.parent, reward, 1)
        for reward in ("paper", "gymnasium")
    }
    for reward, row in scored.items():
        expected = evaluate_policy_true(
            loop.agent, dataclasses.replace(cfg, env_reward=reward), 2, 1
        )
        assert row["return_learned"] == row["return_true_reward_agent"] == round(expected, 1)
        assert row["trained_with"] == "paper" and row["scored_on"] == reward
    assert scored["paper"]["return_learned"] != scored["gymnasium"]["return_learned"]
    # `rlkit prefs eval --env-reward`: the run's own reward by default, or the other one
    for flag, reward in (("run", "paper"), ("gymnasium", "gymnasium"), ("paper", "paper")):
        assert main(["prefs", "eval", str(run_dir), "--episodes", "1", "--json",
                     "--env-reward", flag]) == 0  # fmt: skip
        row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert row["env_reward"] == reward
        assert round(row["true_return"], 1) == scored[reward]["return_learned"]


@pytest.mark.parametrize("reward", ["Paper", "", "true"])
def test_an_unknown_env_spec_reward_is_a_one_line_error_naming_the_choices(reward):
    """EnvSpec(reward=...) is checked where it is made: "Paper" silently built the env with
    Gymnasium's own reward before."""
    with pytest.raises(UserError, match=r"reward must be one of 'gymnasium', 'paper', got"):
        make_vec_env(EnvSpec("Hopper-v5", reward=reward), 1, 0)
    assert EnvSpec("Hopper-v5", reward="paper").reward == "paper"
