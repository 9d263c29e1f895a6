"""benchmarks/summarize_prefs.py: the per-env ratios BENCHMARKS.md reports, from result lines."""

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def summ():
    return load_benchmark("summarize_prefs")


def line(seed: int, learned: float, true: float, **fields) -> dict:
    row = {
        "bench": "prefs_vs_true_reward",
        "env": "Hopper-v5",
        "seed": seed,
        "steps": 1000,
        "prefs_args": "",
        "return_learned": learned,
        "return_true_reward": true,
        "return_learned_stochastic": learned / 2,
        "return_true_reward_stochastic": true,
        "train_return_learned": learned,
        "train_return_true_reward": true / 2,
        "versions": {"mujoco": "4.0.0"},
    }
    row.update(fields)
    return row


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    line(0, 1.0, 1.0),  # replaced by the later line for seed 0
    line(1, 300.0, 200.0),
    line(2, 100.0, 400.0),
    line(0, 600.0, 400.0),
    line(3, 5.0, 5.0, prefs_args="--labels 10"),  # another variant
    line(4, 5.0, 5.0, steps=2000),  # another budget
    {"bench": "other", "env": "Hopper-v5"},
]


def test_ratio_of_sums_median_and_the_other_evaluations(summ):
    found = summ.select(ROWS, 1000, {""})
    assert list(found) == ["Hopper-v5"] and sorted(found["Hopper-v5"]) == [0, 1, 2]
    out = summ.summarize(found["Hopper-v5"], draws=2000, seed=0)
    assert out["seeds"] == [0, 1, 2] and out["n"] == 3
    assert out["ratio"] == 1.0  # (600 + 300 + 100) / (400 + 200 + 400)
    assert out["ratio_stochastic"] == 0.5 and out["train_ratio"] == 2.0
    assert out["median_seed_ratio"] == 1.5  # of 1.5, 1.5, 0.25
    assert out["seeds_at_or_over_0.9"] == 2
    assert out["quantiles_10_50_90"] == {"learned": [140.0, 300.0, 540.0],
                                         "true_reward": [240.0, 400.0, 400.0]}  # fmt: skip
    # under half of TRPO's median (400): the learned side's 100, none of TRPO's (200 is not)
    assert out["share_under_half_true_median"] == {"learned": 0.333, "true_reward": 0.0}
    assert out["mean_learned"] == pytest.approx(1000 / 3, abs=0.05)
    lo, hi = out["bootstrap_90"]
    assert lo < 1.0 < hi and out["bootstrap_sd"] > 0
    # a line without the sampled-action fields drops out of that ratio only
    old = {k: v for k, v in line(5, 100.0, 100.0).items() if "stochastic" not in k}
    out = summ.summarize({**found["Hopper-v5"], 5: old}, draws=10, seed=0)
    assert out["ratio"] == 1.0 and out["ratio_stochastic"] == 0.5


def test_bootstrap_draws_resample_seeds(summ):
    learned, true = np.array([1.0, 3.0]), np.array([2.0, 2.0])
    boot = summ.bootstrap(learned, true, draws=4000, seed=1)
    # two seeds: both seed 0 (0.5), both seed 1 (1.5) or one of each (1.0), 1/4, 1/4, 1/2
    values, counts = np.unique(boot, return_counts=True)
    assert values.tolist() == [0.5, 1.0, 1.5]
    assert counts / 4000 == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    assert np.array_equal(boot, summ.bootstrap(learned, true, draws=4000, seed=1))  # seeded
    same = summ.bootstrap(np.array([2.0, 4.0]), np.array([1.0, 2.0]), draws=100, seed=0)
    assert np.allclose(same, 2.0)  # every seed at the same ratio: no spread


def test_cli_prints_one_line_per_env_and_notes_mixed_versions(summ, tmp_path, capsys):
    rows = [*ROWS, line(7, 10.0, 10.0, env="Walker2d-v5", versions=None)]
    rows.append(line(8, 10.0, 10.0, env="Walker2d-v5"))
    assert summ.main([str(write(tmp_path / "r.jsonl", rows)), "--steps", "1000"]) == 0
    captured = capsys.readouterr()
    out = [json.loads(x) for x in captured.out.splitlines()]
    assert [o["env"] for o in out] == ["Hopper-v5", "Walker2d-v5"]
    assert out[0]["ratio"] == 1.0 and out[1]["ratio"] == 1.0
    assert captured.err.strip() == (
        "summarize_prefs: Walker2d-v5's lines were recorded with 2 different library version "
        "sets (or none): the sums mix set-ups"
    )


