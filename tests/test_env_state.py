"""envs.env_state: a VecEnv stack put back into a snapshot steps on exactly as the original."""

import dataclasses

import numpy as np
import pytest

from envs import make_vec_env
from envs.env_state import set_vec_env_state, vec_env_state
from envs.factory import EnvSpec
from rlkit.loops.segment_recorder import SegmentRecorder


def stack(env_id: str, segments: list):
    venv = make_vec_env(EnvSpec(env_id, render_state=True), 3, seed=4)
    return SegmentRecorder(venv, 7, segments.append, env_id=env_id)


def episode(info: dict) -> dict | None:
    """A finished episode's return and length (not its wall-clock time)."""
    ep = info.get("episode")
    return None if ep is None else {"r": ep["r"], "l": ep["l"]}


def steps(venv, actions) -> list:
    out = []
    for a in actions:
        obs, rews, dones, infos = venv.step(a)
        out.append((obs.copy(), rews.copy(), dones.copy(),
                    [(i.get("render_state"), episode(i)) for i in infos]))  # fmt: skip
    return out


def same(a, b) -> bool:
    if isinstance(a, dict | list | tuple):
        keys = a.keys() if isinstance(a, dict) else range(len(a))
        return type(a) is type(b) and len(a) == len(b) and all(same(a[k], b[k]) for k in keys)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("env_id", ["Hopper-v5", "ALE/Breakout-v5"])
def test_a_restored_stack_steps_on_exactly(env_id):
    segs_a: list = []
    venv = stack(env_id, segs_a)
    venv.reset()
    n = 1200 if env_id == "Hopper-v5" else 400  # past Hopper's 1000-step time limit
    draw = lambda k: [np.stack([venv.action_space.sample() for _ in range(3)]) for _ in range(k)]  # noqa: E731
    venv.action_space.seed(1)
    steps(venv, draw(n // 2 + 3))  # mid-segment, mid-episode
    state = vec_env_state(venv)
    actions = draw(n)
    del segs_a[:]
    original = steps(venv, actions)
    segs_b: list = []
    fresh = stack(env_id, segs_b)
    fresh.reset()
    fresh.step(actions[0])  # somewhere else entirely
    set_vec_env_state(fresh, state)
    restored = steps(fresh, actions)
    assert sum(o[2].sum() for o in original) > 0  # episodes ended on the way
    assert len(segs_a) > 10 and len(segs_a) == len(segs_b)
    for x, y in zip(segs_a, segs_b, strict=True):  # Segments: frozen dataclasses
        assert same(
            {f.name: getattr(x, f.name) for f in dataclasses.fields(x)},
            {f.name: getattr(y, f.name) for f in dataclasses.fields(y)},
        )
    assert same(original, restored)
