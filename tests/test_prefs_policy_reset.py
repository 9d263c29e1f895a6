"""--policy-reset-at: the policy is re-initialised once, mid-run; the reward side is kept."""

import pytest
import torch
from prefs_tiny import tiny_hopper
from rich.console import Console

from agents.obs_norm import obs_norm_state
from rlkit.core.errors import ConfigError
from rlkit.core.metrics import read_metrics
from rlkit.loops.preference import POLICY_HEADS, PreferenceLoop
from rlkit.loops.preference_config import PrefsConfig


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def split(weights: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(output layers and action std, the other learned weights); the observation
    statistics (the default --policy.normalize-obs) are neither: a reset keeps them."""
    out = {k: v for k, v in weights.items() if k.startswith(POLICY_HEADS)}
    stats = obs_norm_state(weights)
    return out, {k: v for k, v in weights.items() if k not in out and k not in stats}


@pytest.mark.slow
@pytest.mark.parametrize("keep_hidden", [False, True])
def test_policy_is_reinitialised_once_and_the_reward_side_is_kept(tmp_path, keep_hidden):
    cfg = tiny_hopper(
        steps=2048, labels=16, seed=3, round_steps=512, policy_reset_at=0.5,
        policy_reset_keep_hidden=keep_hidden, run_dir=tmp_path,
    )  # fmt: skip
    loop = PreferenceLoop(cfg, tmp_path, Console(quiet=True))
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original_reset = loop.reset_policy

    def watched_reset() -> None:
        seen["trained"] = params(loop.agent.policy)
        seen["reward_before"] = params(loop.actor)  # (the learner may be training)
        ensemble, learner = loop.ensemble, loop.learner
        original_reset()
        seen["reset"] = params(loop.agent.policy)
        seen["reward_after"] = params(loop.actor)
        assert loop.ensemble is ensemble and loop.learner is learner

    loop.reset_policy = watched_reset
    try:
        loop.start()
        initial = params(loop.agent.policy)
        loop.run_round()  # 512 steps: no reset yet
        assert "reset" not in seen
        loop.run_round()  # 1024 = half of --steps: trains, then resets
        assert loop.steps_done == 1024
        assert not same(seen["trained"], initial)  # the policy had learned ...
        heads_reset, hidden_reset = split(seen["reset"])
        heads_initial, hidden_initial = split(initial)
        assert heads_reset and hidden_reset  # both parts exist under these names
        assert same(heads_reset, heads_initial)  # fresh output layers and action std ...
        # ... and hidden layers either fresh too, or kept as trained
        assert same(hidden_reset, split(seen["trained"])[1] if keep_hidden else hidden_initial)
        assert not same(hidden_initial, split(seen["trained"])[1])
        kept = obs_norm_state(seen["trained"])  # the observation statistics, as trained
        assert kept and same(obs_norm_state(seen["reset"]), kept)
        assert same(seen["reward_before"], seen["reward_after"])  # the reward model is kept
        labels = loop.store.count_labels()
        while loop.steps_done < cfg.steps:
            loop.run_round()
        assert loop.steps_done == 2048  # the step count carried on through the reset
        assert not same(seen["reset"], params(loop.agent.policy))  # the new policy trained
        assert loop.store.count_labels() >= labels > 0
    finally:
        loop.close()
    resets = read_metrics(tmp_path)["charts/policy_reset"]
    assert [step for step, _ in resets] == [1024]  # exactly once
    # SB3's log of the first policy is kept; the new policy logs next to it
    for name in ("progress.csv", "progress-1.csv"):
        rows = (tmp_path / "sb3" / name).read_text().splitlines()
        assert len(rows) >= 2 and "time/total_timesteps" in rows[0]


def test_policy_reset_at_must_be_a_fraction_below_one():
    with pytest.raises(ConfigError, match=r"--policy-reset-at has an invalid value 1.0"):
        PrefsConfig(policy_reset_at=1.0)
    with pytest.raises(ConfigError, match=r"--policy-reset-at has an invalid value -0.1"):
        PrefsConfig(policy_reset_at=-0.1)
    with pytest.raises(ConfigError, match=r"--policy-reset-keep-hidden needs --policy-reset-at"):
        PrefsConfig(policy_reset_keep_hidden=True)
