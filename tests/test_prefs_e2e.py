"""Tiny end-to-end preference runs on real MuJoCo and Atari envs, resume and crash recovery."""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import rlkit.loops.preference as loop
from rlkit.cli import main
from rlkit.core.checkpoint import CheckpointManager
from rlkit.core.metrics import read_metrics
from rlkit.core.rundir import save_config
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.learner import make_learner
from rlkit.rewards.schedule import LabelSchedule
from rlkit.store import Store

TINY_MUJOCO = [
    "--env", "Hopper-v5", "--steps", "2048", "--labels", "24", "--n-envs", "2",
    "--round-steps", "1024", "--policy.n-steps", "256", "--segment-seconds", "0.2",
    "--eval-episodes", "1", "--checkpoint-every", "1024", "--trainer.pretrain-epochs", "5",
    "--pool-size", "200",
]  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlkit.cli", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def main_in_process(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """``rlkit *args`` through the CLI's ``main`` in this process, as :func:`run_cli` reports it."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # what a parser's exit would do to the process
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


@pytest.mark.slow
def test_mujoco_run_labels_trains_checkpoints_and_resumes(tmp_path, monkeypatch, capsys):
    cli = functools.partial(main_in_process, capsys)
    learners = []  # the kind of reward learner each run built

    def spy(kind, *args, **kwargs):
        learner = make_learner(kind, *args, **kwargs)
        learners.append(type(learner).__name__)
        return learner

    monkeypatch.setattr(loop, "make_learner", spy)
    run = tmp_path / "hopper"
    assert main(["prefs", "train", *TINY_MUJOCO, "--seed", "0", "--run-dir", str(run)]) == 0
    assert learners == ["ProcessLearner"]  # the default
    store = Store(run)
    assert store.count_labels() == 24  # the whole budget was asked for and answered
    assert {r.source for r in store.labels_after(0)} == {"synthetic"}
    # ...on the paper's schedule: a quarter before RL starts, the rest as c / (T + c) says
    schedule = LabelSchedule.for_kind("mujoco", 24, 2048)
    metrics = read_metrics(run)
    assert [schedule.target(s) for s in (0, 1024, 2048)] == [6, 15, 24]
    assert dict(metrics["charts/labels"]) == {1024: 15, 2048: 24}
    assert dict(metrics["charts/queries_asked"]) == {1024: 9, 2048: 9}  # 6 before the first
    assert dict(metrics["charts/labels_target"]) == {1024: 15, 2048: 24}
    # the asked pairs' mean disagreement: a variance of preference probabilities, in (0, 0.25]
    scores = dict(metrics["charts/query_score"])
    assert scores.keys() == {1024, 2048} and all(0 < v <= 0.25 for v in scores.values())
    # each label's segments are saved, with MuJoCo qpos/qvel to render them later
    seg = store.load_segment(store.labels_after(0)[0].segment_a)
    assert seg.obs.shape == (25, 11) and seg.render_state.shape == (25, 12)
    ckpt_dir, state = CheckpointManager(run).load_latest()
    assert state["step"] >= 2048 and (ckpt_dir / "policy.zip").is_file()
    assert (run / "progress.png").stat().st_size > 1000
    # the printed summary, and the final reward model's statistics (trained once more after
    # the last round: in no row of metrics.csv), are kept in summary.json
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["env"], summary["seed"], summary["steps"], summary["labels"]) == (
        "Hopper-v5", 0, 2048, 24,
    )  # fmt: skip
    final = summary["reward_model"]
    assert final["labels_trained"] == 24 and 0 <= final["reward_val_accuracy"] <= 1
    assert final["l2_coefficient"] > 0 and final["reward_val"] > 0
    assert f"{final['reward_val_accuracy']:.3f}" in capsys.readouterr().out
    assert (run / "metrics.csv").read_text().count("charts/reward_val_accuracy") >= 1
    assert list((run / "tb").iterdir())
    sb3_log = (run / "sb3" / "progress.csv").read_text()
    # resume with a longer budget: continues from the checkpoint, keeps every label
    assert state["step"] == 2048
    # ... in the other reward learner (how the run executes may change on resume)
    resume = ["--run-dir", str(run), "--resume", "--steps", "2560", "--reward-learner", "thread"]
    assert main(["prefs", "train", *resume]) == 0
    assert learners == ["ProcessLearner", "ThreadLearner"]
    _, state2 = CheckpointManager(run).load_latest()
    assert state2["step"] == 2560  # half a round: the last round stops at --steps
    assert Store(run).count_labels() == 24
    # the longer run is saved: a shorter --steps is refused from now on
    assert json.loads((run / "config.json").read_text())["steps"] == 2560
    out = cli("prefs", "train", "--run-dir", str(run), "--resume", "--steps", "2048")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: --steps 2048 is below the run's 2560: a resumed run can only go on"
    ]
    # another setting on resume is refused in one line, not silently ignored
    out = cli("prefs", "train", "--run-dir", str(run), "--resume", "--env", "Walker2d-v5",
              "--policy.n-steps", "256", "--early-termination", "--seed", "0")  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: --resume continues a run with its saved settings; only --checkpoint-every,"
        " --eval-episodes, --ray-address, --ray-call-timeout, --ray-compiled, --ray-compress,"
        " --ray-worker-rollouts,"
        " --reward-learner,"
        " --steps, --torch-threads may change, not --early-termination (saved: False),"
        " --env (saved: Hopper-v5)"
    ]  # --seed 0 and --policy.n-steps 256 repeat saved values: accepted
    # ... and every log: SB3's first log is intact, the resumed policy logs next to it
    assert (run / "sb3" / "progress.csv").read_text() == sb3_log
    assert "time/total_timesteps" in (run / "sb3" / "progress-1.csv").read_text()
    # eval prints JSON with the true return
    out = cli("prefs", "eval", str(run), "--episodes", "2", "--json")
    assert out.returncode == 0, out.stderr
    det = json.loads(out.stdout.strip().splitlines()[-1])
    assert det["episodes"] == 2 and det["actions"] == "deterministic"
    # --stochastic samples actions as in training, seeded: repeatable, and not the mean action's
    sto = [
        json.loads(cli("prefs", "eval", str(run), "--episodes", "2", "--stochastic", "--json")
                   .stdout.strip().splitlines()[-1])
        for _ in range(2)
    ]  # fmt: skip
    assert sto[0] == sto[1] and sto[0]["actions"] == "stochastic"
    assert sto[0]["true_return"] != det["true_return"]


