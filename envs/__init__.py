"""Environments: the factory for Gymnasium MuJoCo and ALE Atari envs, and rlkit's own envs.

Importing this package registers rlkit's own envs with Gymnasium (lazily: their modules
load on the first ``gym.make``).
"""

import gymnasium as gym

from envs.factory import EnvSpec, check_env_id, env_dt, env_kind, make_env, make_vec_env

_OWN_ENVS = {
    "rlkit/Collect-v0": ("envs.collect:CollectEnv", {"stochastic": False}),
    "rlkit/CollectStochastic-v0": ("envs.collect:CollectEnv", {"stochastic": True}),
    # Generalization splits of Collect (evaluation only): 4 goals instead of 8; no holes
    # knocked into the maze instead of 5 (so 5 more walls).
    "rlkit/CollectFewerGoals-v0": ("envs.collect:CollectEnv", {"num_goals": 4}),
    "rlkit/CollectMoreWalls-v0": ("envs.collect:CollectEnv", {"holes": 0}),
    "rlkit/CollectStochasticFewerGoals-v0": (
        "envs.collect:CollectEnv",
        {"stochastic": True, "num_goals": 4},
    ),
    "rlkit/CollectStochasticMoreWalls-v0": (
        "envs.collect:CollectEnv",
        {"stochastic": True, "holes": 0},
    ),
    "rlkit/Lavaland-v0": ("envs.lavaland:LavalandEnv", {}),
}
for _id, (_entry, _kwargs) in _OWN_ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, kwargs=_kwargs)

__all__ = ["EnvSpec", "check_env_id", "env_dt", "env_kind", "make_env", "make_vec_env"]
