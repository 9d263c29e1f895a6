"""ProcessBlocksVecEnv: envs stepped in helper processes, a block of envs each, with the
observations in shared memory, exactly as the same envs stepped in this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from processes import alive

from envs.env_state import set_vec_env_state, vec_env_state
from envs.factory import EnvSpec, make_env
from envs.process_blocks import (
    EnvProcessError,
    EnvProcessLostError,
    ProcessBlocksVecEnv,
    contiguous_blocks,
)
from envs.shallow_dummy_vec_env import ShallowDummyVecEnv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _same_steps(a, b, actions: np.ndarray) -> int:
    """Step both alike; returns how many episode ends were compared."""
    np.testing.assert_array_equal(a.reset(), b.reset())
    _same_infos(a.reset_infos, b.reset_infos)
    ends = 0
    for acts in actions:
        got, want = a.step(acts), b.step(acts)
        for x, y in zip(got[:3], want[:3], strict=True):
            np.testing.assert_array_equal(x, y)
        _same_infos(got[3], want[3])
        ends += sum("terminal_observation" in info for info in want[3])
        _same_infos(a.reset_infos, b.reset_infos)
    return ends


def _same_infos(got: list[dict], want: list[dict]) -> None:
    """Equal info dicts, arrays (render states, terminal observations) compared as arrays."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key, value in w.items():
            if key == "episode":  # Monitor's "t" is wall-clock time
                g_ep, w_ep = ({k: e[k] for k in ("r", "l")} for e in (g[key], value))
                assert g_ep == w_ep
            else:
                np.testing.assert_equal(g[key], value)


