import math

import pytest

from rlkit.core.errors import ConfigError
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.schedule import LabelSchedule


def test_mujoco_schedule_front_loads_a_quarter_and_spends_the_budget():
    s = LabelSchedule.for_kind("mujoco", 700, 1_000_000)
    assert s.target(0) == 175
    assert s.target(1_000_000) == 700
    assert s.target(2_000_000) == 700  # clamped
    # rate proportional to 2e6 / (T + 2e6): cumulative follows log(1 + T / 2e6)
    expected = 175 + 525 * math.log1p(0.5e6 / 2e6) / math.log1p(1e6 / 2e6)
    assert abs(s.target(500_000) - expected) <= 1
    counts = [s.target(t) for t in range(0, 1_000_001, 100_000)]
    increments = [b - a for a, b in zip(counts, counts[1:], strict=False)]
    assert all(x >= 0 for x in increments) and increments[0] > increments[-1]


def test_atari_schedule_starts_with_500():
    s = LabelSchedule.for_kind("atari", 5500, 10_000_000)
    assert s.target(0) == 500 and s.target(10_000_000) == 5500
    assert LabelSchedule.for_kind("atari", 100, 1000).target(0) == 100


def test_initial_labels_and_decay_override_the_papers_values():
    s = LabelSchedule.for_kind("mujoco", 700, 1_000_000, initial_labels=70, decay=1e9)
    assert s.target(0) == 70 and s.target(1_000_000) == 700
    # with c >> T the rate is constant: half the rest by half the steps
    assert abs(s.target(500_000) - (70 + 630 / 2)) <= 1
    assert LabelSchedule.for_kind("atari", 5500, 10**7, initial_labels=0).target(0) == 0


def test_schedule_settings_out_of_range_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"--initial-labels has an invalid value 701"):
        PrefsConfig(labels=700, initial_labels=701)
    with pytest.raises(ConfigError, match=r"--label-decay has an invalid value 0.0"):
        PrefsConfig(label_decay=0.0)
    assert PrefsConfig(labels=700, initial_labels=700).initial_labels == 700
