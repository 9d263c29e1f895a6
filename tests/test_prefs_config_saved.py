"""Saved run configs: settings added later take the values the saved run used."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest

from rlkit.core.errors import UserError
from rlkit.core.rundir import load_config, save_config
from rlkit.loops.preference import reward_ensemble
from rlkit.loops.preference_config import PrefsConfig


class _Spaces:  # what reward_ensemble reads from a VecEnv
    observation_space = gym.spaces.Box(-1, 1, (11,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (3,), np.float32)


def _linear_shapes(cfg: PrefsConfig) -> list[tuple[int, ...]]:
    ens = reward_ensemble(cfg, "mujoco", _Spaces())
    return [tuple(p.shape[1:]) for p in ens.params if p.dim() == 3]  # (K, out, in) weights


def test_the_default_reward_model_is_two_hidden_layers_of_64():
    # obs -> 64 (the mlp backbone), then [64 features + 3 action dims] -> 64 -> 1 (the head)
    assert _linear_shapes(PrefsConfig()) == [(64, 11), (64, 67), (1, 64)]


def test_a_config_saved_before_reward_hidden_existed_keeps_its_three_layers(tmp_path):
    save_config(tmp_path, PrefsConfig(env="Hopper-v5", seed=3))
    saved = load_config(tmp_path)
    assert saved["reward_hidden"] == [64]
    del saved["reward_hidden"]  # as config.json was written before 2026-12-01
    (tmp_path / "config.json").write_text(json.dumps(saved))
    saved = load_config(tmp_path)
    old = PrefsConfig.from_saved(saved)
    assert old.reward_hidden == (64, 64) and old.seed == 3
    assert _linear_shapes(old) == [(64, 11), (64, 64), (64, 67), (1, 64)]
    # A setting the run did save wins over the fallback.
    assert PrefsConfig.from_saved({**saved, "reward_hidden": [32]}).reward_hidden == (32,)


def test_backbone_kwargs_hidden_takes_precedence():
    cfg = dataclasses.replace(PrefsConfig(), backbone_kwargs='{"hidden": [16, 8]}')
    assert _linear_shapes(cfg) == [(16, 11), (8, 16), (64, 11), (1, 64)]


class _Pixels:  # an Atari VecEnv's spaces
    observation_space = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    action_space = gym.spaces.Discrete(6)


def test_by_default_vector_inputs_are_standardized_and_pixels_are_not():
    cfg = PrefsConfig()
    assert cfg.reward_normalize_inputs and cfg.policy.normalize_obs
    assert reward_ensemble(cfg, "mujoco", _Spaces()).normalize_inputs
    assert not reward_ensemble(cfg, "atari", _Pixels()).normalize_inputs
    off = dataclasses.replace(cfg, reward_normalize_inputs=False)
    assert not reward_ensemble(off, "mujoco", _Spaces()).normalize_inputs


def test_a_config_saved_before_the_normalizations_were_on_keeps_them_off(tmp_path):
    save_config(tmp_path, PrefsConfig(env="Hopper-v5", seed=3))
    saved = load_config(tmp_path)
    del saved["reward_normalize_inputs"], saved["policy"]["normalize_obs"]
    old = PrefsConfig.from_saved(saved)
    assert not old.reward_normalize_inputs and not old.policy.normalize_obs
    assert old.policy.gamma == PrefsConfig().policy.gamma and old.seed == 3
    # a run that saved them keeps what it saved
    saved["reward_normalize_inputs"], saved["policy"]["normalize_obs"] = True, True
    new = PrefsConfig.from_saved(saved)
    assert new.reward_normalize_inputs and new.policy.normalize_obs


def test_settings_groups_are_the_configs_nested_dataclasses():
    """A damaged config.json's group (``"policy": null``) is refused by name: the list of
    groups must follow the dataclass."""
    import typing

    from rlkit.loops.preference_config import SETTINGS_GROUPS, PrefsConfig

    hints = typing.get_type_hints(PrefsConfig)
    assert set(SETTINGS_GROUPS) == {n for n, t in hints.items() if dataclasses.is_dataclass(t)}


class _Stop(UserError):
    pass


# What the settings left to the env (None or auto) come to, with every other setting at its
# default: 700 labels, TRPO's 1024 steps per env on 4 MuJoCo envs, A2C's 5 on 8 Atari envs.
RESOLVED_DEFAULTS = {
    "Hopper-v5": {
        "backbone": "mlp", "n_envs": 4, "pool_size": 1000, "initial_labels": 175,
        "label_decay": 2e6, "reward_scale": 1.0, "round_steps": 8192,
        "trainer": {"min_steps": 30, "l2_max": 1e-2},
        "policy": {"algo": "trpo", "gamma": 0.995, "gae_lambda": 0.97, "n_steps": 1024,
                   "learning_rate": 1e-3, "ent_coef": 0.0, "normalize_obs": True},
    },
    "ALE/Pong-v5": {
        "backbone": "nature_cnn", "n_envs": 8, "pool_size": 300, "initial_labels": 500,
        "label_decay": 5e6, "reward_scale": 0.05, "round_steps": 8200,
        "trainer": {"min_steps": 10, "l2_max": 1e-2},
        "policy": {"algo": "a2c", "gamma": 0.99, "gae_lambda": 1.0, "n_steps": 5,
                   "learning_rate": 7e-4, "ent_coef": 0.01, "normalize_obs": False},
    },
}  # fmt: skip


@pytest.mark.parametrize("env", sorted(RESOLVED_DEFAULTS))
def test_train_saves_what_the_settings_left_to_the_env_came_to(tmp_path, monkeypatch, env):
    """config.json keeps the settings as given (auto stays auto: what --resume compares its
    flags with and reads back) and says under "resolved" what the run uses for them."""
    import rlkit.loops.preference as preference
    from rlkit.cli import main

    seen = {}

    def stop(cfg, run_dir, console):  # read what was saved, then stop before training
        seen.update(saved=load_config(run_dir), cfg=cfg)
        raise _Stop("stopped before training")

    monkeypatch.setattr(preference, "PreferenceLoop", stop)
    assert main(["prefs", "train", "--env", env, "--run-dir", str(tmp_path / "run")]) != 0
    saved = seen["saved"]
    assert saved["resolved"] == RESOLVED_DEFAULTS[env]
    assert saved["backbone"] == "auto" and saved["n_envs"] is None
    assert saved["initial_labels"] is None and saved["pool_size"] is None
    assert saved["policy"]["algo"] == "auto" and saved["policy"]["gamma"] is None
    # the section is not a setting: the saved config reads back as the run's own
    assert PrefsConfig.from_saved(saved) == seen["cfg"]


def test_the_resolved_settings_are_what_the_loop_uses(tmp_path):
    from rich.console import Console

    from agents.obs_norm import RunningObsNorm
    from rlkit.loops.preference import PreferenceLoop, resolved_settings

    cfg = PrefsConfig(env="Hopper-v5", reward_learner="thread", eval_episodes=0)
    resolved = resolved_settings(cfg)
    assert resolved == RESOLVED_DEFAULTS["Hopper-v5"]
    loop = PreferenceLoop(cfg, tmp_path, Console(quiet=True))
    try:
        loop.agent = loop._new_agent()
        agent = loop.agent
        assert (loop.n_envs, loop.pool.capacity, loop.scale, loop.round_steps) == (
            resolved["n_envs"], resolved["pool_size"], resolved["reward_scale"],
            resolved["round_steps"],
        )  # fmt: skip
        assert (loop.schedule.initial_labels, loop.schedule.decay) == (
            resolved["initial_labels"], resolved["label_decay"],
        )  # fmt: skip
        assert loop.learner.trainer.config.l2_cap == resolved["trainer"]["l2_max"]
        policy = resolved["policy"]
        assert type(agent).__name__ == "EntropyTRPO" and policy["algo"] == "trpo"
        assert (agent.gamma, agent.gae_lambda, agent.n_steps, agent.learning_rate) == (
            policy["gamma"], policy["gae_lambda"], policy["n_steps"], policy["learning_rate"],
        )  # fmt: skip
        assert agent.ent_coef == policy["ent_coef"]
        assert isinstance(agent.policy.features_extractor, RunningObsNorm)
    finally:
        loop.close()