def test_blocks_are_contiguous_and_even():
    assert contiguous_blocks(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert contiguous_blocks(2, 2) == [range(0, 1), range(1, 2)]


@pytest.mark.parametrize(
    ("env_id", "n_envs", "n_processes", "steps"),
    [("Hopper-v5", 5, 2, 250), ("ALE/Pong-v5", 3, 3, 60)],
)
def test_steps_exactly_as_the_same_envs_in_this_process(env_id, n_envs, n_processes, steps):
    """Same observations (shared memory), rewards, dones, infos (render states, terminal
    observations), reset infos, from envs ``first_rank ..`` seeded as make_env seeds them."""
    spec = EnvSpec(env_id, render_state=True, terminate_when_unhealthy=None)
    here = ShallowDummyVecEnv([make_env(spec, 4, 2 + k) for k in range(n_envs)])
    here.seed(4 + 2)
    there = ProcessBlocksVecEnv(spec, 4, 2, n_envs, n_processes)
    there.seed(4 + 2)
    try:
        assert [len(b) for b in there.blocks] == [
            len(b) for b in contiguous_blocks(n_envs, n_processes)
        ]
        assert there.observation_space == here.observation_space
        rng = np.random.default_rng(0)
        actions = np.stack(
            [[here.action_space.sample() for _ in range(n_envs)] for _ in range(steps)]
        )
        if env_id == "Hopper-v5":  # big random torques: Hopper falls and ends episodes
            actions = rng.uniform(-1, 1, size=actions.shape).astype(np.float32)
        ends = _same_steps(there, here, actions)
        assert ends > 0 or env_id.startswith("ALE")
        # per-env calls reach the right env in the right process
        assert there.get_attr("spec", [4 % n_envs, 0])[0].id == env_id
        there.set_attr("flag", 7, [n_envs - 1])
        assert there.get_attr("flag", [n_envs - 1]) == [7]
        ranks = there.env_method("get_wrapper_attr", "np_random_seed")
        assert ranks == here.env_method("get_wrapper_attr", "np_random_seed")
        assert there.env_is_wrapped(type(here.envs[0]), [0]) == [True]
    finally:
        there.close()
        here.close()


def _simulators(venv: ProcessBlocksVecEnv) -> list[np.ndarray]:
    """Each env's MuJoCo state, as the helpers snapshot it."""
    blocks = venv.get_env_state()["blocks"]  # type: ignore[index]
    return [env["simulator"][1] for block in blocks for env in block["envs"]]


def test_a_snapshot_put_back_steps_on_as_it_would_have():
    spec = EnvSpec("Hopper-v5")
    venv = ProcessBlocksVecEnv(spec, 0, 0, 4, 2)
    try:
        venv.reset()
        rng = np.random.default_rng(1)
        for _ in range(30):
            venv.step(rng.uniform(-1, 1, size=(4, 3)).astype(np.float32))
        state = vec_env_state(venv)
        assert state is not None and [len(b["envs"]) for b in state["remote"]["blocks"]] == [2, 2]
        later = rng.uniform(-1, 1, size=(40, 4, 3)).astype(np.float32)
        went_on = [venv.step(a) for a in later]
        set_vec_env_state(venv, state)
        again = [venv.step(a) for a in later]
        for x, y in zip(went_on, again, strict=True):
            for p, q in zip(x[:3], y[:3], strict=True):
                np.testing.assert_array_equal(p, q)
        # a state of other blocks is refused before anything changes
        blocks = state["remote"]["blocks"]
        other = {**state, "remote": {**state["remote"], "blocks": [blocks[0]]}}
        before = _simulators(venv)
        with pytest.raises(ValueError, match=r"env blocks of \[2\], this VecEnv's are \[2, 2\]"):
            set_vec_env_state(venv, other)
        for a, b in zip(before, _simulators(venv), strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        venv.close()


def test_an_env_error_is_raised_here_with_its_message_and_the_envs_go_on():
    venv = ProcessBlocksVecEnv(EnvSpec("Hopper-v5"), 0, 0, 2, 2)
    try:
        venv.reset()
        with pytest.raises(EnvProcessError, match="env process 0: AttributeError: .*no_such"):
            venv.env_method("no_such_method", indices=[0])
        obs, *_ = venv.step(np.zeros((2, 3), np.float32))
        assert obs.shape == (2, 11)
    finally:
        venv.close()


def test_a_dead_env_process_is_named_and_reported_once_then_every_call_fails():
    lost: list[str] = []
    venv = ProcessBlocksVecEnv(EnvSpec("Hopper-v5"), 0, 0, 3, 2, on_lost=lost.append)
    pids = venv.pids()
    try:
        venv.reset()
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(EnvProcessLostError, match=rf"env process 1 \(pid {pids[1]}\) ended"):
            venv.step(np.zeros((3, 3), np.float32))
        assert len(lost) == 1 and "killed by signal 9" in lost[0]
        with pytest.raises(EnvProcessLostError):
            venv.reset()
        assert len(lost) == 1
    finally:
        venv.close()
    assert _wait_gone(pids)


def test_close_ends_the_helpers_and_bad_settings_are_refused():
    venv = ProcessBlocksVecEnv(EnvSpec("Hopper-v5"), 0, 0, 2, 2)
    pids = venv.pids()
    venv.close()
    venv.close()
    assert _wait_gone(pids, timeout=1.0)
    with pytest.raises(ValueError, match=r"n_processes must be in 1..2"):
        ProcessBlocksVecEnv(EnvSpec("Hopper-v5"), 0, 0, 2, 3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_the_helpers_end_when_their_parent_is_killed():
    """A SIGKILLed Ray worker leaves no env processes stepping (nor waiting) behind: one
    helper is stopped (SIGSTOP) first, so that it cannot see its socket close, as a helper
    in a long step would not; only the kernel's parent-death signal ends it."""
    script = textwrap.dedent(
        """
        import time
        from envs.factory import EnvSpec
        from envs.process_blocks import ProcessBlocksVecEnv
        venv = ProcessBlocksVecEnv(EnvSpec("Hopper-v5"), 0, 0, 2, 2)
        venv.reset()
        print(*venv.pids(), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        os.kill(pids[0], signal.SIGSTOP)
    finally:
        parent.kill()
        parent.wait()
    try:
        assert _wait_gone(pids)
    finally:
        for pid in filter(alive, pids):  # none left behind, stopped, if it fails
            os.kill(pid, signal.SIGKILL)


def test_blocks_step_on_their_own_and_a_waiting_step_is_drained_before_other_calls():
    """The pipelined sampling's calls: a block's step sent and received apart from the
    others' gives what the whole step gives; a call meanwhile first waits for it."""
    spec = EnvSpec("Hopper-v5")
    here = ShallowDummyVecEnv([make_env(spec, 0, k) for k in range(3)])
    here.seed(0)
    there = ProcessBlocksVecEnv(spec, 0, 0, 3, 2)
    there.seed(0)
    try:
        np.testing.assert_array_equal(there.reset(), here.reset())
        acts = np.random.default_rng(2).uniform(-1, 1, size=(3, 3)).astype(np.float32)
        there.send_block(1, acts[2:])
        there.send_block(0, acts[:2])
        with pytest.raises(RuntimeError, match="block 0 is already stepping"):
            there.send_block(0, acts[:2])
        second, first = there.recv_block(1), there.recv_block(0)
        want = here.step(acts)
        for k in range(3):
            np.testing.assert_array_equal(np.concatenate([first[k], second[k]]), want[k])
        with pytest.raises(RuntimeError, match="block 1 is not stepping"):
            there.recv_block(1)
        there.send_block(0, acts[:2])
        assert there.get_attr("spec", [0])[0].id == "Hopper-v5"  # the step was drained first
        obs, *_ = there.step(acts)  # and the whole VecEnv steps on
        assert obs.shape == (3, 11)
    finally:
        there.close()
        here.close()
