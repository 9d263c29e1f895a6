"""The reward pretraining borrows the waiting main thread's torch threads (later rounds do not),
and the start-up phases log their times."""

import dataclasses

import torch
from rich.console import Console

from rlkit.core.metrics import read_metrics
from rlkit.loops.preference import PreferenceLoop
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.trainer import TrainerConfig


def test_pretraining_uses_twice_the_threads_and_rounds_go_back(tmp_path):
    cfg = PrefsConfig(
        env="Hopper-v5", steps=512, labels=12, seed=0, n_envs=2, round_steps=256,
        segment_seconds=0.1, eval_episodes=0, pool_size=60,
        trainer=dataclasses.replace(TrainerConfig(), pretrain_epochs=1, min_steps=1),
        policy=dataclasses.replace(PrefsConfig().policy, n_steps=128),
    )  # fmt: skip
    loop = PreferenceLoop(cfg, tmp_path, Console(quiet=True))
    seen: list[tuple[float | None, int]] = []
    train = loop.trainer.train

    def watched(epochs: float | None = None) -> dict[str, float]:
        seen.append((epochs, torch.get_num_threads()))  # on the learner thread
        return train(epochs)

    loop.trainer.train = watched
    try:
        loop.start()
        while loop.steps_done < cfg.steps:
            loop.run_round()
        loop.finish_reward_training()
    finally:
        loop.close()
    assert torch.get_num_threads() == 1  # the main thread's setting never moved
    assert seen[0] == (1.0, 2)  # pretraining: --trainer.pretrain-epochs, 2 threads
    assert len(seen) >= 2 and all(t == 1 for _, t in seen[1:])
    metrics = read_metrics(tmp_path)
    for name in ("time/random_segments_seconds", "time/initial_labels_and_pretrain_seconds"):
        [(step, seconds)] = metrics[name]
        assert step == 0 and seconds > 0
    assert len(metrics["time/policy_seconds"]) == 2  # one per round
