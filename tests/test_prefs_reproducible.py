"""A preference run is a function of its seed: the same seed gives the same queries, labels,
reward model and policy, even though the reward model trains in a process of its own; how
often it is checkpointed, or a stop and resume, changes none of them."""

import dataclasses
import math
import signal
from pathlib import Path

import pytest
import torch
from prefs_tiny import tiny_hopper
from rich.console import Console

from rlkit.core.metrics import read_metrics
from rlkit.core.stop import GracefulStop, StopRequested
from rlkit.loops.preference import PreferenceLoop
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.trainer import TrainerConfig


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def tiny_breakout(**fields) -> PrefsConfig:
    return PrefsConfig(
        env="ALE/Breakout-v5", n_envs=2, atari_segment_steps=10, pool_size=40, eval_episodes=0,
        trainer=dataclasses.replace(TrainerConfig(), pretrain_epochs=2, min_steps=3, batch_size=8),
        **fields,
    )  # fmt: skip


CONFIGS = {
    "hopper": lambda **f: tiny_hopper(**{"steps": 2048, "labels": 24, "seed": 5,
                                         "round_steps": 512, **f}),
    "breakout": lambda **f: tiny_breakout(**{"steps": 600, "labels": 12, "seed": 5,
                                             "round_steps": 200, **f}),
}  # fmt: skip


def stopped_and_resumed_run(run_dir: Path, name: str, stop_after: int | None, **fields) -> dict:
    """A whole tiny run (``fields`` override its config; step 0 and the end are always
    checkpointed), or one stopped (as by Ctrl-C) after ``stop_after`` rounds and resumed by a
    new loop, as a new process would."""
    cfg = CONFIGS[name](**fields)
    loop = PreferenceLoop(cfg, run_dir, Console(quiet=True))
    if stop_after is not None:
        stop = GracefulStop()
        rounds = []
        run_round = loop.run_round

        def counted() -> dict:
            rounds.append(1)
            if len(rounds) == stop_after:
                stop.requested = signal.SIGINT  # what the first Ctrl-C does
            return run_round()

        loop.run_round = counted
        try:
            with pytest.raises(StopRequested):
                loop.run(stop=stop)
        finally:
            loop.close()
        loop = PreferenceLoop(cfg, run_dir, Console(quiet=True))
    try:
        loop.run(resume=stop_after is not None)
        metrics = read_metrics(run_dir)
        labels = [(r.segment_a, r.segment_b, r.choice) for r in loop.store.labels_after(0)]
        return {
            "labels": labels,
            "clip": loop.store.load_segment(labels[-1][0]).obs,
            "saves": sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")),
            "reward": {k: v.clone() for k, v in loop.ensemble.state_dict().items()},
            "actor": {k: v.clone() for k, v in loop.actor.state_dict().items()},
            "policy": {k: v.clone() for k, v in loop.agent.policy.state_dict().items()},
            "curves": {k: metrics.get(k) for k in ("charts/true_return", "charts/learned_reward",
                                                   "charts/learned_return", "losses/reward_train",
                                                   "charts/pool_size")},
        }  # fmt: skip
    finally:
        loop.close()


def assert_same_run(a: dict, b: dict) -> None:
    assert len(a["labels"]) > 10 and a["labels"] == b["labels"]
    assert (a["clip"] == b["clip"]).all()
    assert len(a["curves"]["charts/learned_reward"]) >= 3  # rounds: 2 before the stop
    # episodes ended, and each one's learned return was summed across the stop alike
    assert any(math.isfinite(v) for _, v in a["curves"]["charts/learned_return"])
    assert a["curves"] == b["curves"]
    for part in ("reward", "actor", "policy"):
        assert same_tensors(a[part], b[part]), part


@pytest.mark.slow
def test_a_run_is_its_seed_however_it_is_checkpointed_or_stopped_and_resumed(tmp_path):
    """Hopper, one seed: checkpointed only at its start and end, checkpointed after every
    round, and stopped after two rounds (the envs mid-episode, a reward training pending, the
    pool full of unqueried segments) then resumed in a new loop: the same queries, labels,
    clips, reward model, policy and learning curves, though the reward model trains in a
    process of its own beside the policy. Another seed: another run (else the checks prove
    nothing)."""
    whole = stopped_and_resumed_run(tmp_path / "whole", "hopper", None)
    often = stopped_and_resumed_run(tmp_path / "often", "hopper", None, checkpoint_every=512)
    resumed = stopped_and_resumed_run(tmp_path / "resumed", "hopper", 2)
    assert whole["saves"] == ["step_0000000000", "step_0000002048"]
    assert often["saves"] == ["step_0000001536", "step_0000002048"]  # the newest two kept
    assert_same_run(whole, often)
    assert_same_run(whole, resumed)
    other = stopped_and_resumed_run(tmp_path / "other", "hopper", None, seed=6)
    assert other["labels"] != whole["labels"]
    assert not same_tensors(other["policy"], whole["policy"])


@pytest.mark.slow
def test_an_atari_run_stopped_at_a_checkpoint_and_resumed_is_the_run_that_went_on(tmp_path):
    """Breakout, stopped after two rounds and resumed in a new loop: the run that went on."""
    whole = stopped_and_resumed_run(tmp_path / "whole", "breakout", None)
    resumed = stopped_and_resumed_run(tmp_path / "resumed", "breakout", 2)
    assert_same_run(whole, resumed)
