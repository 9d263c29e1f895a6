"""FragmentRecorder against a step-by-step reference: pieces, their order, episode ends,
time-limit cuts, render states, for small observations (stacked once per chunk) and large
ones (gathered per piece)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.render_state import RENDER_STATE_KEY
from rlkit.distributed.fragments import _STACK_ALL_BYTES, FragmentRecorder


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
                out.append((k, piece, not infos[k]["TimeLimit.truncated"]))
                state = reset_infos[k][RENDER_STATE_KEY]
                cur[k] = {"obs": [obs[k]], "acts": [], "rews": [], "states": [state]}
            else:
                piece["obs"].append(obs[k])
                piece["states"].append(infos[k][RENDER_STATE_KEY])
        if t + 1 in flush_after:
            for k in range(n):
                if cur[k]["acts"]:
                    out.append((k, cur[k], False))
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
    assert [k for k, _ in got] == [k for k, _, _ in want]
    for (_, traj), (_, piece, terminal) in zip(got, want, strict=True):
        assert traj.terminal == terminal
        assert traj.obs.dtype == dtype and traj.obs.flags.c_contiguous
        np.testing.assert_array_equal(traj.obs, np.stack(piece["obs"]))
        np.testing.assert_array_equal(traj.acts, np.stack(piece["acts"]))
        np.testing.assert_array_equal(traj.rews, np.asarray(piece["rews"], dtype=np.float32))
        np.testing.assert_array_equal(traj.render_states, np.stack(piece["states"]))
    total = sum(len(traj) for _, traj in got)
    assert total == n * steps
