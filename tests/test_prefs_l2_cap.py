"""The per-env L2 cap reaches the reward trainer a PreferenceLoop builds, and a run saved with
an explicit cap keeps it when resumed."""

import pytest
from prefs_tiny import tiny_hopper
from rich.console import Console

import rlkit.loops.preference as preference
from rlkit.cli import main
from rlkit.core.errors import UserError
from rlkit.core.rundir import load_config, save_config
from rlkit.loops.preference import PreferenceLoop
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.trainer import L2_MAX


def _trainer_cap(cfg: PrefsConfig, run_dir) -> float:
    """The L2 cap of the trainer that ``cfg``'s loop trains its reward model with."""
    loop = PreferenceLoop(cfg, run_dir, Console(quiet=True))
    try:
        return loop.learner.trainer.config.l2_cap  # a ThreadLearner's RewardTrainer
    finally:
        loop.close()


@pytest.mark.parametrize(("env", "cap"), [("Hopper-v5", L2_MAX), ("Walker2d-v5", 3e-2)])
def test_the_loop_trains_with_the_envs_cap_when_none_is_given(tmp_path, env, cap):
    assert L2_MAX == 1e-2
    cfg = tiny_hopper(env=env, reward_learner="thread", run_dir=tmp_path)
    assert cfg.trainer.l2_max is None
    assert _trainer_cap(cfg, tmp_path) == cap


def test_a_walker2d_run_saved_with_the_old_cap_resumes_with_it(tmp_path):
    # config.json of a Walker2d run started before 2026-12-04 holds l2_max 0.01, the cap then.
    save_config(tmp_path, tiny_hopper(env="Walker2d-v5", reward_learner="thread"))
    saved = load_config(tmp_path)
    assert saved["trainer"]["l2_max"] is None
    saved["trainer"]["l2_max"] = 0.01
    assert _trainer_cap(PrefsConfig.from_saved(saved), tmp_path) == 0.01
    saved["trainer"]["l2_max"] = None  # saved since: the env's cap, as when it started
    assert _trainer_cap(PrefsConfig.from_saved(saved), tmp_path) == 3e-2


class _Stop(UserError):
    pass


@pytest.mark.parametrize(
    ("flags", "cap"),
    [(["--env", "Walker2d-v5"], 3e-2), (["--env", "Hopper-v5"], L2_MAX),
     (["--env", "Walker2d-v5", "--trainer.l2-max", "0.05"], 0.05)],
)  # fmt: skip
def test_train_saves_the_cap_the_run_gets(tmp_path, monkeypatch, flags, cap):
    """config.json says what the run trains with, so a resumed run keeps it even if the
    per-env defaults change later."""

    saved = {}

    def stop(cfg, run_dir, console):  # read what was saved, then stop before training
        saved.update(load_config(run_dir))
        raise _Stop("stopped before training")

    monkeypatch.setattr(preference, "PreferenceLoop", stop)
    assert main(["prefs", "train", *flags, "--run-dir", str(tmp_path / "run")]) != 0
    assert saved["trainer"]["l2_max"] == cap
    # a run that failed to start leaves nothing behind: the same command can run again
    assert not (tmp_path / "run").exists()
