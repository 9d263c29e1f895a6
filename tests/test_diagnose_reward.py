"""benchmarks/diagnose_reward.py: its segment cutting and comparisons by hand, and a run's
policy judged against itself (the same rollouts on both sides, so neither side is preferred
more often than the other) with the true return that the run's own evaluation gives."""

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from rlkit.core.rundir import save_config
from rlkit.loops.evaluation import evaluate_policy_true
from rlkit.loops.preference import PreferenceLoop
from tests.benchmark_scripts import load_benchmark
from tests.prefs_tiny import tiny_hopper

diagnose = load_benchmark("diagnose_reward")


def test_segments_are_whole_windows_inside_one_episode():
    data = {"episode": np.array([0] * 10 + [1] * 7)}
    assert diagnose.segments(data, 3).tolist() == [0, 3, 6, 10, 13]
    assert diagnose.segments(data, 8).tolist() == [0]  # episode 1 (7 steps) is too short


def test_rank_corr_and_the_shares_of_pairs_preferring_the_other_policy():
    x = np.array([0.5, 2.0, -1.0, 3.0])
    assert diagnose.rank_corr(x, np.exp(x)) == pytest.approx(1.0)
    assert diagnose.rank_corr(x, -x) == pytest.approx(-1.0)
    judged = {
        "run": {"seg_pred": np.array([1.0, 3.0]), "seg_true": np.array([10.0, 30.0])},
        "other": {"seg_pred": np.array([2.0, 4.0, 0.0]), "seg_true": np.array([5.0, 40.0, 20.0])},
    }
    out = diagnose.compare(judged)
    # pairs (run i, other j) with other > run: pred 1<2, 1<4, 3<4 -> 3 of 6; true 10<40,
    # 10<20, 30<40 -> 3 of 6
    assert out["pred_prefers_other"] == out["true_prefers_other"] == 0.5
    judged["other"]["seg_pred"] = np.array([0.0, 0.5, 0.9])  # below every run segment
    assert diagnose.compare(judged)["pred_prefers_other"] == 0.0


def test_judge_sums_the_learned_reward_over_each_segment():
    class Linear:
        def reward(self, obs: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
            return obs[:, 0] + acts[:, 0]

    data = {"obs": np.arange(6.0)[:, None], "acts": np.ones((6, 1)),
            "true": np.arange(6.0) * 10, "episode": np.zeros(6, dtype=int)}  # fmt: skip
    j = diagnose.judge(Linear(), data, 3)
    assert j["seg_pred"].tolist() == [6.0, 15.0]  # (0+1)+(1+1)+(2+1), (3+1)+(4+1)+(5+1)
    assert j["seg_true"].tolist() == [30.0, 120.0]
    assert j["learned_zero_action"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_fit_terms_recovers_the_weights_of_each_reward_term():
    rng = np.random.default_rng(0)
    terms = {"reward_forward": rng.normal(size=200), "reward_ctrl": -rng.random(200)}
    learned = 2.0 * terms["reward_forward"] + 0.5 * terms["reward_ctrl"] + 1.0
    fit = diagnose.fit_terms(learned, terms)
    assert fit == {"coef": {"reward_ctrl": 0.5, "reward_forward": 2.0}, "intercept": 1.0, "r2": 1.0}
    noisy = diagnose.fit_terms(learned + rng.normal(size=200), terms)
    assert 0.5 < noisy["r2"] < 0.95  # the forward term's variance is 4 against the noise's 1
    assert diagnose.fit_terms(learned, {}) is None
    assert diagnose.fit_terms(np.ones(200), terms)["r2"] is None  # nothing to explain


def run_main(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["diagnose_reward.py", *argv])
    try:
        diagnose.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_run_judged_against_its_own_policy(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = dataclasses.replace(tiny_hopper(steps=512, labels=20), run_dir=run_dir)
    save_config(run_dir, cfg)
    loop = PreferenceLoop(cfg, run_dir)
    try:
        loop.run()
        other = tmp_path / "same_policy.zip"
        loop.agent.save(other)
        expected = evaluate_policy_true(loop.agent, cfg, 1, 1, seed_offset=123 - cfg.seed)
    finally:
        loop.close()
    csv = [f for f in loop.agent.logger.output_formats if hasattr(f, "file")]
    assert csv and all(f.file.closed for f in csv)  # close() closed sb3/progress.csv
    code, out, _ = run_main(
        monkeypatch, capsys, str(run_dir), "--other", str(other), "--episodes", "1",
        "--seed", "123", "--retrain", "2048",
    )  # fmt: skip
    assert code == 0
    row = json.loads(out.strip().splitlines()[-1])
    assert row["seg_len"] == 25 and row["run"]["segments"] == 40  # 0.2 s of 8 ms; 1000 steps
    # The same policy on the same seed: the same rollouts, so of the 40 x 40 (run, other)
    # pairs at most the 780 under the diagonal prefer the other side (fewer where a fallen
    # hopper's segments tie), for the ensemble as for the truth.
    assert row["run"] == row["other"]
    assert 0.25 < row["pred_prefers_other"] <= 780 / 1600
    assert 0.25 < row["true_prefers_other"] <= 780 / 1600
    assert row["run"]["true_return"] == round(expected, 1)
    assert {"corr_learned_true", "corr_learned_reward_forward", "action_std"} <= row["run"].keys()
    assert -1 <= row["segment_rank_corr"] <= 1
    assert isinstance(row["retrain_true_return"], float)
    assert [step for step, _ in row["retrain_curve"]] == [2048]  # episodes end at 1000 steps
    fit = row["run"]["fit_terms"]
    assert {"reward_forward", "reward_ctrl", "reward_survive"} <= fit["coef"].keys()
    assert row["ensemble_at"] == row["checkpoint"] != "step_0000000000"

    # The pretrained ensemble (the step-0 checkpoint) judges the same rollouts differently.
    first = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))[0]
    assert first == "step_0000000000"
    code, out, _ = run_main(
        monkeypatch, capsys, str(run_dir), "--episodes", "1", "--seed", "123",
        "--ensemble-at", first,
    )  # fmt: skip
    early = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and early["ensemble_at"] == first and early["checkpoint"] == row["checkpoint"]
    assert early["run"]["true_return"] == row["run"]["true_return"]  # the latest policy still
    assert early["run"]["learned_reward_per_step"] != row["run"]["learned_reward_per_step"]

    code, _, err = run_main(monkeypatch, capsys, str(run_dir), "--ensemble-at", "step_9")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--ensemble-at step_9: no such checkpoint" in err and first in err


def test_a_missing_policy_or_run_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, str(tmp_path), "--other", str(tmp_path / "x.zip"))
    assert code == 2 and "no such policy file" in err
    assert len(err.strip().splitlines()) == 1
