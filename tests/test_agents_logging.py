"""Agents built by the presets log nowhere unless told: no empty /tmp/SB3-<date> folders."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from agents.presets import PolicyConfig, load_agent, make_agent
from envs import EnvSpec, make_vec_env


@pytest.mark.parametrize("algo", ["trpo", "a2c"])
def test_learning_leaves_no_folder_in_the_temp_dir(
    algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where SB3 would put its folder
    venv = make_vec_env(EnvSpec("Pendulum-v1"), 1, 0)
    try:
        agent = make_agent(PolicyConfig(algo=algo, n_steps=128), venv, "mujoco", seed=0)
        agent.learn(128)
        agent.save(tmp_path / "agent.zip")
        loaded = load_agent(algo, str(tmp_path / "agent.zip"), env=venv)
        loaded.learn(128, reset_num_timesteps=False)
        assert loaded.num_timesteps == 128 + 128  # resumed counting, and it did learn
    finally:
        venv.close()
    assert list(temp.glob("SB3-*")) == []
