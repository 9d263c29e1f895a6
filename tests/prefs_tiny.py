"""A tiny Hopper preference-learning config for tests that drive a PreferenceLoop directly."""

import dataclasses

from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.trainer import TrainerConfig


def tiny_hopper(
    *, pretrain_epochs: float = 2, min_steps: int = 10, n_steps: int = 256, **fields
) -> PrefsConfig:
    """2 envs, 0.2 s segments, a 100-segment pool, no evaluation; ``fields`` override the rest."""
    base = {"env": "Hopper-v5", "n_envs": 2, "segment_seconds": 0.2, "eval_episodes": 0,
            "pool_size": 100}  # fmt: skip
    return PrefsConfig(
        **{**base, **fields},
        trainer=dataclasses.replace(
            TrainerConfig(), pretrain_epochs=pretrain_epochs, min_steps=min_steps
        ),
        policy=dataclasses.replace(PrefsConfig().policy, n_steps=n_steps),
    )
