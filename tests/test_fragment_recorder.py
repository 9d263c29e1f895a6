"""FragmentRecorder against a step-by-step reference: pieces, their order, episode ends,
time-limit cuts, render states, for small observations (stacked once per chunk) and large
ones (gathered per piece); Atari pieces sent as their frames against the stacked ones."""

from __future__ import annotations

import numpy as np
import pytest

from envs import EnvSpec
from envs.frame_stack import AtariFrameStack
from envs.render_state import RENDER_STATE_KEY
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv
from rlkit.core.types import Trajectory
from rlkit.distributed.fragments import _STACK_ALL_BYTES, FragmentRecorder, PackedFrames
from rlkit.distributed.policies import RandomPolicy
from rlkit.distributed.worker import RolloutWorker
from tests.synthetic_frames import RandomFrames


def reference(stream, start_obs, start_states, flush_after):
    """The pieces, cut one env and one step at a time (the recorder's contract, spelled out)."""
    n = len(start_obs)
    cur = [
        {"obs": [start_obs[k]], "acts": [], "rews": [], "states": [start_states[k]]}
        for k in range(n)
    ]
    out = []
    for t, (acts, obs, rews, dones, infos, reset_infos) in enumerate(stream):
        for k in range(n):
            piece = cur[k]
            piece["acts"].append(acts[k])
            piece["rews"].append(rews[k])
            if dones[k]:
                piece["obs"].append(infos[k]["terminal_observation"])
                piece["states"].append(infos[k][RENDER_STATE_KEY])
                truncated = infos[k]["TimeLimit.truncated"]
                out.append((k, piece, not truncated, truncated))
                state = reset_infos[k][RENDER_STATE_KEY]
                cur[k] = {"obs": [obs[k]], "acts": [], "rews": [], "states": [state]}
            else:
                piece["obs"].append(obs[k])
                piece["states"].append(infos[k][RENDER_STATE_KEY])
        if t + 1 in flush_after:
            for k in range(n):
                if cur[k]["acts"]:
                    out.append((k, cur[k], False, False))
                    last = cur[k]
                    cur[k] = {
                        "obs": [last["obs"][-1]],
                        "acts": [],
                        "rews": [],
                        "states": [last["states"][-1]],
                    }
    return out


@pytest.mark.parametrize("obs_shape", [(5,), (40, 40)], ids=["small", "large"])
def test_pieces_match_a_step_by_step_reference(obs_shape):
    rng = np.random.default_rng(0)
    n, steps, flush_after = 3, 23, {9, 23}
    dtype = np.float64 if len(obs_shape) == 1 else np.uint8
    assert (np.prod(obs_shape) * np.dtype(dtype).itemsize > _STACK_ALL_BYTES) == (
        len(obs_shape) == 2
    )

    def draw(*shape):
        return (
            rng.integers(0, 255, size=shape) if dtype == np.uint8 else rng.normal(size=shape)
        ).astype(dtype)

    start_obs = draw(n, *obs_shape)
    start_states = [rng.normal(size=4) for _ in range(n)]
    stream = []
    for _ in range(steps):
        dones = rng.random(n) < 0.2
        infos = [{RENDER_STATE_KEY: rng.normal(size=4)} for _ in range(n)]
        reset_infos = [{RENDER_STATE_KEY: rng.normal(size=4)} if d else {} for d in dones]
        for k in np.flatnonzero(dones):
            infos[k]["terminal_observation"] = draw(*obs_shape)
            infos[k]["TimeLimit.truncated"] = bool(rng.random() < 0.5)
        acts = rng.integers(0, 6, size=(n, 2))
        stream.append(
            (
                acts,
                draw(n, *obs_shape),
                rng.normal(size=n).astype(np.float32),
                dones,
                infos,
                reset_infos,
            )
        )
    assert sum(int(s[3].sum()) for s in stream) >= 5

    recorder = FragmentRecorder(n, render_state=True)
    recorder.start(start_obs, [{RENDER_STATE_KEY: s} for s in start_states])
    got = []
    for t, step in enumerate(stream):
        recorder.record(*step)
        if t + 1 in flush_after:
            got += recorder.flush()
    assert recorder.flush() == []  # nothing left after the last flush

    want = reference(stream, start_obs, start_states, flush_after)
    # Per flush: episode ends in time order, then the unfinished pieces by env.
    assert [k for k, _ in got] == [k for k, *_ in want]
    for (_, traj), (_, piece, terminal, truncated) in zip(got, want, strict=True):
        assert (traj.terminal, traj.truncated) == (terminal, truncated)
        assert traj.obs.dtype == dtype and traj.obs.flags.c_contiguous
        np.testing.assert_array_equal(traj.obs, np.stack(piece["obs"]))
        np.testing.assert_array_equal(traj.acts, np.stack(piece["acts"]))
        np.testing.assert_array_equal(traj.rews, np.asarray(piece["rews"], dtype=np.float32))
        np.testing.assert_array_equal(traj.render_states, np.stack(piece["states"]))
    total = sum(len(traj) for _, traj in got)
    assert total == n * steps


