"""Saved run configs: settings added later take the values the saved run used."""

import dataclasses
import json

import gymnasium as gym
import numpy as np

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
