"""Distributed rollouts on Ray: on one machine (a local Ray instance started on demand) or
on an existing cluster.

- :func:`connect`: join a cluster (``"auto"``, ``"HOST:PORT"``) or start a local instance;
  :func:`check_address` checks within seconds that a Ray cluster answers at an address.
- :class:`RayVecEnv` / :func:`make_ray_vec_env`: an SB3 VecEnv whose envs are spread over
  rollout-worker actors (one batched call per worker per step), so any SB3 algorithm
  trains on envs across the cluster; on-policy agents with
  :class:`agents.worker_rollouts.WorkerRolloutsMixin` (the presets' TRPO and A2C) have each
  worker take a whole rollout with its copy of the policy, one call per update.
- :class:`FragmentSampler`: whole trajectory fragments (with render states) rolled out by a
  worker-side policy, for the segment pool.

Workers whose process dies are re-created (:class:`WorkerPool`); one that keeps dying
raises :class:`WorkerFailedError`; a lost head (the cluster's GCS) raises
:class:`ClusterLostError` within seconds. This package imports Ray; nothing below it does.
"""

from rlkit.distributed.connection import check_address, connect, shutdown
from rlkit.distributed.policies import RandomPolicy, SB3Policy, WorkerPolicy
from rlkit.distributed.pool import ClusterLostError, WorkerFailedError, WorkerPool
from rlkit.distributed.sampler import FragmentSampler
from rlkit.distributed.vec_env import RayVecEnv, make_ray_vec_env

__all__ = [
    "ClusterLostError",
    "FragmentSampler",
    "RandomPolicy",
    "RayVecEnv",
    "SB3Policy",
    "WorkerFailedError",
    "WorkerPolicy",
    "WorkerPool",
    "check_address",
    "connect",
    "make_ray_vec_env",
    "shutdown",
]
