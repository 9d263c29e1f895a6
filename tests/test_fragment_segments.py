"""FragmentSegmenter: the segments cut from a sampler's fragments, call after call, are the
segments a SegmentRecorder cuts from the same steps of a local vector env."""

from __future__ import annotations

import numpy as np
import pytest

from envs import EnvSpec, make_vec_env
from rlkit.core.types import Segment, Trajectory
from rlkit.distributed.policies import RandomPolicy
from rlkit.distributed.worker import RolloutWorker
from rlkit.loops.segment_recorder import FragmentSegmenter, SegmentRecorder


def _fields(seg: Segment) -> tuple:
    return (seg.env_index, seg.step, seg.episode_start, seg.obs.tobytes(), seg.acts.tobytes(),
            seg.true_rews.tobytes(), seg.render_state.tobytes())  # fmt: skip


@pytest.mark.parametrize(
    ("env_id", "calls", "fragment", "length"),
    [("Hopper-v5", 4, 60, 10), ("HalfCheetah-v5", 5, 250, 7)],
    ids=["terminal-ends", "time-limit-at-a-call-end"],
)
def test_segments_from_fragments_equal_the_recorders(env_id, calls, fragment, length):
    """Hopper's random episodes end in falls within a call; HalfCheetah's 1000-step episodes
    end by the time limit exactly at the end of the 4th call of 250 steps."""
    spec = EnvSpec(env_id, render_state=True)
    n = 2
    worker = RolloutWorker(spec, 7, 0, n, policy_seed=3)
    worker.set_policy(RandomPolicy(worker.spaces()[1]))
    got: list[Segment] = []
    segmenter = FragmentSegmenter(n, length, got.append, env_id=env_id)
    actions: list[list[np.ndarray]] = [[] for _ in range(n)]
    ends = {"terminal": 0, "truncated": 0}
    for _ in range(calls):
        pieces = worker.sample(fragment)
        segmenter.add(pieces)
        for k, traj in sorted(pieces, key=lambda p: p[0]):  # stable: time order within an env
            actions[k] += list(traj.acts)
            ends["terminal"] += traj.terminal
            ends["truncated"] += traj.truncated
    assert ends["terminal" if env_id == "Hopper-v5" else "truncated"] >= 2

    want: list[Segment] = []
    recorder = SegmentRecorder(make_vec_env(spec, n, seed=7), length, want.append, env_id)
    recorder.reset()
    for t in range(calls * fragment):
        recorder.step(np.stack([actions[k][t] for k in range(n)]))
    recorder.close()
    assert len(got) >= 30 and all(s.env_id == env_id for s in got)
    key = lambda s: (s.env_index, s.step)  # noqa: E731  (the recorder emits envs interleaved)
    assert [_fields(s) for s in sorted(got, key=key)] == [_fields(s) for s in sorted(want, key=key)]


def _piece(start: float, steps: int, terminal=False, truncated=False) -> Trajectory:
    obs = np.arange(steps + 1, dtype=np.float64)[:, None] + start
    return Trajectory(obs, np.zeros((steps, 1)), np.ones(steps), terminal, None, truncated)


def test_a_segment_never_joins_two_episodes():
    got: list[Segment] = []
    segmenter = FragmentSegmenter(1, 4, got.append)
    segmenter.add([(0, _piece(0, 3))])  # the call ends mid-episode: 3 steps held
    segmenter.add([(0, _piece(3, 3, truncated=True))])  # goes on from obs 3: one segment
    assert [s.obs[:, 0].tolist() for s in got] == [[0, 1, 2, 3]] and got[0].episode_start == 0
    # after a time limit, the next episode starts afresh, even at an equal observation
    segmenter.add([(0, _piece(6, 3))])
    # a worker re-created between calls: the next fragment starts elsewhere, a new episode
    segmenter.add([(0, _piece(100, 5))])
    assert [s.obs[:, 0].tolist() for s in got[1:]] == [[100, 101, 102, 103]]
    assert got[1].episode_start == 0 and got[1].step == 3 + 3 + 3 + 4


def test_a_trajectory_cannot_end_both_ways():
    with pytest.raises(ValueError, match="either terminal or truncated"):
        _piece(0, 2, terminal=True, truncated=True)
