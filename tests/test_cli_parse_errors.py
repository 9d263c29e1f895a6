"""Flags tyro cannot parse, and invalid policy settings: one line on stderr, exit 2, for every
command (tyro's own error screen is a multi-line box)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlkit.cli import main

CASES = [
    (["prefs", "train", "--steps", "2.5"], "error: Error parsing --steps: '2.5' is not a whole number"),
    (["prefs", "train", "--labels", "1e-3"],
     "error: Error parsing --labels: '1e-3' is not a whole number"),
    (["prefs", "train", "--steps", "1e999999999"],  # not a billion-digit int
     "error: Error parsing --steps: '1e999999999' is out of range"),
    (["vpn", "train", "--n-envs", "ten"], "error: Error parsing --n-envs: 'ten' is not a whole number"),
    (["prefs", "train", "--query-strategy", "foo"],
     "error: invalid choice 'foo' for argument '--query-strategy'. Expected one of"
     " ('disagreement', 'uniform', 'entropy')."),
    (["prefs", "train", "--stepz", "5"],
     "error: Unrecognized options: --stepz, 5; did you mean --steps?"),
    (["prefs", "train", "--labels"], "error: Missing value for argument '--labels'."),
    (["prefs", "train", "--early-terminatio"],
     "error: Unrecognized options: --early-terminatio; did you mean --early-termination? ("),
    (["vpn", "train", "--nope"], "error: Unrecognized options: --nope"),
    (["ird", "lavaland", "--beta", "x"],
     "error: Error parsing --beta: could not convert string to float: 'x'"),
    (["prefs", "train", "--policy.learning-rate", "-1"],
     "error: --policy.learning-rate has an invalid value -1.0"),
    (["prefs", "train", "--policy.gamma", "1.5"], "error: --policy.gamma has an invalid value 1.5"),
    (["prefs", "train", "--trainer.random-response", "1"],
     "error: --trainer.random-response has an invalid value 1.0"),
    (["prefs", "train", "--trainer.l2-factor", "0.5"],
     "error: --trainer.l2-factor has an invalid value 0.5"),
    (["prefs", "train", "--trainer.l2-max", "-1"],
     "error: --trainer.l2-max has an invalid value -1.0"),
    (["prefs", "train", "--env", "Hopper-v5", "--trainer.l2-init", "0.02"],
     "error: --trainer.l2-init 0.02 is above the L2 cap 0.01 (--trainer.l2-max;"),
    (["prefs", "train", "--trainer.input-stats-segments", "0"],
     "error: --trainer.input-stats-segments has an invalid value 0"),
    (["prefs", "train", "--env", "ALE/Pong-v5", "--env-reward", "paper"],
     "error: --env-reward paper is defined for Hopper-v5, Walker2d-v5, Ant-v5, HalfCheetah-v5,"
     " Swimmer-v5; not for ALE/Pong-v5"),
    (["prefs", "train", "--env-reward", "paper", "--early-termination"],
     "error: --env-reward paper runs episodes to the time limit"),
    # flags the run would ignore
    (["prefs", "train", "--teacher", "human", "--teacher-model.noise", "mistake"],
     "error: --teacher-model.noise sets the synthetic teacher, and --teacher human has none"),
    (["prefs", "train", "--teacher", "human", "--synthetic-share", "0.9"],
     "error: --synthetic-share is the synthetic teacher's share under --teacher mixed; this run"
     " has --teacher human"),
    (["prefs", "train", "--synthetic-share=0.2"],
     "error: --synthetic-share is the synthetic teacher's share under --teacher mixed"),
    (["prefs", "train", "--env", "Hopper-v5", "--atari-segment-steps", "3"],
     "error: --atari-segment-steps sets Atari segments; Hopper-v5's last --segment-seconds"),
    (["prefs", "train", "--env", "ALE/Pong-v5", "--segment-seconds", "1"],
     "error: --segment-seconds sets MuJoCo segments; ALE/Pong-v5's last --atari-segment-steps"),
    (["prefs", "train", "--teacher-model.eps", "0.2"],
     "error: --teacher-model.eps sets the mistake noise model, and this run's teacher is"
     " rational: add --teacher-model.noise mistake, or drop it"),
    (["prefs", "train", "--teacher", "mixed", "--teacher-model.noise", "mistake",
      "--teacher-model.beta", "2"],
     "error: --teacher-model.beta sets the bradley_terry noise model, and this run's teacher"
     " is mistake"),
    (["prefs", "train", "--query-strategy", "uniform", "--oversample", "20"],
     "error: --oversample sets the candidates scored per query; --query-strategy uniform"),
    (["prefs", "train", "--env", "ALE/Pong-v5", "--no-early-termination"],
     "error: --early-termination sets MuJoCo episodes; ALE/Pong-v5's end with the game"),
    (["prefs", "train", "--env", "ALE/Pong-v5", "--reward-hidden", "32"],
     "error: --reward-hidden sets the mlp backbone's layers; this run's is nature_cnn"),
    (["prefs", "train", "--backbone", "selu_mlp", "--reward-hidden", "32"],
     "error: --reward-hidden sets the mlp backbone's layers; this run's is selu_mlp"),
    (["prefs", "train", "--env", "ALE/Pong-v5", "--policy.no-normalize-obs"],
     "error: --policy.normalize-obs sets TRPO's observation normalization; this run's policy"
     " is A2C"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "start"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_flag_is_one_line_and_exit_2(argv, start, capsys, tmp_path):
    code = main([*argv, "--run-dir", str(tmp_path / "run")] if argv[0] == "prefs" else argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(start), err
    assert "╭" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_counts_take_the_ways_papers_and_scripts_write_them():
    from rlkit.cli import run_tyro
    from rlkit.loops.preference_config import PrefsConfig

    config = run_tyro(
        PrefsConfig,
        ["--steps", "1e6", "--labels", "1_400", "--n-envs", "1e1", "--reward-hidden", "6.4e1", "32",
         "--checkpoint-every", "2.5e4"],
        prog="rlkit prefs train",
    )  # fmt: skip
    assert config.steps == 1_000_000 and isinstance(config.steps, int)
    assert config.labels == 1400
    assert config.n_envs == 10  # an optional int
    assert config.reward_hidden == (64, 32)  # a tuple of ints
    assert config.checkpoint_every == 25_000


def test_help_still_prints_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prefs", "train", "--help"])
    assert exc.value.code == 0
    assert "--policy-reset-at" in capsys.readouterr().out


def test_the_command_list_goes_to_stdout_when_asked_for_and_to_stderr_when_missing(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("usage: rlkit GROUP COMMAND") and out.err == ""
    listed = [line.split()[1:3] for line in out.out.splitlines()[2:]]
    assert ["ird", "lavaland"] in listed and ["prefs", "train"] in listed
    starts = {re.match(r"  rlkit \S+ \S+ +", line).end() for line in out.out.splitlines()[2:]}
    assert len(starts) == 1  # descriptions in one column
    for argv in ([], ["prefs"]):
        assert main(argv) == 2
        out = capsys.readouterr()
        assert out.out == "" and out.err.startswith("usage: rlkit GROUP COMMAND")
    assert main(["prefs", "trian"]) == 2
    assert (
        capsys.readouterr().err
        == "error: unknown command 'rlkit prefs trian'; did you mean train?\n"
    )


def test_an_os_error_in_a_command_is_one_line_and_exit_1(monkeypatch, capsys):
    """The machine refusing (disk full, no permission) is reported, not a traceback."""
    import rlkit.commands.prefs as prefs

    def full_disk(argv):
        raise OSError(28, "No space left on device", "/runs/x/store.sqlite")

    monkeypatch.setattr(prefs, "train", full_disk)
    assert main(["prefs", "train"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: No space left on device: /runs/x/store.sqlite"]


def test_an_unforeseen_error_is_one_line_naming_the_file_with_its_traceback(monkeypatch, capsys):
    """An exception no check turned into a UserError still reaches the user as one line and
    exit code 1; the traceback is kept in a file, and RLKIT_TRACEBACK=1 lets it through."""
    import rlkit.commands.prefs as prefs

    def broken(argv):
        raise TypeError("'NoneType' object is not a mapping\nsecond line")

    monkeypatch.setattr(prefs, "evaluate", broken)
    monkeypatch.delenv("RLKIT_TRACEBACK", raising=False)
    assert main(["prefs", "eval", "runs/x"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "error: rlkit prefs eval failed: TypeError: 'NoneType' object is not a mapping (traceback in "
    )
    log = Path(lines[0].split("traceback in ", 1)[1].split(";", 1)[0])
    try:
        text = log.read_text()
        assert text.startswith("rlkit prefs eval runs/x\n")
        assert "Traceback (most recent call last)" in text and "in broken" in text
    finally:
        log.unlink()
    monkeypatch.setenv("RLKIT_TRACEBACK", "1")
    with pytest.raises(TypeError, match="not a mapping"):
        main(["prefs", "eval", "runs/x"])


EMPTY_PATHS = [
    (["prefs", "train", "--steps", "10", "--run-dir", ""], "--run-dir"),
    (["prefs", "train", "--run-dir="], "--run-dir"),
    (["prefs", "eval", ""], "DIR"),
    (["label", "serve", "", "--port", "0"], "DIR"),
    (["label", "export", "RUN", "--output", ""], "--output"),
    (["vpn", "train", "--run-dir", ""], "--run-dir"),
    (["vpn", "eval", "--run-dir", "RUN", "--output="], "--output"),
    (["ird", "lavaland", "--out-dir", ""], "--out-dir"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "name"), EMPTY_PATHS, ids=[" ".join(a) for a, _ in EMPTY_PATHS])
def test_an_empty_path_is_refused_not_read_as_the_current_directory(
    argv, name, capsys, tmp_path, monkeypatch
):
    """``--run-dir "$RUN"`` with RUN unset is ``Path("")``, the current directory: a run, an
    export or IRD's pictures would land there. The current directory here is empty (a new run
    would take it) and stays so."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: rlkit {argv[0]} {argv[1]}") and err.count("\n") == 1
    assert f": {name} is empty (an unset shell variable?)" in err
    assert list(tmp_path.iterdir()) == []


