import numpy as np
import pytest

from rlkit.core import Segment
from rlkit.rewards.teachers import (
    QueryRequest,
    SyntheticTeacher,
    SyntheticTeacherAdapter,
    TeacherConfig,
)


def seg(rews) -> Segment:
    rews = np.asarray(rews, dtype=np.float64)
    return Segment(obs=np.zeros((len(rews), 1)), acts=np.zeros((len(rews), 1)), true_rews=rews)


def answers(cfg: TeacherConfig, a: Segment, b: Segment, n: int = 4000) -> dict[str, float]:
    t = SyntheticTeacher(cfg, np.random.default_rng(0))
    out = [t.answer(a, b) for _ in range(n)]
    return {c: out.count(c) / n for c in ("left", "right", "equal", "skip")}


def test_rational_prefers_higher_return_and_ties_are_equal():
    t = SyntheticTeacher(TeacherConfig(), np.random.default_rng(0))
    assert t.answer(seg([1, 1]), seg([0, 1])) == "left"
    assert t.answer(seg([0, 0]), seg([0, 1])) == "right"
    assert t.answer(seg([1, 0]), seg([0, 1])) == "equal"


def test_bradley_terry_frequency_matches_sigmoid():
    a, b = seg([1.0, 0.5]), seg([0.5, 0.5])  # gap 0.5
    freq = answers(TeacherConfig(noise="bradley_terry", beta=2.0), a, b)
    assert freq["left"] == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.02)


def test_mistake_flips_with_probability_eps():
    freq = answers(TeacherConfig(noise="mistake", eps=0.2), seg([3.0]), seg([1.0]))
    assert freq["right"] == pytest.approx(0.2, abs=0.02)
    assert freq["left"] == pytest.approx(0.8, abs=0.02)


def test_skip_only_when_both_below_threshold():
    cfg = TeacherConfig(noise="skip", skip_threshold=1.0)
    assert answers(cfg, seg([0.2]), seg([0.5]), 10)["skip"] == 1.0
    assert answers(cfg, seg([2.0]), seg([0.5]), 10)["left"] == 1.0


def test_equal_within_threshold():
    cfg = TeacherConfig(noise="equal", equal_threshold=0.3)
    assert answers(cfg, seg([1.0]), seg([1.2]), 10)["equal"] == 1.0
    assert answers(cfg, seg([1.0]), seg([1.5]), 10)["right"] == 1.0


def test_myopic_weighs_the_end_of_the_clip():
    # Undiscounted, a is better (3 > 2); with gamma 0.5 the early reward of a barely counts.
    a, b = seg([3.0, 0.0, 0.0]), seg([0.0, 0.0, 2.0])
    assert answers(TeacherConfig(), a, b, 10)["left"] == 1.0
    assert answers(TeacherConfig(noise="myopic", gamma=0.5), a, b, 10)["right"] == 1.0


def test_teacher_is_seeded_and_needs_an_rng():
    cfg = TeacherConfig(noise="bradley_terry")
    a, b = seg([0.3]), seg([0.0])
    runs = [
        [SyntheticTeacher(cfg, np.random.default_rng(7)).answer(a, b) for _ in range(1)]
        for _ in range(2)
    ]
    t1, t2 = (SyntheticTeacher(cfg, np.random.default_rng(7)) for _ in range(2))
    assert [t1.answer(a, b) for _ in range(50)] == [t2.answer(a, b) for _ in range(50)]
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="explicit rng"):
        SyntheticTeacher(cfg, None)  # type: ignore[arg-type]


class _Sink:
    def __init__(self) -> None:
        self.labels: dict[int, tuple[str, str, str]] = {}

    def add_label(self, query_id: int, choice: str, labeler: str, source: str, **kwargs) -> int:
        assert query_id not in self.labels
        self.labels[query_id] = (choice, labeler, source)
        return len(self.labels)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_mixed_teacher_answers_its_share_of_queries_at_random_and_leaves_the_rest(share):
    # segments 0..19 with returns 0..19: the rational answer to (a, b) is "left" iff a > b
    segments = {i: seg([float(i)]) for i in range(20)}
    rng = np.random.default_rng(5)
    queries = [QueryRequest(q, *map(int, rng.choice(20, 2, replace=False))) for q in range(3000)]
    teacher = SyntheticTeacherAdapter(
        SyntheticTeacher(TeacherConfig(), np.random.default_rng(0)), share=share, name="mixed"
    )
    sink = _Sink()
    teacher.request(queries, segments, sink)
    # Binomial(3000, 0.3): sd 0.0084, so 0.03 is 3.6 sd
    assert len(sink.labels) / len(queries) == pytest.approx(share, abs=0.03)
    for q in queries:
        if q.query_id in sink.labels:
            want = "left" if q.segment_a > q.segment_b else "right"
            assert sink.labels[q.query_id] == (want, "mixed", "synthetic")
    if 0 < share < 1:  # the answered ones are spread over the queries, not the first ones
        answered = np.array(sorted(sink.labels))
        assert answered[0] < 30 and answered[-1] > 2970
        assert abs(np.mean(answered) - 1500) < 100
    with pytest.raises(ValueError, match="share"):
        SyntheticTeacherAdapter(teacher.teacher, share=1.5)
