"""The reward learner on a thread and in a child process train identically; a dead or
failing child process stops the loop with one line, never a hang."""

import dataclasses
import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from processes import alive

from rlkit.core import Comparison, Segment
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.learner import (
    LearnerProcessError,
    ProcessLearner,
    ThreadLearner,
    make_learner,
)
from rlkit.rewards.trainer import TrainerConfig

W = np.array([1.0, -2.0, 0.5, 0.0])
CONFIG = TrainerConfig(lr=3e-3, batch_size=16)


def segments(n: int, seed: int = 0) -> list[Segment]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        obs = rng.normal(size=(10, 4))
        out.append(Segment(obs=obs, acts=rng.normal(size=(10, 1)), true_rews=obs @ W, id=i))
    return out


def comparisons(segs: list[Segment], n: int, seed: int) -> list[Comparison]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.choice(len(segs), size=2, replace=False)
        mu = (1, 0) if segs[a].true_return > segs[b].true_return else (0, 1)
        out.append(Comparison(int(a), int(b), mu))
    return out


def ensemble(normalize_inputs: bool = False) -> RewardEnsemble:
    spaces = gym.spaces.Box(-9, 9, (4,)), gym.spaces.Box(-9, 9, (1,))
    return RewardEnsemble(*spaces, 3, seed=0, normalize_inputs=normalize_inputs)


def feed(learner, segs, comps) -> None:
    for c in comps:
        learner.add(c, segs[c.segment_a], segs[c.segment_b])


@pytest.mark.parametrize("normalize_inputs", [False, True], ids=["raw", "normalized-inputs"])
def test_process_learner_trains_exactly_as_the_thread_learner_and_resumes(normalize_inputs):
    segs = segments(50)
    thread = ThreadLearner(ensemble(normalize_inputs), CONFIG, np.random.default_rng(7))
    proc = ProcessLearner(ensemble(normalize_inputs), CONFIG, np.random.default_rng(7))
    try:
        results = []
        for learner in (thread, proc):
            feed(learner, segs, comparisons(segs, 40, seed=1))
            learner.start(epochs=5)
            first = learner.finish()
            feed(learner, segs, comparisons(segs, 30, seed=2))
            learner.start()
            results.append((first, learner.finish(), learner.state_dict(), learner.evaluate()))
        (t_first, t_second, t_state, t_eval), (p_first, p_second, p_state, p_eval) = results
        assert t_first == p_first and t_second == p_second and t_eval == p_eval
        assert t_second["charts/reward_val_accuracy"] > 0.7  # it learned something
        assert len(proc) == len(thread) == 70
        for name, value in thread.ensemble.state_dict().items():
            assert torch.equal(value, proc.ensemble.state_dict()[name]), name
        if normalize_inputs:  # the child's input statistics came back with its weights
            assert torch.all(proc.ensemble.in_mean != 0) and torch.all(proc.ensemble.in_std != 1)
        assert t_state["is_val"] == p_state["is_val"] and t_state["l2"] == p_state["l2"]
        np.testing.assert_array_equal(t_state["counts"], p_state["counts"])

        # A resume: a fresh child gets the weights, the labels again, then the trainer state.
        resumed = ProcessLearner(ensemble(normalize_inputs), CONFIG, np.random.default_rng(99))
        try:
            resumed.load_ensemble(proc.ensemble.state_dict())
            feed(resumed, segs, comparisons(segs, 40, seed=1) + comparisons(segs, 30, seed=2))
            resumed.load_state_dict(p_state)
            assert resumed.evaluate() == p_eval
        finally:
            resumed.close()
    finally:
        thread.close()
        proc.close()


def test_a_killed_learner_process_stops_the_loop_with_one_line():
    segs = segments(20)
    proc = ProcessLearner(ensemble(), CONFIG, np.random.default_rng(0))
    try:
        feed(proc, segs, comparisons(segs, 10, seed=0))
        proc.start(epochs=200)
        os.kill(proc._process.pid, signal.SIGKILL)
        with pytest.raises(LearnerProcessError, match=r"died \(exit code -9\).*--resume") as err:
            proc.finish()
        assert "\n" not in str(err.value) and err.value.exit_code == 1
    finally:
        proc.close()


def test_an_error_in_the_learner_process_comes_back_as_one_line():
    segs = segments(4)
    odd = Segment(obs=np.zeros((10, 5)), acts=np.zeros((10, 1)), true_rews=np.zeros(10), id=9)
    proc = ProcessLearner(ensemble(), CONFIG, np.random.default_rng(0))
    try:
        proc.add(Comparison(0, 1, (1, 0)), segs[0], segs[1])
        proc.add(Comparison(0, 9, (1, 0)), segs[0], odd)  # 5 features, not 4
        proc.start()
        with pytest.raises(LearnerProcessError, match="failed: ValueError: segment 9 has shape"):
            proc.finish()
    finally:
        proc.close()