def test_a_dot_is_still_the_current_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["prefs", "eval", "."]) == 2
    assert "holds no run" in capsys.readouterr().err


SPAM = """
import sys
sys.path.insert(0, {folder!r})
import rlkit.cli as cli
cli.COMMANDS[("spam", "lines")] = ("spam_command:lines", "print lines for ever")
sys.exit(cli.main(["spam", "lines"]))
"""


def test_output_cut_off_by_its_reader_ends_quietly_as_a_unix_tool_does(tmp_path):
    """`rlkit label export RUN | head -1`: once the reader has gone, the command stops with
    SIGPIPE's exit code (141, as `yes | head` gives) and says nothing: no error line, no
    traceback, no "Exception ignored" at exit."""
    (tmp_path / "spam_command.py").write_text(
        "def lines(argv):\n    while True:\n        print('a line of output')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", SPAM.format(folder=str(tmp_path))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout.readline() == b"a line of output\n"
    proc.stdout.close()  # as head does once it has its line
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error_line(monkeypatch, capsys):
    """A pipe to a child process that died is a real failure, not a reader that had enough."""
    import rlkit.commands.prefs as prefs

    def child_gone(argv):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(prefs, "train", child_gone)
    assert main(["prefs", "train"]) == 1
    assert capsys.readouterr().err.splitlines() == ["error: Broken pipe"]