@pytest.mark.slow
def test_atari_run_produces_labels_and_checkpoint(tmp_path):
    run = tmp_path / "pong"
    args = ["prefs", "train", "--env", "ALE/Pong-v5", "--steps", "400", "--labels", "12",
            "--n-envs", "2", "--round-steps", "200", "--atari-segment-steps", "10",
            "--eval-episodes", "0", "--trainer.pretrain-epochs", "2", "--pool-size", "40",
            "--trainer.batch-size", "8", "--trainer.min-steps", "3",
            "--run-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    store = Store(run)
    assert store.count_labels() == 12
    seg = store.load_segment(store.labels_after(0)[0].segment_a)
    assert seg.obs.shape == (10, 84, 84, 4)  # stacked preprocessed frames
    assert seg.render_state.shape == (10, 105, 80, 3)  # raw RGB frames at half resolution
    _, state = CheckpointManager(run).load_latest()
    assert state["step"] >= 400 and len(state["ensemble"]) > 0


def _kill_9_when(args: list[str], ready, timeout: float = 300) -> None:
    """Run ``rlkit prefs train *args`` and SIGKILL it as soon as ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-m", "rlkit.cli", "prefs", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + timeout
        while not ready():
            if time.time() > deadline:
                pytest.fail("the run did not get there within the deadline")
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_kill_9_during_training_then_resume_keeps_every_label(tmp_path, capsys):
    run = tmp_path / "crash"
    args = [*TINY_MUJOCO, "--steps", "4096", "--labels", "40", "--run-dir", str(run)]
    _kill_9_when(
        args, lambda: (run / "checkpoints" / "latest").is_file() and Store(run).count_labels() > 10
    )
    before = {(r.id, r.choice) for r in Store(run).labels_after(0)}
    out = main_in_process(capsys, "prefs", "train", "--run-dir", str(run), "--resume")
    assert out.returncode == 0, out.stderr[-2000:]
    after = {(r.id, r.choice) for r in Store(run).labels_after(0)}
    assert before <= after and len(after) == 40
    _, state = CheckpointManager(run).load_latest()
    assert state["step"] >= 4096


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_then_resume_keeps_every_label(tmp_path, capsys):
    """Killed while the reward model pretrains on the initial labels (long pretraining keeps
    the run there): --resume starts again from step 0 with those labels and finishes."""
    run = tmp_path / "early"
    args = [*TINY_MUJOCO, "--trainer.pretrain-epochs", "400", "--eval-episodes", "0",
            "--run-dir", str(run)]  # fmt: skip
    _kill_9_when(args, lambda: (run / "store.sqlite").is_file() and Store(run).count_labels() > 0)
    assert not CheckpointManager(run).any()
    before = [(r.id, r.segment_a, r.segment_b, r.choice) for r in Store(run).labels_after(0)]
    # (its settings may change before a first checkpoint: a short pretraining this time)
    resume = ["--run-dir", str(run), "--resume", "--trainer.pretrain-epochs", "5"]
    out = main_in_process(capsys, "prefs", "train", *resume)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"starts again from step 0 with the {len(before)} labels" in out.stderr
    assert "with --trainer.pretrain-epochs 5.0 (saved: 400.0)" in out.stderr
    after = [(r.id, r.segment_a, r.segment_b, r.choice) for r in Store(run).labels_after(0)]
    assert after[: len(before)] == before and len(after) == 24
    assert Store(run).count_selected_queries() == 24
    _, state = CheckpointManager(run).load_latest()
    assert state["step"] >= 2048 and state["last_label_id"] == after[-1][0]


def _signal_when(args: list[str], ready, send, log, timeout: float = 300) -> int:
    """Run ``rlkit prefs train *args`` in a session of its own (as a terminal's job), call
    ``send(proc)`` as soon as ``ready()``, and return its exit code; its stderr goes to
    ``log``."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlkit.cli", "prefs", "train", *args],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.time() + timeout
            while not ready():
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(f"the run did not get there: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            send(proc)
            return proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _metrics_steps(run) -> set[int]:
    path = run / "metrics.csv"
    if not path.is_file():
        return set()
    return {int(line.split(",")[0]) for line in path.read_text().splitlines()[1:] if line}


def _labelled(run):
    return lambda: (run / "store.sqlite").is_file() and Store(run).count_labels() > 0


@pytest.mark.slow
def test_ctrl_c_stops_at_the_end_of_the_round_checkpointed_and_resume_goes_on(tmp_path, capsys):
    """Ctrl-C reaches every process of a terminal's job, the reward learner's too: the run
    finishes its round, checkpoints it (with the learner's state) and exits 130."""
    run = tmp_path / "ctrl_c"
    args = [*TINY_MUJOCO, "--steps", "8192", "--checkpoint-every", "100000", "--run-dir", str(run)]
    rc = _signal_when(
        args, lambda: max(_metrics_steps(run), default=0) >= 2048,
        lambda proc: os.killpg(proc.pid, signal.SIGINT), tmp_path / "err.txt",
    )  # fmt: skip
    err = (tmp_path / "err.txt").read_text()
    assert rc == 130, err[-2000:]
    assert "Ctrl-C: stopping at the end of this round" in err
    ckpt, state = CheckpointManager(run).load_latest()
    step = state["step"]
    assert 2048 <= step < 8192 and step % 1024 == 0  # a round's end, not a scheduled save
    assert f"stopped at step {step:,}; checkpoint {ckpt.name} and all" in err
    assert "--resume` continues" in err and "Traceback" not in err
    assert state["last_label_id"] == max(r.id for r in Store(run).labels_after(0))
    labels = [(r.id, r.choice) for r in Store(run).labels_after(0)]
    out = main_in_process(capsys, "prefs", "train", "--run-dir", str(run), "--resume")
    assert out.returncode == 0, out.stderr[-2000:]
    _, state = CheckpointManager(run).load_latest()
    assert state["step"] == 8192
    assert [(r.id, r.choice) for r in Store(run).labels_after(0)][: len(labels)] == labels


@pytest.mark.slow
def test_sigterm_waits_for_the_pretrained_model_and_a_second_signal_stops_at_once(tmp_path):
    # SIGTERM (a scheduler's notice) while the reward model pretrains: it finishes, step 0 is
    # saved, exit 143
    run = tmp_path / "term"
    args = [*TINY_MUJOCO, "--trainer.pretrain-epochs", "300", "--eval-episodes", "0",
            "--run-dir", str(run)]  # fmt: skip
    rc = _signal_when(
        args, _labelled(run), lambda proc: proc.send_signal(signal.SIGTERM), tmp_path / "t.txt"
    )
    err = (tmp_path / "t.txt").read_text()
    assert rc == 143, err[-2000:]
    assert "SIGTERM: stopping" in err and "stopped at step 0; checkpoint step_0000000000" in err
    assert [p.name for p in CheckpointManager(run).root.glob("step_*")] == ["step_0000000000"]
    # twice: the first asks, the second stops at once (pretraining left unfinished)
    run = tmp_path / "twice"
    args = [*TINY_MUJOCO, "--trainer.pretrain-epochs", "2000", "--run-dir", str(run)]

    def twice(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)

    rc = _signal_when(args, _labelled(run), twice, tmp_path / "i.txt")
    err = (tmp_path / "i.txt").read_text()
    assert rc == 130, err[-2000:]
    assert "interrupted before the first checkpoint" in err and "Traceback" not in err
    assert not CheckpointManager(run).any() and Store(run).count_labels() > 0


def test_bad_input_gets_one_line_and_exit_2(tmp_path, capsys):
    """One real process (what a shell sees), then the CLI's main in this one (the same code
    path, a second each faster)."""
    out = run_cli("prefs", "train", "--env", "Hoper-v5", "--run-dir", str(tmp_path / "x"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "Hopper-v5" in out.stderr and "Traceback" not in out.stderr
    cli = functools.partial(main_in_process, capsys)
    out = cli("prefs", "train", "--labels", "-5", "--run-dir", str(tmp_path / "y"))
    assert out.returncode == 2 and "--labels" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # not tyro's boxed help screen
    out = cli("prefs", "train", "--trainer.holdout", "1.5", "--run-dir", str(tmp_path / "v"))
    assert out.returncode == 2 and "holdout" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("prefs", "train", "--resume", "--run-dir", str(tmp_path / "missing"))
    assert out.returncode == 2 and "holds no run" in out.stderr
    out = cli("prefs", "train", "--backbone", "revnett", "--run-dir", str(tmp_path / "z"))
    assert out.returncode == 2 and "did you mean revnet" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "z").exists()
    out = cli("prefs", "train", "--backbone-kwargs", "{bad", "--run-dir", str(tmp_path / "w"))
    assert out.returncode == 2 and "--backbone-kwargs is not valid JSON" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # a segment longer than an episode would never complete: said at once, nothing written
    out = cli("prefs", "train", "--segment-seconds", "20", "--run-dir", str(tmp_path / "s"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: --segment-seconds 20 makes segments of 2500 steps, longer than Hopper-v5's"
        " episodes (1000 steps)"
    ]
    assert not (tmp_path / "s").exists()
    # a --run-dir that is a file, or lies under one: one line, the file untouched
    (tmp_path / "notes.txt").write_text("keep me")
    out = cli("prefs", "train", "--run-dir", str(tmp_path / "notes.txt"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"error: --run-dir {tmp_path / 'notes.txt'} is a file, not a directory;"
        " choose another --run-dir"
    ]
    out = cli("prefs", "train", "--run-dir", str(tmp_path / "notes.txt" / "run"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"error: cannot create --run-dir {tmp_path / 'notes.txt' / 'run'}: Not a directory"
    ]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_resume_from_corrupt_checkpoint_says_so_and_overwrites_nothing(tmp_path, capsys):
    run = tmp_path / "corrupt"
    ckpt = run / "checkpoints" / "step_0000001024"
    ckpt.mkdir(parents=True)
    (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    (run / "checkpoints" / "latest").write_text("step_0000001024")
    save_config(run, PrefsConfig(env="Hopper-v5", steps=2048, labels=24, seed=0))
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = main_in_process(capsys, "prefs", "train", "--run-dir", str(run), "--resume")
    assert out.returncode == 2
    assert "corrupt" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    for path, content in snapshot.items():
        assert path.read_bytes() == content
    # a fresh run in an existing run directory is refused too
    out = main_in_process(capsys, "prefs", "train", "--run-dir", str(run))
    assert out.returncode == 2 and "already holds a run" in out.stderr


def test_episodes_shorter_than_a_segment_are_reported_not_spun_on(tmp_path, capsys):
    # With --early-termination a random Hopper falls within ~20-70 steps: no 1.5 s segment
    # (188 steps) ever completes. The run says so instead of stepping for millions of steps.
    run = tmp_path / "et"
    out = main_in_process(
        capsys, "prefs", "train", "--labels", "8", "--steps", "2048", "--early-termination",
        "--eval-episodes", "0", "--n-envs", "2", "--run-dir", str(run),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: no segment of 188 steps in 1\d\d episodes of the random policy \(mean length"
        r" \d\d? steps\): shorten --segment-seconds or drop --early-termination",
        line,
    ), line
    assert "Traceback" not in out.stderr
    # refused before its first checkpoint and label: nothing of it is left, so the corrected
    # command runs in the same directory (it was "already holds a run", and --resume refuses
    # a new --segment-seconds)
    assert not run.exists()
    run.mkdir()  # an empty directory the user made stays, empty
    out = main_in_process(
        capsys, "prefs", "train", "--labels", "8", "--steps", "2048", "--early-termination",
        "--eval-episodes", "0", "--n-envs", "2", "--run-dir", str(run),
    )  # fmt: skip
    assert out.returncode == 2 and "no segment of 188 steps" in out.stderr
    assert run.is_dir() and list(run.iterdir()) == []


def test_each_training_invocation_records_what_it_ran_with(tmp_path):
    """provenance.jsonl: a line per `prefs train` (the fresh run, then a resume), with the
    command, the library versions and the machine; a refused resume adds none."""
    run = tmp_path / "run"
    assert main(["prefs", "train", *TINY_MUJOCO, "--steps", "1024", "--eval-episodes", "0",
                 "--run-dir", str(run)]) == 0  # fmt: skip
    assert main(["prefs", "train", "--run-dir", str(run), "--resume", "--steps", "1"]) == 2
    assert main(["prefs", "train", "--run-dir", str(run), "--resume", "--steps", "1536"]) == 0
    lines = [json.loads(line) for line in (run / "provenance.jsonl").read_text().splitlines()]
    assert [line["argv"][-2:] for line in lines] == [["--run-dir", str(run)], ["--steps", "1536"]]
    import mujoco
    import torch

    for line in lines:
        assert line["versions"]["torch"] == torch.__version__  # e.g. 2.13.0+cpu
        assert line["versions"]["mujoco"] == mujoco.__version__
        assert line["cores"] >= 1 and line["cpu"] and line["python"].startswith("3.")
        assert line["commit"] is None or len(line["commit"].split("+")[0]) == 40
