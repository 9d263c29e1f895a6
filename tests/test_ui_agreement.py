"""The labeling UI's model judge: the run's latest reward ensemble, rebuilt from its files."""

import dataclasses

import torch

from envs import EnvSpec, make_vec_env
from feedback_ui.agreement import ModelJudge
from rlkit.core.checkpoint import CheckpointManager
from rlkit.core.rundir import save_config
from rlkit.loops.preference import reward_ensemble
from rlkit.loops.preference_config import PrefsConfig


def test_model_judge_builds_the_runs_ensemble_with_its_backbone_settings(tmp_path):
    """A run trained with --backbone-kwargs: the judge's ensemble must take its checkpoint
    (it used to build the default backbone, fail to load, and stay silent)."""
    cfg = PrefsConfig(env="Hopper-v5", backbone_kwargs='{"hidden": [16, 8]}', ensemble_size=2)
    cfg = dataclasses.replace(cfg, run_dir=tmp_path)
    save_config(tmp_path, cfg)
    venv = make_vec_env(EnvSpec(cfg.env), 1, 0)
    trained = reward_ensemble(cfg, "mujoco", venv)
    venv.close()
    with torch.no_grad():
        for p in trained.params:
            p.add_(0.5)  # differs from a fresh build
    CheckpointManager(tmp_path).save(1024, {"ensemble": trained.state_dict()})
    judge = ModelJudge(tmp_path)
    assert judge.refresh()
    obs, acts = torch.randn(4, 11), torch.randn(4, 3)
    torch.testing.assert_close(judge.ensemble.reward(obs, acts), trained.reward(obs, acts))
