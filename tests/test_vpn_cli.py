"""`rlkit vpn train` / `rlkit vpn eval` end to end at tiny budgets: runs, resume, errors, Atari, DQN."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rlkit.cli import main
from rlkit.core.checkpoint import CheckpointManager
from rlkit.core.metrics import read_metrics

TINY = ["--n-envs", "4", "--n-step", "4", "--batch-sequences", "4", "--learning-starts", "40",
        "--train-freq", "2", "--checkpoint-every", "80", "--eval-every", "0", "--channels", "8",
        "--hidden", "16", "--seed", "0"]  # fmt: skip


def assert_went_on_in_full(run_dir: Path, steps: int) -> None:
    """The latest checkpoint of a TINY run resumed to ``steps`` counts every update and
    transition since step 0, so the resume went on from the saved agent, replay and counts,
    not from fresh ones: one update every second vector step from step 40 on, Adam's step
    count with them, and a replay holding every step."""
    state = CheckpointManager(run_dir).load_latest()[1]
    updates = sum(1 for s in range(4, steps + 1, 4) if s >= 40 and (s // 4) % 2 == 0)
    assert state["step"] == steps and state["updates"] == updates
    adam = state["agent"]["optimizer"]["state"]
    assert adam and all(int(v["step"]) == updates for v in adam.values())
    assert state["replay"]["size"] == steps


def train(run_dir: Path, *extra: str) -> int:
    """A TINY run on Collect; a VPN's plans 4,1 (the DQN baseline takes no --plan)."""
    plan = [] if "dqn" in extra else ["--plan", "4,1"]
    return main(
        ["vpn", "train", "--env", "rlkit/Collect-v0", *plan, "--run-dir", str(run_dir), *TINY,
         *extra]
    )  # fmt: skip