def test_against_compares_on_the_seeds_both_ran(summ, tmp_path, capsys):
    variant = "--initial-labels 70"
    rows = [
        line(0, 600.0, 400.0),
        line(1, 100.0, 200.0),
        line(2, 100.0, 400.0),  # only the reference ran seed 2
        line(0, 800.0, 400.0, prefs_args=variant),
        line(1, 200.0, 200.0, prefs_args=variant),
        line(3, 900.0, 100.0, prefs_args=variant),  # only the variant ran seed 3
    ]
    path = str(write(tmp_path / "r.jsonl", rows))
    assert summ.main([path, "--steps", "1000", f"--variant={variant}", "--against", ""]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1, 3]  # the variant's own summary keeps its every seed
    got = out["paired"]
    assert got["seeds"] == [0, 1] and got["variant_higher"] == 2
    # variant (800 + 200) / 600, reference (600 + 100) / 600
    assert got["ratio"] == pytest.approx(1.667, abs=1e-3) and got["ratio_against"] == 1.167
    assert got["difference"] == 0.5
    # every resample of the two seeds moves both sides alike (seed 0: 2.0 vs 1.5, seed 1: 1.0
    # vs 0.5, one of each: 1.5 vs 1.0), so drawing the same seeds for both leaves no spread
    assert got["difference_90"] == [0.5, 0.5]
    ref = summ.select(rows, 1000, {""})["Hopper-v5"]
    worse = {0: line(0, 500.0, 400.0), 1: line(1, 200.0, 200.0), 2: line(2, 50.0, 400.0)}
    got = summ.paired(worse, ref, draws=2000, seed=0)
    assert got["variant_higher"] == 1 and got["difference"] == -0.05  # 750 / 1000 - 800 / 1000
    lo, hi = got["difference_90"]
    assert lo < -0.05 < hi
    assert summ.paired({5: line(5, 1.0, 1.0)}, ref, draws=10, seed=0) is None


def test_unpaired_compares_each_sides_every_seed(summ):
    # every seed's learned return is 1.5x (variant) and 1.0x (reference) its TRPO one, so any
    # resample gives those ratios: no spread in the difference
    variant = {s: line(s, 1.5 * t, t) for s, t in ((0, 100.0), (1, 300.0), (7, 50.0))}
    ref = {s: line(s, t, t) for s, t in ((0, 200.0), (2, 400.0))}
    got = summ.unpaired(variant, ref, draws=500, seed=0)
    assert (got["n"], got["n_against"], got["ratio"], got["ratio_against"]) == (3, 2, 1.5, 1.0)
    assert got["difference"] == 0.5 and got["difference_90"] == [0.5, 0.5]
    spread = {0: line(0, 100.0, 100.0), 1: line(1, 900.0, 300.0), 2: line(2, 10.0, 100.0)}
    got = summ.unpaired(spread, ref, draws=2000, seed=0)  # (100 + 900 + 10) / 500 = 2.02
    lo, hi = got["difference_90"]
    assert got["difference"] == 1.02 and lo < 1.02 < hi and hi - lo > 0.5
    assert summ.unpaired({}, ref, draws=10, seed=0) is None


