"""benchmarks/policy_std_curve.py: the action std, training return and explained variance it
reads from a run's SB3 log, at the first policy update at or after each step asked for."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmark_scripts import BENCHMARKS, load_benchmark

FIELDS = [
    "time/total_timesteps", "rollout/ep_rew_mean", "train/std", "train/explained_variance",
]  # fmt: skip


def write_progress(path: Path, rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        w.writerows(rows)
    return path


def test_curve_takes_the_first_update_at_or_after_each_step(tmp_path):
    bench = load_benchmark("policy_std_curve")
    progress = write_progress(
        tmp_path / "progress.csv",
        [
            (4096, -300.0, "", ""),  # the first rollout: no update logged yet
            (8192, -250.0, 0.98, 0.1),
            (12288, -200.0, 0.9512, 0.25),
            (16384, -100.04, 0.8, 0.5),
        ],
    )
    got = bench.curve(progress, [1, 9000, 16384, 20000])
    assert got == {
        "steps": [8192, 12288, 16384],  # 20000 was never reached: left out
        "std": [0.98, 0.951, 0.8],
        "train_return": [-250.0, -200.0, -100.0],
        "explained_variance": [0.1, 0.25, 0.5],
    }


def test_a_run_directory_gives_one_line_and_a_wrong_one_one_error(tmp_path):
    run = tmp_path / "run"
    write_progress(run / "sb3" / "progress.csv", [(4096, -300.0, 0.9, 0.2)])
    (run / "config.json").write_text(
        json.dumps({"env": "HalfCheetah-v5", "seed": 7, "policy": {"ent_coef": 0.003}})
    )
    script = str(BENCHMARKS / "policy_std_curve.py")
    proc = subprocess.run(
        [sys.executable, script, str(run), "--at", "1"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)
    assert (line["env"], line["seed"], line["ent_coef"], line["std"]) == (
        "HalfCheetah-v5", 7, 0.003, [0.9]
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(f"{tmp_path}: no sb3/progress.csv (a preference run directory?)")
    )


def test_true_reward_trains_the_preset_and_reads_its_own_log():
    script = str(BENCHMARKS / "policy_std_curve.py")
    proc = subprocess.run(
        [sys.executable, script, "--true-reward", "Hopper-v5", "0", "8192", "--at", "8192"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)
    assert (line["run"], line["env"], line["seed"]) == ("true_reward", "Hopper-v5", 0)
    # two updates of 4 envs x 1024 steps; the policy's std starts at 1 and has moved
    assert line["steps"] == [8192] and 0.5 < line["std"][0] < 1.5 and line["std"][0] != 1.0