def test_train_eval_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert train(run, "--steps", "160", "--eval-every", "80", "--eval-episodes", "4") == 0
    for name in ("config.json", "metrics.csv", "model.pt", "checkpoints/latest", "tb"):
        assert (run / name).exists(), name
    assert (run / "checkpoints/latest").read_text() == "step_0000000160"
    metrics = read_metrics(run)
    assert [s for s, _ in metrics["charts/eval_reward"]] == [80, 160]
    assert "losses/value" in metrics and "charts/episode_reward" in metrics

    out = tmp_path / "eval.json"
    code = main(
        ["vpn", "eval", str(run), "--episodes", "10", "--n-envs", "5", "--output", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["episodes"] == 10 and result["plan"] == "4,1" and -10.0 <= result["mean"] <= 16.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result

    # --resume continues from step 160 with the saved config (plan 4,1, not the default); a
    # flag that repeats a saved value is accepted.
    code = main(
        ["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "320", "--seed", "0"]
    )
    assert code == 0
    assert (run / "checkpoints/latest").read_text() == "step_0000000320"
    assert json.loads((run / "config.json").read_text())["plan"] == "4,1"
    assert_went_on_in_full(run, 320)
    # what the settings left to the env came to, saved beside them (not read back as settings)
    saved = json.loads((run / "config.json").read_text())
    assert saved["gamma"] is None and saved["lr"] is None and saved["backbone"] == "auto"
    assert saved["resolved"] == {"gamma": 0.98, "lr": 2e-3, "backbone": "collect_conv"}
    # the longer run is saved: a plain --resume has nothing left to do, a shorter one is refused
    assert json.loads((run / "config.json").read_text())["steps"] == 320
    capsys.readouterr()
    code = main(["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "160"])
    assert code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --steps 160 is below the run's 320: a resumed run can only go on"
    )
    # A flag that would change a saved setting is refused in one line (it would be ignored).
    code = main(
        ["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "480", "--plan", "2"]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the first run's progress bar
    assert code == 2 and err == (
        "error: --resume continues a run with its saved settings; only --device, --steps may change,"
        " not --plan (saved: 4,1)"
    )
    assert (run / "checkpoints/latest").read_text() == "step_0000000320"
    # Evaluating with a deeper plan than trained works too.
    assert (
        main(["vpn", "eval", str(run), "--episodes", "4", "--n-envs", "2", "--plan", "4,4,1"]) == 0
    )
    assert '"plan": "4,4,1"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "rlkit/Colect-v0"], "unknown env id 'rlkit/Colect-v0'; did you mean"),
        (["--plan", "4,x"], "--plan must be comma-separated integers"),
        (["--plan", "4,0"], "branching factors >= 1"),
        (["--plan", "4,4,4,4,4,4,4,4,4,4,4,4"], "expands 16,777,216 paths per decision"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--max-grad-norm", "-1"], "--max-grad-norm must be > 0"),
        (["--seed", str(2**32)], "--seed must lie in 0..2**32-1"),
        (["--algo", "ppo"], "--algo must be vpn or dqn"),
        (["--backbone", "resnet"], "--backbone must be one of auto, collect_conv"),
        (["--plan", "4,,4"], "--plan must be comma-separated integers"),
        (["--device", "gpu0"], "--device must be a torch device like cpu or cuda:0"),
        # the DQN baseline has its own encoder: the flag was silently ignored
        (["--algo", "dqn", "--backbone", "mlp"], "--backbone mlp is the VPN's encoder; the DQN"),
        (["--algo", "dqn", "--plan", "4,1"], "--plan is for the VPN's planning; the DQN baseline"),
        (
            ["--algo", "dqn", "--plan=4", "--prediction-steps", "2"],
            "--plan and --prediction-steps are for the VPN's planning; the DQN baseline does not",
        ),
    ],
)
def test_bad_input_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code = main(["vpn", "train", "--run-dir", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("algo", "args", "message"),
    [
        ("vpn", ["--env", "Hopper-v5"], "--env Hopper-v5 has continuous or structured actions"),
        ("dqn", ["--env", "Hopper-v5"], "VPN and DQN need discrete ones"),
        (
            "vpn",
            ["--backbone", "nature_cnn"],
            "--backbone nature_cnn does not fit rlkit/Collect-v0",
        ),
        # far more than any machine has: refused at set-up, not killed when the buffer fills
        ("vpn", ["--replay-size", str(10**12)], "--replay-size 1,000,000,000,000 (a replay"),
        ("dqn", ["--replay-size", str(10**12)], "GiB of memory available here: lower --replay"),
        ("vpn", ["--batch-sequences", str(10**9)], "--batch-sequences 1,000,000,000 x 5 steps"),
        (
            "vpn",
            ["--channels", str(10**5)],
            "the network (--channels 100000, --hidden 16) does not fit",
        ),
    ],
)
def test_a_setting_that_fails_at_set_up_leaves_the_directory_free(
    tmp_path: Path, capsys: pytest.CaptureFixture, algo: str, args: list[str], message: str
) -> None:
    """Settings found wrong only once the env or the network is built: one line, exit 2, and
    no config.json left behind, so the corrected command runs in the same directory."""
    run = tmp_path / "run"
    assert train(run, "--algo", algo, "--steps", "80", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not run.exists()  # nor the directory it made
    run.mkdir()  # one that was there stays, and holds no config.json
    assert train(run, "--algo", algo, "--steps", "80", *args) == 2
    assert run.is_dir() and not (run / "config.json").exists()
    assert train(run, "--algo", algo, "--steps", "80") == 0
    assert json.loads((run / "config.json").read_text())["algo"] == algo


def test_a_run_saved_for_a_gpu_resumes_and_evaluates_on_this_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Where a run executes may change on resume (--device), what it learns may not; eval
    falls back to the CPU. The saved device here is one this machine lacks."""
    run = tmp_path / "run"
    assert train(run, "--steps", "80") == 0
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "device": "cuda:7"}))
    capsys.readouterr()
    resume = ["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "160"]
    if not torch.cuda.is_available():
        assert main(resume) == 2
        assert "--device cuda:7: this machine's torch has no CUDA device" in capsys.readouterr().err
    assert main([*resume, "--device", "cpu"]) == 0
    assert main([*resume, "--steps", "240", "--hidden", "32"]) == 2  # a learning setting: no
    assert "not --hidden (saved: 16)" in capsys.readouterr().err
    assert main(["vpn", "eval", str(run), "--episodes", "2", "--n-envs", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 2


def test_eval_on_an_env_the_model_cannot_take_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert train(run, "--steps", "80") == 0
    capsys.readouterr()
    for env, message in (
        ("Hopper-v5", "need discrete ones"),
        ("ALE/Pong-v5", "has observations (84, 84, 4) and 6 actions; the run trained on"),
    ):
        assert main(["vpn", "eval", str(run), "--episodes", "2", "--env", env]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after ALE's banner, if any
        assert err.startswith("error: ") and message in err, err


def test_run_dir_protection_and_resume_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert main(["vpn", "train", "--run-dir", str(run), "--resume"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert train(run, "--steps", "80") == 0
    assert train(run, "--steps", "80") == 2  # a fresh run refuses to overwrite
    assert "already holds a run" in capsys.readouterr().err
    # evaluation output never replaces a file of the run, and is checked before evaluating
    config = (run / "config.json").read_bytes()
    for output in (run / "config.json", tmp_path / "missing" / "eval.json", "/proc/eval.json"):
        # (/proc takes no new file, though root passes every permission check: tried, not guessed)
        assert main(["vpn", "eval", str(run), "--episodes", "2", "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert (run / "config.json").read_bytes() == config
    # the run given twice, as DIR and as --run-dir: refused, not one of them silently ignored
    assert main(["vpn", "eval", str(run), "--run-dir", str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the run is given twice ({run} and --run-dir): give it once"
    )
    # nor an earlier result elsewhere, unless --force says so
    earlier = tmp_path / "eval.json"
    earlier.write_text("an earlier result\n")
    assert main(["vpn", "eval", str(run), "--episodes", "2", "--output", str(earlier)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert earlier.read_text() == "an earlier result\n"
    eval_args = ["--episodes", "2", "--n-envs", "2", "--output", str(earlier), "--force"]
    assert main(["vpn", "eval", str(run), *eval_args]) == 0
    assert json.loads(earlier.read_text()) == json.loads(capsys.readouterr().out)
    # nor does a fresh run whose directory lost its config.json but holds the rest
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "model.pt").write_bytes(b"weights")
    assert train(tmp_path / "orphan", "--steps", "80") == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "orphan" / "model.pt").read_bytes() == b"weights"
    # model.pt (written at the end) a folder: refused before the work, not after it
    model = (run / "model.pt").read_bytes()
    (run / "model.pt").unlink()
    (run / "model.pt").mkdir()
    assert main(["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "160"]) == 2
    assert capsys.readouterr().err == (
        f"error: {run / 'model.pt'} is a directory where the run writes a file: the run is"
        " damaged; left as it is\n"
    )
    assert (run / "checkpoints/latest").read_text() == "step_0000000080"
    (run / "model.pt").rmdir()
    (run / "model.pt").write_bytes(model)
    # A corrupt checkpoint: one-line error, and the file is left as it was.
    state = run / "checkpoints" / (run / "checkpoints/latest").read_text() / "state.pt"
    state.write_bytes(b"not a checkpoint")
    assert main(["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "160"]) == 2
    err = capsys.readouterr().err
    assert "corrupt or unreadable" in err and err.count("\n") == 1
    assert state.read_bytes() == b"not a checkpoint"
    assert (run / "checkpoints/latest").read_text() == "step_0000000080"
    # Missing checkpoint pointer: the newest complete checkpoint is the latest (here, the
    # corrupt one); with none at all, there is no checkpoint.
    (run / "checkpoints/latest").unlink()
    assert main(["vpn", "train", "--run-dir", str(run), "--resume"]) == 2
    assert "step_0000000080/state.pt is corrupt" in capsys.readouterr().err
    shutil.rmtree(state.parent)
    assert main(["vpn", "train", "--run-dir", str(run), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["vpn", "eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # config.json edited since: the saved value is named, not a flag this call never had
    config = json.loads((run / "config.json").read_text())
    for edit, says in [({"plan": "4,x"}, "--plan must be comma-separated integers"),
                       ({"env": "rlkit/Colect-v0"}, "unknown env id 'rlkit/Colect-v0'")]:  # fmt: skip
        (run / "config.json").write_text(json.dumps({**config, **edit}))
        for command in (
            ["vpn", "train", "--run-dir", str(run), "--resume"],
            ["vpn", "eval", str(run)],
        ):
            assert main(command) == 2
            err = capsys.readouterr().err.strip()
            assert "\n" not in err
            assert err.startswith(
                f"error: {run}/config.json holds a setting no run can have: {says}"
            )


def test_a_config_json_cut_short_and_eval_flags_it_would_ignore_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A setting cut out of a run's config.json is refused, not filled in with a default (a
    plan other than the run's) nor a crash (steps null: TypeError, exit 1); eval refuses an
    --env "" (it evaluated on the run's env) and a --plan on a DQN run (ignored), and names a
    file given as the run. Nothing trains: every check comes before a checkpoint is read."""
    import dataclasses

    from agents.vpn.config import VPNConfig

    run = tmp_path / "run"
    run.mkdir()
    saved = dataclasses.asdict(VPNConfig(plan="4,1", steps=80, run_dir=str(run)))
    for config, says in [
        ({k: v for k, v in saved.items() if k != "plan"}, "config.json lacks plan: it is incomplete"),
        ({k: v for k, v in saved.items() if k != "steps"}, "config.json lacks steps: it is"),
        ({**saved, "steps": None}, "no run can have: --steps must be int, got None"),
    ]:  # fmt: skip
        (run / "config.json").write_text(json.dumps(config))
        for command in (
            ["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "160"],
            ["vpn", "eval", str(run)],
        ):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    (run / "config.json").write_text(json.dumps(saved))
    assert main(["vpn", "eval", str(run), "--env", ""]) == 2
    assert capsys.readouterr().err.startswith("error: unknown env id ''")
    (run / "config.json").write_text(json.dumps({**saved, "algo": "dqn"}))
    assert main(["vpn", "eval", str(run), "--plan", "4"]) == 2
    assert capsys.readouterr().err == (
        f"error: --plan sets a VPN's planning; {run} is a DQN run, which does not plan\n"
    )
    (tmp_path / "file").write_text("not a run")
    assert main(["vpn", "eval", str(tmp_path / "file")]) == 2
    assert "file is a file, not a run directory of `rlkit vpn train`" in capsys.readouterr().err


def test_dqn_baseline_trains_resumes_and_evaluates(tmp_path: Path) -> None:
    run = tmp_path / "dqn"
    assert (
        main(["vpn", "train", "--algo", "dqn", "--steps", "80", "--run-dir", str(run), *TINY]) == 0
    )
    assert (run / "model_dqn.zip").is_file()
    resolved = {"gamma": 0.98, "lr": 5e-4, "backbone": "collect_conv"}
    assert json.loads((run / "config.json").read_text())["resolved"] == resolved
    assert main(["vpn", "train", "--run-dir", str(run), "--resume", "--steps", "160", *TINY]) == 0
    assert (run / "checkpoints/latest").read_text() == "step_0000000160"
    # a finished run resumed has nothing left to train: it says so and keeps its checkpoint
    state = (run / "checkpoints/step_0000000160/dqn.zip").read_bytes()
    assert main(["vpn", "train", "--run-dir", str(run), "--resume", *TINY]) == 0
    assert (run / "checkpoints/step_0000000160/dqn.zip").read_bytes() == state
    assert json.loads((run / "summary.json").read_text())["steps"] == 160
    # each invocation recorded what it ran with (the command, the versions, the machine)
    lines = [json.loads(line) for line in (run / "provenance.jsonl").read_text().splitlines()]
    assert [line["argv"][:5] for line in lines] == [
        ["rlkit", "vpn", "train", "--algo", "dqn"], ["rlkit", "vpn", "train", "--run-dir", str(run)],
        ["rlkit", "vpn", "train", "--run-dir", str(run)],
    ]  # fmt: skip
    assert all(line["versions"]["torch"] and line["cores"] >= 1 for line in lines)
    out = tmp_path / "e.json"
    assert (
        main(["vpn", "eval", str(run), "--episodes", "6", "--n-envs", "3", "--output", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["algo"] == "dqn"


def test_vpn_runs_on_atari_through_the_env_factory(tmp_path: Path) -> None:
    from agents.vpn.modules import BackboneEncoder
    from agents.vpn.run_eval import load_run_config
    from agents.vpn.trainer import load_vpn_agent
    from envs import EnvSpec, make_vec_env

    run = tmp_path / "pong"
    code = main(["vpn", "train", "--env", "ALE/Pong-v5", "--plan", "2,1", "--steps", "48", "--n-envs", "2",
                 "--n-step", "4", "--batch-sequences", "2", "--learning-starts", "16", "--replay-size", "64",
                 "--eval-every", "0", "--channels", "8", "--run-dir", str(run)])  # fmt: skip
    assert code == 0
    cfg = load_run_config(run)
    venv = make_vec_env(EnvSpec("ALE/Pong-v5"), 1, 0)
    agent = load_vpn_agent(run, cfg, venv.observation_space, int(venv.action_space.n))
    obs = venv.reset()
    venv.close()
    assert obs.shape == (1, 84, 84, 4)
    assert isinstance(agent.net.encoder, BackboneEncoder)
    assert agent.gamma == 0.99 and agent.net.num_options == 6
    assert agent.plan(obs).q.shape == (1, 6)


@pytest.mark.parametrize(
    ("algo", "lr", "expected"),
    [("vpn", None, 2e-3), ("dqn", None, 5e-4), ("vpn", 1e-3, 1e-3), ("dqn", 1e-3, 1e-3)],
)
def test_learning_rate_defaults_per_algorithm(algo: str, lr: float | None, expected: float) -> None:
    """VPN and DQN each get the learning rate that worked best for it; ``--lr`` overrides both."""
    from agents.vpn.config import VPNConfig
    from agents.vpn.dqn import make_dqn
    from agents.vpn.trainer import build_agent
    from envs import EnvSpec, make_vec_env

    cfg = VPNConfig(algo=algo, lr=lr, n_envs=2)
    venv = make_vec_env(EnvSpec(cfg.env), cfg.n_envs, 0)
    try:
        if algo == "vpn":
            optimizer = build_agent(cfg, venv.observation_space, 4).optimizer
        else:
            optimizer = make_dqn(cfg, venv).policy.optimizer
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    finally:
        venv.close()


def test_ctrl_c_checkpoints_the_step_it_arrives_at_and_resume_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import os
    import signal

    import agents.vpn.trainer as trainer

    sent: list[int] = []

    def epsilon_at(step: int, *args):  # noqa: ANN202  (called once per env step)
        if step >= 100 and not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)
        return real(step, *args)

    real = trainer.epsilon_at
    monkeypatch.setattr(trainer, "epsilon_at", epsilon_at)
    run = tmp_path / "run"
    assert train(run, "--steps", "400") == 130  # checkpoint-every 80: the next is not due
    err = capsys.readouterr().err
    assert "Ctrl-C: stopping after a checkpoint" in err
    assert f"stopped at step 104, checkpointed: `rlkit vpn train --run-dir {run} --resume`" in err
    assert (run / "checkpoints/latest").read_text() == "step_0000000104"
    assert not (run / "model.pt").exists()
    assert main(["vpn", "train", "--run-dir", str(run), "--resume"]) == 0
    assert (run / "checkpoints/latest").read_text() == "step_0000000400"
    assert (run / "model.pt").is_file()
    assert_went_on_in_full(run, 400)


def test_sigterm_stops_the_dqn_baseline_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import os
    import signal

    import agents.vpn.dqn as dqn

    real = dqn._RunCallback._on_step

    def on_step(self) -> bool:  # noqa: ANN001
        if self.model.num_timesteps == 60:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(dqn._RunCallback, "_on_step", on_step)
    run = tmp_path / "dqn"
    args = ["vpn", "train", "--algo", "dqn", "--steps", "400", "--run-dir", str(run), *TINY]
    assert main(args) == 143
    # at the end of learn()'s chunk of train_freq 2 x 4 envs, as an uninterrupted run
    assert "stopped at step 64, checkpointed" in capsys.readouterr().err
    assert (run / "checkpoints/latest").read_text() == "step_0000000064"
    assert not (run / "model_dqn.zip").exists()
    monkeypatch.undo()
    assert main(["vpn", "train", "--run-dir", str(run), "--resume"]) == 0
    assert (run / "checkpoints/latest").read_text() == "step_0000000400"
    assert (run / "model_dqn.zip").is_file()


@pytest.mark.parametrize(
    ("algo", "extra"),
    [("vpn", ["--eval-every", "80", "--eval-episodes", "4"]), ("dqn", [])],
)
def test_train_ends_with_a_summary(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    algo: str,
    extra: list[str],
) -> None:
    """Like `rlkit prefs train`, a finished run leaves summary.json (written whole or not at
    all) with the final metrics it prints: the last evaluation (none without --eval-every),
    the steps and updates, the run directory."""
    import agents.vpn.trainer as trainer

    written = []

    def spy(path, data):
        written.append(Path(path).name)
        real(path, data)

    real = trainer.atomic_write_bytes
    monkeypatch.setattr(trainer, "atomic_write_bytes", spy)
    run = tmp_path / "run"
    assert train(run, "--algo", algo, "--steps", "160", *extra) == 0
    assert "summary.json" in written
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["algo"], summary["env"], summary["steps"]) == (algo, "rlkit/Collect-v0", 160)
    assert summary["run_dir"] == str(run) and (run / summary["model"]).is_file()
    assert summary["updates"] > 0
    evals = read_metrics(run).get("charts/eval_reward", [])
    if algo == "vpn":
        state = CheckpointManager(run).load_latest()[1]
        assert (summary["updates"], summary["episodes"]) == (state["updates"], state["episodes"])
        assert summary["plan"] == "4,1"
        assert evals[-1] == (160, summary["eval_reward"]) and summary["eval_step"] == 160
        assert summary["eval_episodes"] == 4
    else:
        assert evals == [] and summary["eval_reward"] is None and summary["eval_step"] is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2:] == [f"run finished: {run}", out[-1]]
    assert out[-1].startswith(f"final: 160 steps, {summary['updates']} updates")
    assert ("greedy eval reward" in out[-1]) == (algo == "vpn")
