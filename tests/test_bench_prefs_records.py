"""benchmarks/bench_prefs.py: what each result line records about its true-reward (TRPO) side,
``--baseline-from`` refusing a line recorded with another setup, other library versions or on
another CPU model (before any training starts), and ``--true-reward-only``'s lines."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import BENCHMARKS, load_benchmark

from agents.trpo_entropy import EntropyTRPO
from rlkit.loops.preference_config import PrefsConfig


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_prefs")


def line(bench, **fields) -> dict:
    """A result line as bench_prefs writes one, for Hopper-v5 seed 0 at 1000 steps."""
    row = {
        "bench": "prefs_vs_true_reward",
        "env": "Hopper-v5",
        "seed": 0,
        "steps": 1000,
        "return_true_reward": 1000.0,
        "return_true_reward_stochastic": 900.0,
        "train_return_true_reward": 800.0,
        "wall_trpo_s": 12.5,
        # what this script's default run on Hopper-v5 records
        "true_reward_setup": bench.true_reward_setup(
            PrefsConfig(), PrefsConfig().vec_envs("mujoco")
        ),
        "versions": bench.library_versions(),
        "cpu": bench.cpu_model(),
    }
    row.update(fields)
    return row


def write(path: Path, *rows: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_setup_records_the_preset_envs_and_termination_as_json(bench):
    cfg = PrefsConfig(early_termination=True)
    setup = bench.true_reward_setup(cfg, 4)
    assert setup["n_envs"] == 4 and setup["early_termination"] is True
    assert setup["policy"]["hidden"] == list(cfg.policy.hidden)  # a tuple comes back as JSON's list
    assert json.loads(json.dumps(setup)) == setup


def test_mismatch_names_each_differing_field_and_none_when_equal(bench):
    setup = bench.true_reward_setup(PrefsConfig(), 4)
    assert bench.mismatch(setup, setup) is None
    other = json.loads(json.dumps(setup))
    other["n_envs"] = 8
    other["policy"]["ent_coef"] = 0.01
    diff = bench.mismatch(other, setup)
    assert "ent_coef 0.01 there, 0.0 here" in diff and "n_envs 8 there, 4 here" in diff
    versions = bench.library_versions()
    assert versions["mujoco"] and versions["torch"]  # the venv has both
    assert bench.mismatch({**versions, "mujoco": "3.1.0"}, versions) == (
        f"mujoco '3.1.0' there, {versions['mujoco']!r} here"
    )


def test_load_baselines_keeps_the_last_line_per_env_seed_steps(bench, tmp_path):
    first = write(tmp_path / "a.jsonl", line(bench), line(bench, seed=1, return_true_reward=5.0))
    second = write(tmp_path / "b.jsonl", line(bench, return_true_reward=2000.0))
    # a line of another benchmark and an older line without the records
    old = {
        k: v for k, v in line(bench, seed=2).items() if k not in ("true_reward_setup", "versions")
    }
    third = write(tmp_path / "c.jsonl", {"bench": "other"}, old)
    found = bench.load_baselines([first, second, third])
    assert set(found) == {("Hopper-v5", 0, 1000), ("Hopper-v5", 1, 1000), ("Hopper-v5", 2, 1000)}
    assert found[("Hopper-v5", 0, 1000)]["return_true_reward"] == 2000.0
    assert found[("Hopper-v5", 0, 1000)]["baseline_from"] == str(second)
    assert found[("Hopper-v5", 1, 1000)]["return_true_reward"] == 5.0
    assert found[("Hopper-v5", 2, 1000)]["versions"] is None  # predates the record
    assert found[("Hopper-v5", 1, 1000)]["cpu"] == bench.cpu_model()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(line(bench)) + "\n{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl line 2 is not JSON"):
        bench.load_baselines([bad])


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench_prefs.py"),
            "--envs",
            "Hopper-v5",
            "--seeds",
            "0",
            "--steps",
            "1000",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=BENCHMARKS.parent,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"n_envs": 16}, "ran with another TRPO setup (n_envs 16 there, "),
        ({"mujoco": "2.3.7"}, "ran with other library versions (mujoco '2.3.7' there, "),
        (
            {"cpu": "AMD EPYC 9R14 96-Core Processor"},
            "ran with another CPU model ('AMD EPYC 9R14 96-Core Processor' there, ",
        ),
    ],  # fmt: skip
    ids=["setup", "versions", "cpu"],
)
def test_baseline_from_refuses_a_line_from_another_setup(bench, tmp_path, change, expected):
    row = line(bench)
    if "cpu" in change:
        row.update(change)
    else:
        field = "versions" if "mujoco" in change else "true_reward_setup"
        row[field] = {**row[field], **change}
    out = tmp_path / "out"
    proc = run_script(
        "--baseline-from", str(write(tmp_path / "base.jsonl", row)), "--out", str(out)
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith("usage:"), proc.stderr  # argparse's usage, then the one error line
    assert err[-1].startswith(
        "bench_prefs.py: error: --baseline-from: the true-reward line for Hopper-v5 seed 0 "
        + expected
    ), err[-1]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()  # refused before anything is written


def test_baseline_from_without_a_line_for_the_seed_says_which(bench, tmp_path):
    proc = run_script("--baseline-from", str(write(tmp_path / "base.jsonl", line(bench, seed=3))))
    assert proc.returncode == 2
    assert (
        "no true-reward line at 1000 steps in --baseline-from for Hopper-v5 seed 0" in proc.stderr
    )


def test_setup_records_the_true_reward_and_older_lines_ran_gymnasiums(bench):
    gym_setup = bench.true_reward_setup(PrefsConfig(), 4)
    paper_setup = bench.true_reward_setup(PrefsConfig(env="Walker2d-v5", env_reward="paper"), 4)
    assert gym_setup["env_reward"] == "gymnasium" and paper_setup["env_reward"] == "paper"
    older = {k: v for k, v in gym_setup.items() if k != "env_reward"}  # before the record
    assert bench.mismatch(older, gym_setup) is None
    assert bench.mismatch(older, paper_setup) == "env_reward 'gymnasium' there, 'paper' here"


def test_prefs_args_takes_a_lone_flag_as_its_value(bench):
    argv = ["--envs", "Hopper-v5", "--prefs-args", "--early-termination", "--seeds", "1"]
    assert bench.joined_prefs_args(argv) == [
        "--envs", "Hopper-v5", "--prefs-args=--early-termination", "--seeds", "1"
    ]  # fmt: skip
    assert bench.joined_prefs_args(["--prefs-args"]) == ["--prefs-args"]  # argparse says so
    proc = run_script("--prefs-args", "--early-terminatio")  # one line, before anything runs
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "bench_prefs.py: error: --prefs-args: Unrecognized options: --early-terminatio; "
            "did you mean --early-termination?"
        )
    ), proc.stderr


def test_true_reward_args_takes_policy_flags_only(bench):
    argv = ["--true-reward-args", "--policy.no-normalize-obs", "--seeds", "1"]
    assert bench.joined_prefs_args(argv) == [
        "--true-reward-args=--policy.no-normalize-obs", "--seeds", "1"
    ]  # fmt: skip
    for flags, error in (
        ("--early-termination", "only --policy.* flags (the rest is the same on both sides)"),
        ("--policy.ent-coef -1", "--policy.ent-coef has an invalid value -1.0"),  # as rlkit says
    ):
        proc = run_script("--true-reward-args", flags)  # one line, before anything runs
        assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("bench_prefs.py: error: --true-reward-args: ") and error in last


@pytest.mark.slow
def test_a_tiny_walker2d_line_records_what_ran(tmp_path):
    tiny = "--n-envs 2 --segment-seconds 0.2 --pool-size 100 --trainer.pretrain-epochs 2"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_prefs.py"), "--envs", "Walker2d-v5",
         "--seeds", "0", "--steps", "1024", "--labels", "12", "--eval-episodes", "1",
         "--out", str(tmp_path), "--prefs-args", tiny],
        capture_output=True, text=True, cwd=BENCHMARKS.parent, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (row["env"], row["seed"], row["steps"], row["labels"]) == ("Walker2d-v5", 0, 1024, 12)
    assert row["prefs_args"] == tiny
    assert row["l2_max"] == 3e-2  # Walker2d's cap, --trainer.l2-max unset
    # The ratio of the unrounded returns: within what the returns' rounding to 0.1 allows
    # (a wide interval where the true-reward return is near 0), and itself rounded to 0.001.
    learned, true = row["return_learned"], row["return_true_reward"]
    if abs(true) >= 0.1:  # (a rounded 0.0 bounds nothing)
        ends = [(learned + a) / (true + b) for a in (-0.05, 0.05) for b in (-0.05, 0.05)]
        assert min(ends) - 5e-4 <= row["ratio"] <= max(ends) + 5e-4
    assert row["true_reward_setup"]["n_envs"] == 2 and "baseline_from" not in row  # trained here
    assert row["cpu"] == load_benchmark("bench_prefs").cpu_model()
    assert (tmp_path / "prefs_Walker2d-v5_seed0.png").stat().st_size > 1000


def test_cpu_model_names_this_machines_cpu_and_the_kernels_picked(bench, monkeypatch):
    from rlkit.core.provenance import KERNEL_VARIABLES

    for name in KERNEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cpu = bench.cpu_model()
    assert isinstance(cpu, str) and cpu.strip() == cpu and cpu
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():  # x86 Linux
        assert f": {cpu}\n" in cpuinfo.read_text()
    # MKL held to other kernels computes as another CPU would: the record says so, and a
    # baseline recorded without it is another CPU's
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "")  # set but empty: MKL's default, not recorded
    assert bench.cpu_model() == f"{cpu} (MKL_ENABLE_INSTRUCTIONS=AVX2)"
    assert bench.mismatch(cpu, bench.cpu_model()) is not None


def test_a_true_reward_only_line_is_a_baseline(bench, tmp_path):
    only = {**line(bench, seed=4, return_true_reward=321.0), "bench": "true_reward_baseline"}
    found = bench.load_baselines([write(tmp_path / "only.jsonl", only)])
    assert found[("Hopper-v5", 4, 1000)]["return_true_reward"] == 321.0
    proc = run_script("--true-reward-only", "--baseline-from", str(tmp_path / "only.jsonl"))
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert "--true-reward-only runs the true-reward side that --baseline-from" in proc.stderr


def test_out_named_like_a_lines_file_and_an_unwritable_jsonl_are_refused(tmp_path):
    proc = run_script("--out", str(tmp_path / "lines.jsonl"))
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "--out is the folder for the plots; --jsonl FILE takes the lines" in last
    assert not (tmp_path / "lines.jsonl").exists()  # no folder made under that name
    proc = run_script("--jsonl", str(tmp_path / "missing" / "lines.jsonl"))
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("bench_prefs.py: error: --jsonl: ")
    proc = run_script("--steps", "1.5e3", "--labels", "7e-1")  # 1500 steps is whole; 0.7 is not
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "bench_prefs.py: error: argument --labels: '7e-1' is not a whole number"


@pytest.mark.slow
def test_true_reward_only_trains_and_records_that_side_alone(bench, tmp_path):
    kept = json.dumps({"bench": "an earlier line"}) + "\n"
    (tmp_path / "lines.jsonl").write_text(kept)
    proc = run_script(
        "--true-reward-only", "--seeds", "0", "1", "--steps", "1e3",  # 1000, as papers write it
        "--eval-episodes", "1", "--out", str(tmp_path),
        "--jsonl", str(tmp_path / "lines.jsonl"),
        "--keep", str(tmp_path / "keep"), "--prefs-args",
        "--n-envs 2 --policy.n-steps 256 --policy.ent-coef 0.5",
        "--true-reward-args", "--policy.ent-coef 0",  # the learned side's bonus, not this side's
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(r) for r in proc.stdout.strip().splitlines()]
    assert [(r["bench"], r["env"], r["seed"], r["steps"]) for r in rows] == [
        ("true_reward_baseline", "Hopper-v5", s, 1000) for s in (0, 1)
    ]
    # --jsonl: the same lines appended after what the file held
    assert (tmp_path / "lines.jsonl").read_text() == kept + proc.stdout
    for r in rows:
        assert r["cpu"] == bench.cpu_model() and r["versions"] == bench.library_versions()
        assert r["true_reward_setup"]["n_envs"] == 2
        assert r["true_reward_setup"]["policy"]["n_steps"] == 256
        assert r["true_reward_setup"]["policy"]["ent_coef"] == 0.0
        assert r["wall_trpo_s"] > 0 and "return_learned" not in r
    # a seed's own episodes: the two seeds' policies and evaluations differ
    assert rows[0]["return_true_reward"] != rows[1]["return_true_reward"]
    found = bench.load_baselines([write(tmp_path / "b.jsonl", *rows)])
    assert found[("Hopper-v5", 1, 1000)]["return_true_reward"] == rows[1]["return_true_reward"]
    assert not list(tmp_path.glob("*.png"))  # no preference run, no plot
    # --keep saves each seed's agent alone, and it loads and acts in Hopper's action space
    kept = tmp_path / "keep"
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        f"Hopper-v5_seed{s}/true_reward_agent.zip" for s in (0, 1)
    ]
    agent = EntropyTRPO.load(kept / "Hopper-v5_seed1" / "true_reward_agent.zip", device="cpu")
    action, _ = agent.predict(np.zeros((1, 11), dtype=np.float32), deterministic=True)
    assert action.shape == (1, 3)
    assert agent.entropy_coef == 0.0 and agent.n_steps == 256  # trained as recorded