def test_against_from_takes_the_reference_lines_from_other_files(summ, tmp_path, capsys):
    current = write(tmp_path / "current.jsonl", [line(0, 300.0, 300.0), line(1, 100.0, 200.0)])
    older = write(tmp_path / "older.jsonl", [line(1, 400.0, 200.0), line(2, 100.0, 100.0)])
    assert summ.main([str(current), "--steps", "1000", "--against-from", str(older)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1] and out["ratio"] == 0.8  # 400 / 500
    assert out["paired"]["seeds"] == [1] and out["paired"]["ratio_against"] == 2.0
    assert out["unpaired"]["ratio_against"] == pytest.approx(5 / 3, abs=1e-3)  # 500 / 300
    assert out["unpaired"]["difference"] == pytest.approx(0.8 - 5 / 3, abs=1e-3)
    # the reference lines come from those files alone; none there with the flags is an error
    with pytest.raises(SystemExit) as exit_:
        summ.main([str(current), "--steps", "1000", "--against-from", str(older), "--against=--x"])
    assert exit_.value.code == 2
    assert "no bench_prefs line at 1000 steps with --against ['--x']" in capsys.readouterr().err


def test_l2_max_keeps_the_lines_that_ran_with_that_cap(summ, tmp_path, capsys):
    w = {"env": "Walker2d-v5"}
    rows = [
        line(0, 100.0, 100.0, **w),  # before 2026-12-04: no record, "" -> 1e-2
        line(1, 100.0, 100.0, prefs_args="--trainer.l2-max 3e-2", **w),
        line(2, 300.0, 100.0, prefs_args="--trainer.l2-max=0.03 --labels 700", **w),
        line(0, 200.0, 100.0, l2_max=0.03, **w),  # since: recorded; seed 0 again, at 3e-2
    ]
    assert [summ.l2_cap(r) for r in rows] == [1e-2, 3e-2, 3e-2, 3e-2]
    path = str(write(tmp_path / "r.jsonl", rows))
    variants = ["--variant", "", "--trainer.l2-max 3e-2", "--trainer.l2-max=0.03 --labels 700"]
    assert summ.main([path, "--steps", "1000", *variants, "--l2-max", "3e-2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1, 2] and out["ratio"] == 2.0 and out["l2_max"] == [0.03]
    # 1e-2: seed 0's earlier line only, though a later one for seed 0 exists (at 3e-2)
    assert summ.main([path, "--steps", "1000", "--l2-max", "0.01"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0] and out["ratio"] == 1.0 and out["l2_max"] == [0.01]
    # the reference lines are held to the cap too: seed 0 at 3e-2 (200), not the 1e-2 line
    # that comes after it in the file (which the last-line rule would otherwise take)
    current = str(write(tmp_path / "c.jsonl", [line(0, 50.0, 100.0, l2_max=0.03, **w)]))
    path = str(write(tmp_path / "a.jsonl", [*rows, line(0, 100.0, 100.0, **w)]))
    against = ["--against-from", path, "--against", *variants[1:]]
    assert summ.main([current, "--steps", "1000", "--l2-max", "3e-2", *against]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["paired"]["ratio_against"] == 2.0 and out["unpaired"]["n_against"] == 3
    with pytest.raises(SystemExit):
        summ.main(
            [
                current,
                "--steps",
                "1000",
                "--l2-max",
                "3e-2",
                "--against-from",
                path,
                "--against=--x",
            ]
        )
    assert capsys.readouterr().err.strip().endswith("with --against ['--x'] and L2 cap 0.03")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant=--nope"], "no bench_prefs line at 1000 steps with --variant ['--nope']"),
        (
            ["--l2-max", "0.5"],
            "no bench_prefs line at 1000 steps with --variant [''] and L2 cap 0.5",
        ),
        (["--draws", "0"], "--draws must be at least 1, got 0"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(summ, tmp_path, capsys, args, message):
    path = write(tmp_path / "r.jsonl", ROWS)
    with pytest.raises(SystemExit) as exit_:
        summ.main([str(path), "--steps", "1000", *args])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_a_broken_line_names_its_file_and_number(summ, tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n{oops\n")
    with pytest.raises(SystemExit):
        summ.main([str(path)])
    assert "r.jsonl line 3 is not JSON" in capsys.readouterr().err


def baseline(seed: int, true: float, **fields) -> dict:
    """A ``bench_prefs.py --true-reward-only`` line for Hopper-v5 at 1000 steps."""
    row = {"bench": "true_reward_baseline", "env": "Hopper-v5", "seed": seed, "steps": 1000,
           "return_true_reward": true, "return_true_reward_stochastic": true / 4,
           "train_return_true_reward": true / 2, "versions": {"mujoco": "4.0.0"},
           "cpu": "Intel(R) Xeon(R) Processor"}  # fmt: skip
    row.update(fields)
    return row


def test_baseline_from_gives_each_line_the_true_reward_side_of_another_run(summ, tmp_path, capsys):
    results = write(tmp_path / "r.jsonl", ROWS)
    bases = write(tmp_path / "b.jsonl", [baseline(0, 1.0), baseline(0, 300.0), baseline(1, 300.0),
                                         baseline(2, 400.0)])  # fmt: skip
    assert summ.main([str(results), "--steps", "1000", "--baseline-from", str(bases)]) == 0
    (out,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert out["seeds"] == [0, 1, 2]
    assert out["ratio"] == 1.0  # (600 + 300 + 100) / (300 + 300 + 400): seed 0's last line
    assert out["median_seed_ratio"] == 1.0  # of 2.0, 1.0, 0.25
    assert out["ratio_stochastic"] == 2.0  # (300 + 150 + 50) / (75 + 75 + 100)
    # each line's own ratios follow
    rebased = summ.rebased(ROWS[1], baseline(1, 300.0))
    assert rebased["ratio"] == 1.0 and rebased["train_ratio"] == 2.0
    assert (
        rebased["return_learned"] == 300.0
        and rebased["true_reward_cpu"] == "Intel(R) Xeon(R) Processor"
    )


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ([baseline(0, 1.0), baseline(1, 1.0)], "no true-reward line for Hopper-v5 seed 2"),
        (
            [baseline(s, 1.0, versions={"mujoco": "3.1.0"}) for s in range(3)],
            "Hopper-v5 seed 0: its line and its --baseline-from line ran with different versions",
        ),
    ],  # fmt: skip
    ids=["missing", "versions"],
)
def test_baseline_from_refuses_a_missing_or_mismatched_line(summ, tmp_path, capsys, base, message):
    results = write(tmp_path / "r.jsonl", ROWS)
    bases = write(tmp_path / "b.jsonl", base)
    with pytest.raises(SystemExit) as exit_:
        summ.main([str(results), "--steps", "1000", "--baseline-from", str(bases)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_rebased_compares_the_cpu_where_both_lines_record_it(summ):
    row = line(0, 10.0, 10.0, cpu="AMD EPYC 9R14 96-Core Processor")
    with pytest.raises(ValueError, match="different cpu"):
        summ.rebased(row, baseline(0, 5.0))
    assert summ.rebased(line(0, 10.0, 10.0), baseline(0, 5.0))["ratio"] == 2.0  # unrecorded