def test_packed_frames_unpack_to_the_stacked_pieces():
    """Atari pieces sent as their frames (PackedFrames) unpack to exactly the stacked pieces,
    across episode ends (terminated and truncated) and flushes, at a quarter of the bytes."""
    n = 3
    venv = AtariFrameStack(ShallowDummyVecEnv([lambda s=s: RandomFrames(s) for s in range(n)]), 4)
    assert venv.stacked_obs.packed
    plain, packed = (FragmentRecorder(n, render_state=True) for _ in range(2))
    obs = venv.reset()
    for rec in (plain, packed):
        rec.start(obs, venv.venv.reset_infos)
    rng = np.random.default_rng(0)
    got_plain, got_packed, ends = [], [], 0
    for t in range(1, 121):
        acts = rng.integers(0, 3, size=n)
        obs, rews, dones, infos = venv.step(acts)
        ends += int(dones.sum())
        for rec in (plain, packed):
            rec.record(acts, obs, rews, dones, infos, venv.venv.reset_infos)
        if t % 30 == 0:
            got_plain += plain.flush()
            got_packed += packed.flush(pack_frames=True)
    assert ends >= 15 and len(got_plain) >= 20
    assert [k for k, _ in got_packed] == [k for k, _ in got_plain]
    for (_, wire), (_, want) in zip(got_packed, got_plain, strict=True):
        assert isinstance(wire, PackedFrames) and wire.frames.shape == (len(want) + 4, 6, 7)
        traj = wire.unpack()
        assert traj.obs.shape == want.obs.shape and not traj.obs.flags.writeable
        np.testing.assert_array_equal(traj.obs, want.obs)
        assert (traj.terminal, traj.truncated) == (want.terminal, want.truncated)
        np.testing.assert_array_equal(traj.acts, want.acts)
        np.testing.assert_array_equal(traj.rews, want.rews)
        np.testing.assert_array_equal(traj.render_states, want.render_states)
    # the stacks hold earlier frames, and start from zeros after a reset
    assert any(want.obs[-1][..., :3].any() for _, want in got_plain)
    # (T + 4) / (4 (T + 1)) of the bytes: 0.34 for this test's short episodes, 0.29 for 25 steps
    sent = sum(w.frames.nbytes for _, w in got_packed)
    assert sent < 0.4 * sum(w.obs.nbytes for _, w in got_plain)


def test_pong_worker_sends_packed_frames_that_equal_its_stacks():
    spec = EnvSpec("ALE/Pong-v5")
    workers = [RolloutWorker(spec, 5, 0, 2, frame_stack=True, policy_seed=1) for _ in range(2)]
    for w in workers:
        w.set_policy(RandomPolicy(w.spaces()[1]))
    for _ in range(2):
        plain, packed = workers[0].sample(20), workers[1].sample(20, pack_frames=True)
        assert len(plain) == len(packed) == 2
        for (k1, want), (k2, wire) in zip(plain, packed, strict=True):
            assert k1 == k2 and isinstance(wire, PackedFrames)
            np.testing.assert_array_equal(wire.unpack().obs, want.obs)
            np.testing.assert_array_equal(wire.acts, want.acts)
    assert want.obs[:, ..., :3].any()
    # MuJoCo observations are not frame stacks: they come as they are
    hopper = RolloutWorker(EnvSpec("Hopper-v5"), 0, 0, 1, frame_stack=True)
    hopper.set_policy(RandomPolicy(hopper.spaces()[1]))
    ((_, piece),) = hopper.sample(5, pack_frames=True)
    assert isinstance(piece, Trajectory) and piece.obs.shape == (6, 11)
