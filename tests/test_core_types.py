import numpy as np
import pytest

from rlkit.core import Comparison, ReplayBuffer, Segment, SegmentPool, Trajectory


def _segment(length: int = 5, ret: float = 1.0) -> Segment:
    return Segment(
        obs=np.zeros((length, 3)),
        acts=np.zeros((length, 2)),
        true_rews=np.full(length, ret / length),
    )


def test_trajectory_checks_lengths():
    with pytest.raises(ValueError, match="len\\(obs\\) == len\\(acts\\) \\+ 1"):
        Trajectory(obs=np.zeros((3, 2)), acts=np.zeros((3, 1)), rews=np.zeros(3), terminal=False)
    traj = Trajectory(obs=np.zeros((4, 2)), acts=np.zeros((3, 1)), rews=np.zeros(3), terminal=True)
    assert len(traj) == 3


def test_segment_checks_shapes_and_return():
    with pytest.raises(ValueError, match="true_rews"):
        Segment(obs=np.zeros((5, 3)), acts=np.zeros((5, 2)), true_rews=np.zeros(4))
    with pytest.raises(ValueError, match="render_state"):
        Segment(obs=np.zeros((5, 3)), acts=np.zeros((5, 2)), true_rews=np.zeros(5),
                render_state=np.zeros((4, 7)))  # fmt: skip
    assert _segment(ret=2.5).true_return == pytest.approx(2.5)


def test_comparison_accepts_only_valid_mu():
    assert Comparison(1, 2, (1, 0)).mu == (1.0, 0.0)
    assert Comparison(1, 2, (0.5, 0.5)).mu == (0.5, 0.5)
    with pytest.raises(ValueError, match="mu must be one of"):
        Comparison(1, 2, (0.3, 0.7))
    with pytest.raises(ValueError, match="two different"):
        Comparison(3, 3, (1, 0))
    # a third item, a string of digits, a number: not a distribution over two segments
    for mu in [(1, 0, 0.5), "10", 1, (1,)]:
        with pytest.raises(ValueError, match="mu must be one of"):
            Comparison(1, 2, mu)
    # ids are the pool's: ints >= 0 (numpy's too, kept as int)
    assert Comparison(np.int64(4), 2, (0, 1)).segment_a == 4
    assert type(Comparison(np.int64(4), 2, (0, 1)).segment_a) is int
    for bad in [0.5, "0", -1, True, None]:
        with pytest.raises(ValueError, match="segment_a must be a segment id"):
            Comparison(bad, 2, (1, 0))


def test_trajectory_ends_are_bools():
    """``terminal="no"`` is truthy: it would be taken for an episode's terminal state."""
    obs, acts, rews = np.zeros((4, 2)), np.zeros((3, 1)), np.zeros(3)
    assert Trajectory(obs, acts, rews, terminal=np.bool_(True)).terminal
    for name, value in [("terminal", "no"), ("terminal", 1), ("truncated", None)]:
        kwargs = {"terminal": False, name: value}
        with pytest.raises(ValueError, match=f"{name} must be a bool"):
            Trajectory(obs, acts, rews, **kwargs)


def test_a_pool_loaded_from_a_bigger_one_keeps_its_newest_capacity():
    big = SegmentPool(capacity=5)
    for _ in range(5):
        big.add(_segment())
    small = SegmentPool(capacity=3)
    small.load_state_dict(big.state_dict())
    assert small.ids().tolist() == [2, 3, 4] and small.next_id == 5


def test_a_pool_refuses_a_segment_of_another_length_or_space_and_stays_as_it_was():
    pool = SegmentPool(capacity=3)
    pool.add(_segment(length=5))
    with pytest.raises(ValueError, match=r"obs \(4, 3\) and acts \(4, 2\) does not fit a pool"):
        pool.add(_segment(length=4))
    wider = Segment(obs=np.zeros((5, 4)), acts=np.zeros((5, 2)), true_rews=np.zeros(5))
    with pytest.raises(ValueError, match="same length and spaces"):
        pool.add(wider)
    assert pool.ids().tolist() == [0] and pool.next_id == 1
    assert pool.add(_segment(length=5)).id == 1


def test_segment_pool_evicts_oldest_and_samples_distinct_pairs():
    pool = SegmentPool(capacity=4)
    ids = [pool.add(_segment()).id for _ in range(6)]
    assert ids == [0, 1, 2, 3, 4, 5]
    assert list(pool.ids()) == [2, 3, 4, 5]
    pairs = pool.sample_pairs(200, np.random.default_rng(0))
    assert all(a != b and a in pool and b in pool for a, b in pairs)
    # every id shows up on both sides
    assert {a for a, _ in pairs} == {2, 3, 4, 5} == {b for _, b in pairs}
    # a checkpoint's copy: the same segments in the same order, ids going on from there
    restored = SegmentPool(capacity=4, first_id=3)
    restored.add(_segment())
    restored.load_state_dict(pool.state_dict())
    assert list(restored.ids()) == [2, 3, 4, 5] and restored[4] is pool[4]
    assert restored.sample_pairs(50, np.random.default_rng(1)) == pool.sample_pairs(
        50, np.random.default_rng(1)
    )
    assert restored.add(_segment()).id == 6 and list(restored.ids()) == [3, 4, 5, 6]
    # ... unless the store already holds later ids (a crash after the checkpoint)
    later = SegmentPool(capacity=4, first_id=9)
    later.load_state_dict(pool.state_dict())
    assert later.add(_segment()).id == 9


def test_replay_buffer_wraps_and_round_trips():
    buf = ReplayBuffer(5, obs_shape=(2,), extras={"duration": ((), np.int64)})
    for i in range(3):
        n = 2
        buf.add(
            obs=np.full((n, 2), i), acts=np.arange(n), rews=np.full(n, float(i)),
            next_obs=np.full((n, 2), i + 1), terminated=np.zeros(n, bool), duration=np.full(n, i),
        )  # fmt: skip
    assert len(buf) == 5 and buf.pos == 1
    # slot 0 was overwritten by the last batch (i == 2)
    assert buf.rews[0] == 2.0 and buf.extras["duration"][0] == 2
    batch = buf.sample(64, np.random.default_rng(0))
    assert batch.obs.shape == (64, 2)
    np.testing.assert_array_equal(batch.next_obs, batch.obs + 1)
    clone = ReplayBuffer(5, obs_shape=(2,), extras={"duration": ((), np.int64)})
    clone.load_state_dict(buf.state_dict())
    np.testing.assert_array_equal(clone.rews, buf.rews)
    assert clone.pos == buf.pos
