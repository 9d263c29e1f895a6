"""Config dataclasses built in Python check their fields' types: a wrong type is one line
naming the flag, at construction, not an error deep in the first training round."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from agents.presets import PolicyConfig
from agents.vpn.config import VPNConfig
from rlkit.core.errors import ConfigError, UserError
from rlkit.core.rundir import dataclass_from_dict
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.teachers import TeacherConfig
from rlkit.rewards.trainer import TrainerConfig


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainerConfig(batch_size=2.5), "--trainer.batch-size must be int, got 2.5"),
        (lambda: TrainerConfig(lr="3e-4"), "--trainer.lr must be float, got '3e-4'"),
        (lambda: TrainerConfig(min_steps=True), "--trainer.min-steps must be int | None, got True"),
        (lambda: PrefsConfig(steps=1e6), "--steps must be int, got 1000000.0"),
        (lambda: PrefsConfig(reward_hidden=(64.0,)), r"--reward-hidden must be tuple\[int, ...\]"),
        (lambda: PrefsConfig(resume=1), "--resume must be bool, got 1"),
        (lambda: PrefsConfig(run_dir="runs/a"), "--run-dir must be Path | None, got 'runs/a'"),
        (lambda: PrefsConfig(trainer={"lr": 1e-3}), "--trainer must be TrainerConfig"),
        (
            lambda: PrefsConfig(query_strategy="random"),
            "--query-strategy must be one of 'disagreement', 'uniform', 'entropy', got 'random'",
        ),
        (lambda: TeacherConfig(noise="ration"), "--teacher-model.noise must be one of 'rational'"),
        (lambda: PolicyConfig(n_steps=512.0), "--policy.n-steps must be int | None, got 512.0"),
    ],
)
def test_a_wrong_type_is_refused_in_one_line_naming_the_flag(build, message):
    with pytest.raises(ConfigError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def test_vpn_settings_of_a_wrong_type_are_refused_before_they_are_compared():
    with pytest.raises(UserError, match="--n-envs must be int, got '8'"):
        VPNConfig(n_envs="8").validate()  # type: ignore[arg-type]


def test_values_of_the_right_type_pass_numpy_integers_and_ints_for_floats_included():
    cfg = TrainerConfig(batch_size=np.int64(32), lr=1, l2_max=None, epochs=2)
    assert cfg.batch_size == 32 and cfg.lr == 1
    assert PrefsConfig(run_dir=Path("runs/a"), reward_hidden=(32, 32)).run_dir == Path("runs/a")


def test_a_saved_config_json_still_loads_with_strings_for_paths_and_dicts_for_sections(tmp_path):
    cfg = PrefsConfig(run_dir=tmp_path, reward_hidden=(32,), trainer=TrainerConfig(lr=1e-3))
    data = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    assert dataclass_from_dict(PrefsConfig, data) == cfg
    data["trainer"]["batch_size"] = 2.5
    with pytest.raises(UserError, match="'batch_size' of TrainerConfig is 2.5, not int"):
        dataclass_from_dict(PrefsConfig, data)
