"""A fingerprint of the MuJoCo simulation under the installed libraries: the same seeded random
actions for 1000 steps on Hopper-v5, HalfCheetah-v5 and Walker2d-v5 (no early termination, as
the preference benchmarks run), and the resulting true return and a hash of the observations.

Two set-ups whose fingerprints differ simulate differently, so their benchmark returns need not
match seed for seed. To compare MuJoCo releases side by side, put one in a folder of its own:

    .venv/bin/pip install -q --no-deps --target /tmp/mj3 "mujoco<4"
    .venv/bin/python benchmarks/mujoco_fingerprint.py
    PYTHONPATH=/tmp/mj3 .venv/bin/python benchmarks/mujoco_fingerprint.py

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import gymnasium as gym
import mujoco
import numpy as np

from envs import EnvSpec
from envs.factory import mujoco_kwargs

ENVS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")


def fingerprint(env_id: str, steps: int = 1000, seed: int = 0) -> dict[str, float | str]:
    """True return of ``steps`` uniform random actions from ``reset(seed)``, and the first 12 hex
    digits of the SHA-1 of the (steps + 1, obs_dim) float64 observations."""
    env = gym.make(env_id, **mujoco_kwargs(EnvSpec(env_id, terminate_when_unhealthy=False)))
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, total = [obs], 0.0
    for _ in range(steps):
        obs, reward, _, _, _ = env.step(rng.uniform(-1.0, 1.0, env.action_space.shape))
        observations.append(obs)
        total += float(reward)
    env.close()
    digest = hashlib.sha1(np.asarray(observations, dtype=np.float64).tobytes()).hexdigest()
    return {"return": round(total, 6), "obs_sha1": digest[:12]}


def main() -> None:
    # no options: --help describes the run instead of starting it
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    row = {
        "bench": "mujoco_fingerprint",
        "mujoco": mujoco.__version__,
        "gymnasium": gym.__version__,
        **{env_id: fingerprint(env_id) for env_id in ENVS},
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
