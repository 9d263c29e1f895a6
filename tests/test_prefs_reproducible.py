"""A preference run is a function of its seed: the same seed gives the same queries, labels,
reward model and policy, even though reward training runs on a background thread; how often
it is checkpointed changes none of them."""

import dataclasses
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


def run(run_dir: Path, seed: int) -> dict:
    """Start plus three rounds of a tiny Hopper run; what it asked, heard and learned."""
    cfg = tiny_hopper(steps=1536, labels=24, seed=seed, round_steps=512, run_dir=run_dir)
    loop = PreferenceLoop(cfg, run_dir, Console(quiet=True))
    try:
        loop.start()
        while loop.steps_done < cfg.steps:
            loop.run_round()
        loop.finish_reward_training()
        labels = [(r.segment_a, r.segment_b, r.choice) for r in loop.store.labels_after(0)]
        return {
            "labels": labels,
            "clip": loop.store.load_segment(labels[-1][0]).obs,
            "reward": {k: v.clone() for k, v in loop.ensemble.state_dict().items()},
            "policy": {k: v.clone() for k, v in loop.agent.policy.state_dict().items()},
        }
    finally:
        loop.close()


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_same_seed_same_run_other_seed_other_run(tmp_path):
    first, again, other = (run(tmp_path / name, seed) for name, seed in
                           (("a", 5), ("b", 5), ("c", 6)))  # fmt: skip
    assert len(first["labels"]) > 10  # initial labels and some asked during training
    assert first["labels"] == again["labels"]
    assert (first["clip"] == again["clip"]).all()
    assert same_tensors(first["reward"], again["reward"])
    assert same_tensors(first["policy"], again["policy"])
    # ... and the seed matters (otherwise the checks above prove nothing)
    assert first["labels"] != other["labels"]
    assert not same_tensors(first["policy"], other["policy"])


def checkpointed_run(run_dir: Path, every: int) -> dict:
    """A whole tiny run (step 0 and the end are always saved), checkpointed every ``every``."""
    cfg = tiny_hopper(steps=2048, labels=24, seed=5, round_steps=512, checkpoint_every=every)
    loop = PreferenceLoop(cfg, run_dir, Console(quiet=True))
    try:
        loop.run()
        return {
            "labels": [(r.segment_a, r.segment_b, r.choice) for r in loop.store.labels_after(0)],
            "reward": {k: v.clone() for k, v in loop.ensemble.state_dict().items()},
            "policy": {k: v.clone() for k, v in loop.agent.policy.state_dict().items()},
            "saves": sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")),
        }
    finally:
        loop.close()


@pytest.mark.slow
def test_checkpoints_change_nothing_the_run_learns(tmp_path):
    """Checkpointed after every round or only at its start and end: the same run."""
    often, rarely = (checkpointed_run(tmp_path / name, every) for name, every in
                     (("often", 512), ("rarely", 10**9)))  # fmt: skip
    assert often["saves"] == ["step_0000001536", "step_0000002048"]  # the newest two kept
    assert rarely["saves"] == ["step_0000000000", "step_0000002048"]
    assert len(often["labels"]) > 10 and often["labels"] == rarely["labels"]
    assert same_tensors(often["reward"], rarely["reward"])
    assert same_tensors(often["policy"], rarely["policy"])


def tiny_breakout(**fields) -> PrefsConfig:
    return PrefsConfig(
        env="ALE/Breakout-v5", n_envs=2, atari_segment_steps=10, pool_size=40, eval_episodes=0,
        trainer=dataclasses.replace(TrainerConfig(), pretrain_epochs=2, min_steps=3, batch_size=8),
        **fields,
    )  # fmt: skip


CONFIGS = {
    "hopper": lambda: tiny_hopper(steps=2048, labels=24, seed=5, round_steps=512),
    "breakout": lambda: tiny_breakout(steps=600, labels=12, seed=5, round_steps=200),
}


def stopped_and_resumed_run(run_dir: Path, name: str, stop_after: int | None) -> dict:
    """A whole tiny run, or one stopped (as by Ctrl-C) after ``stop_after`` rounds and resumed
    by a new loop, as a new process would."""
    cfg = CONFIGS[name]()
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
        return {
            "labels": [(r.segment_a, r.segment_b, r.choice) for r in loop.store.labels_after(0)],
            "reward": {k: v.clone() for k, v in loop.ensemble.state_dict().items()},
            "actor": {k: v.clone() for k, v in loop.actor.state_dict().items()},
            "policy": {k: v.clone() for k, v in loop.agent.policy.state_dict().items()},
            "curves": {k: metrics.get(k) for k in ("charts/true_return", "charts/learned_reward",
                                                   "losses/reward_train", "charts/pool_size")},
        }  # fmt: skip
    finally:
        loop.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hopper", "breakout"])
def test_a_run_stopped_at_a_checkpoint_and_resumed_is_the_run_that_went_on(tmp_path, name):
    """Stopped after two rounds (the envs mid-episode, a reward training pending, the pool
    full of unqueried segments) and resumed in a new loop: the same queries, labels, reward
    model, policy and learning curves as the run that was never stopped."""
    whole = stopped_and_resumed_run(tmp_path / "whole", name, None)
    resumed = stopped_and_resumed_run(tmp_path / "resumed", name, 2)
    assert len(whole["labels"]) > 10 and whole["labels"] == resumed["labels"]
    assert len(whole["curves"]["charts/learned_reward"]) >= 3  # rounds: 2 before the stop
    assert whole["curves"] == resumed["curves"]
    for part in ("reward", "actor", "policy"):
        assert same_tensors(whole[part], resumed[part]), part