def test_mean_teacher_training_stays_on_a_thread():
    cfg = TrainerConfig(mean_teacher_weight=0.1)

    def unlabeled(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(size=(n, 4)), rng.normal(size=(n, 1))

    learner = make_learner("process", ensemble(), cfg, np.random.default_rng(0), unlabeled)
    try:
        assert isinstance(learner, ThreadLearner)
    finally:
        learner.close()


def test_close_during_training_does_not_wait_for_it():
    segs = segments(20)
    proc = ProcessLearner(ensemble(), CONFIG, np.random.default_rng(0))
    feed(proc, segs, comparisons(segs, 10, seed=0))
    proc.start(epochs=100_000)  # minutes of training
    t0 = time.perf_counter()
    proc.close()
    assert time.perf_counter() - t0 < 5
    assert not proc._process.is_alive()


_ORPHAN = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_rewards_learner import CONFIG, comparisons, ensemble, feed, segments
from rlkit.rewards.learner import ProcessLearner
segs = segments(20)
proc = ProcessLearner(ensemble(), CONFIG, np.random.default_rng(0))
feed(proc, segs, comparisons(segs, 10, seed=0))
proc.start(epochs=100_000)  # minutes of training
print(proc._process.pid, flush=True)
sys.stdin.read()  # until killed
"""


def test_a_learner_whose_loop_is_killed_at_once_stops_too():
    """kill -9 of the loop's process (or its second Ctrl-C) mid-training: the learner child,
    which ignores SIGTERM and reads its pipe only between jobs, is killed with it instead of
    training on alone."""
    import subprocess
    import sys
    from pathlib import Path

    code = _ORPHAN.format(tests=str(Path(__file__).parent))
    loop = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(loop.stdout.readline())
        time.sleep(0.5)
        assert alive(child)  # training
        loop.kill()
        loop.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        if loop.poll() is None:
            loop.kill()


def test_a_diverging_reward_model_stops_the_run_with_one_line_and_no_traceback_file(
    tmp_path, monkeypatch
):
    """A learning rate far too high makes the loss nan: the learner says so in one line
    naming the setting (a UserError: no traceback file), instead of scoring queries with nan."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where a traceback file would go
    segs = segments(20)
    cfg = dataclasses.replace(CONFIG, lr=1e30)
    proc = ProcessLearner(ensemble(), cfg, np.random.default_rng(0))
    try:
        feed(proc, segs, comparisons(segs, 10, seed=0))
        proc.start()
        with pytest.raises(LearnerProcessError) as err:
            proc.finish()
    finally:
        proc.close()
    message = str(err.value)
    assert "failed: RewardTrainingDiverged: the reward model's loss became nan" in message
    assert "--trainer.lr 1e+30 is too high" in message and "traceback" not in message
    assert "\n" not in message and not list(tmp_path.glob("rlkit-error-*"))
    # an unforeseen error, by contrast, names the file that keeps its traceback
    odd = Segment(obs=np.zeros((10, 5)), acts=np.zeros((10, 1)), true_rews=np.zeros(10), id=99)
    proc = ProcessLearner(ensemble(), CONFIG, np.random.default_rng(0))
    try:
        proc.add(Comparison(0, 99, (1, 0)), segs[0], odd)
        proc.start()
        with pytest.raises(LearnerProcessError, match=r"\(traceback in .*rlkit-error-.*\.log\)"):
            proc.finish()
    finally:
        proc.close()
    (log,) = tmp_path.glob("rlkit-error-*.log")
    assert "Traceback (most recent call last)" in log.read_text()


@pytest.mark.parametrize("kind", [ThreadLearner, ProcessLearner])
def test_a_second_start_or_a_closed_learner_is_a_clear_runtime_error(kind):
    """start(); start() trained twice on a thread (the first round's metrics lost) and was a
    bare AssertionError in a process; both refuse it alike now, and both keep working after
    finish(). A closed process learner raised "OSError: handle is closed"."""
    segs = segments(20)
    learner = kind(ensemble(), CONFIG, np.random.default_rng(0))
    try:
        feed(learner, segs, comparisons(segs, 10, seed=0))
        learner.start(epochs=1)
        with pytest.raises(RuntimeError, match=r"^reward training already started; call finish"):
            learner.start(epochs=1)
        assert "charts/reward_val_accuracy" in learner.finish()
        learner.start(epochs=1)
        assert learner.finish() and learner.finish() == {}
    finally:
        learner.close()
    learner.close()
    calls = [learner.start] + ([learner.evaluate, learner.state_dict] * (kind is ProcessLearner))
    for call in calls:
        with pytest.raises(RuntimeError, match="^the reward learner is closed$"):
            call()
