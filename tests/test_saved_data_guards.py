"""What is saved stays saved: bad input to `rlkit prefs`, `label export` and `vpn eval` is one
line and a non-zero exit, and leaves every file of an existing run byte for byte as it was."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rlkit.loops.preference as preference
from rlkit.cli import main
from rlkit.core.checkpoint import CheckpointManager
from rlkit.store import Store

TINY = [
    "--env", "Hopper-v5", "--steps", "1024", "--labels", "10", "--n-envs", "2",
    "--round-steps", "512", "--policy.n-steps", "256", "--segment-seconds", "0.2",
    "--eval-episodes", "0", "--checkpoint-every", "512", "--pool-size", "100",
    "--reward-learner", "thread",
]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("saved") / "run"
    assert main(["prefs", "train", *TINY, "--run-dir", str(run)]) == 0
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def _snapshot(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    assert lines and lines[-1].startswith("error: "), lines
    return lines[-1]


def test_label_export_with_stdout_closed_asks_for_a_file_and_prints_into_nothing_else(
    finished_run, tmp_path
):
    """`rlkit label export RUN >&-`: one line asking for --output (it was an AttributeError).
    With --output, the export works; stdout's number goes to /dev/null, not to a file the
    command opens, so its prints land in no file of the run."""
    run = _copy(finished_run, tmp_path)
    before = _snapshot(run)
    cmd = [sys.executable, "-m", "rlkit.cli", "label", "export", str(run)]
    proc = subprocess.run(
        cmd, preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: standard output is closed: give --output FILE for the labels\n"
    out = tmp_path / "labels.jsonl"
    proc = subprocess.run(
        [*cmd, "--output", str(out)], preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"exported {len(out.read_text().splitlines())} labels"
    assert len(out.read_text().splitlines()) >= 5
    assert _snapshot(run) == before


def test_label_export_never_writes_over_the_runs_own_files(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    (run / "summary.json").unlink()  # as in a run not finished yet: written at its end
    before = _snapshot(run)
    for target in ("store.sqlite", "config.json", "checkpoints/latest", "store.sqlite-wal",
                   "segments/new.csv", "summary.json", "provenance.jsonl"):  # fmt: skip
        output = ["--output", str(run / target), "--force"]  # not even with --force
        assert main(["label", "export", str(run), *output]) == 2
        assert "would overwrite a file of the run" in _one_error_line(capsys)
    assert main(["label", "export", str(run), "--output", str(tmp_path / "no" / "x.csv")]) == 2
    assert "folder is missing" in _one_error_line(capsys)
    assert _snapshot(run) == before
    # a new file, even inside the run directory, is fine
    assert main(["label", "export", str(run), "--output", str(run / "labels.jsonl")]) == 0
    assert len((run / "labels.jsonl").read_text().splitlines()) == 10


def _read_only_dir(path: Path) -> bool:
    """Make ``path`` read-only even for root (``chattr +i``: nothing may be created in it);
    False where this machine does not allow that."""
    import subprocess

    if os.geteuid() != 0:
        path.chmod(0o555)
        return True
    try:
        return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    except FileNotFoundError:  # no e2fsprogs
        return False


def test_label_export_reads_a_run_directory_it_cannot_write(finished_run, tmp_path, capsys):
    """An archived run (or another user's) in a read-only directory still exports its labels:
    the store is opened read-only, and nothing is created beside it."""
    import subprocess

    run = _copy(finished_run, tmp_path)
    before = _snapshot(run)
    if not _read_only_dir(run):
        pytest.skip("cannot make a directory read-only here (no chattr +i)")
    try:
        out = tmp_path / "labels.jsonl"
        assert main(["label", "export", str(run), "--output", str(out)]) == 0
        assert len(out.read_text().splitlines()) == 10
        assert "exported 10 labels" in capsys.readouterr().err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(run)], check=True)
        else:
            run.chmod(0o755)
    assert _snapshot(run) == before  # no -wal or -shm file, nothing changed


def test_label_export_keeps_an_existing_output_unless_forced(
    finished_run, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "labels.csv"
    out.write_text("an earlier export, edited by hand\n")
    assert main(["label", "export", str(finished_run), "--output", str(out)]) == 2
    assert "already exists; pass --force" in _one_error_line(capsys)
    assert out.read_text() == "an earlier export, edited by hand\n"
    # --force replaces it, but only with a complete export: one that fails half-way (here
    # after its first rows) leaves the old file as it was and no temporary file beside it
    import feedback_ui.export as export

    def half_then_fail(store, fmt, stream):
        stream.write("left,right\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "write_export", half_then_fail)
    args = ["label", "export", str(finished_run), "--format", "csv", "--output", str(out)]
    assert main([*args, "--force"]) == 2
    assert "No space left on device" in _one_error_line(capsys)
    assert out.read_text() == "an earlier export, edited by hand\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]
    monkeypatch.undo()
    assert main([*args, "--force"]) == 0
    assert len(out.read_text().splitlines()) == 11  # a header and the 10 labels
    # a device is written to as it is, never replaced by a file: /dev/full says "disk full"
    assert main(["label", "export", str(finished_run), "--output", "/dev/full"]) == 2
    assert "cannot write --output /dev/full: No space left on device" in _one_error_line(capsys)
    assert Path("/dev/full").is_char_device()


def test_a_fresh_run_refuses_a_directory_with_anything_in_it(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    (run / "config.json").unlink()  # its labels and checkpoints are still there
    before = _snapshot(run)
    assert main(["prefs", "train", *TINY, "--run-dir", str(run)]) == 2
    assert "is not empty" in _one_error_line(capsys)
    assert _snapshot(run) == before


def _damage_store(run: Path) -> None:
    (run / "store.sqlite").write_bytes(b"not a database" * 100)


def _drop_store(run: Path) -> None:
    for path in run.glob("store.sqlite*"):
        path.unlink()


def _drop_segments_table(run: Path) -> None:
    import sqlite3

    with sqlite3.connect(run / "store.sqlite") as conn:
        conn.execute("DROP TABLE segments")
    conn.close()


def _lose_a_segment(run: Path) -> None:
    sorted((run / "segments").iterdir())[3].unlink()


def _summary_as_a_folder(run: Path) -> None:  # summary.json is written again at the end
    (run / "summary.json").unlink()
    (run / "summary.json").mkdir()


def _checkpoints_as_a_file(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("x")


def _damage_policy(run: Path) -> None:
    (CheckpointManager(run).latest() / "policy.zip").write_bytes(b"not a zip")


def _mistype_config(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    config["steps"] = "abc"
    (run / "config.json").write_text(json.dumps(config))


def _cut_config(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    del config["labels"]
    (run / "config.json").write_text(json.dumps(config))


def _list_config(run: Path) -> None:
    (run / "config.json").write_text("[1, 2]")


def _binary_config(run: Path) -> None:
    (run / "config.json").write_bytes(b"\xff\xfe\x00garbage")


def _other_env(run: Path) -> None:  # config.json edited: the checkpoint's networks do not fit
    config = json.loads((run / "config.json").read_text())
    config["env"] = "Walker2d-v5"
    (run / "config.json").write_text(json.dumps(config))


def _long_pointer(run: Path) -> None:
    (run / "checkpoints" / "latest").write_text("x" * 5000)


def _cut_a_segment(run: Path) -> None:
    path = sorted((run / "segments").iterdir())[3]
    path.write_bytes(path.read_bytes()[:100])


def _edit_config(run: Path, **changes) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **changes}))


def _misspell_env(run: Path) -> None:
    _edit_config(run, env="Hopperx-v5")


def _null_policy(run: Path) -> None:
    _edit_config(run, policy=None)


def _drop_trainer(run: Path) -> None:  # a whole group of settings cut out
    config = json.loads((run / "config.json").read_text())
    del config["trainer"]
    (run / "config.json").write_text(json.dumps(config))


def _vpn_config(run: Path) -> None:  # another kind of run's config.json
    (run / "config.json").write_text(
        json.dumps({"env": "rlkit/Collect-v0", "plan": "4,1", "seed": 0})
    )


#: Damage `prefs eval` does not see (it reads no store) or names in its own words ("no checkpoint").
NOT_FOR_EVAL = (
    _damage_store, _drop_store, _drop_segments_table, _lose_a_segment, _other_env,
    _checkpoints_as_a_file, _cut_a_segment, _summary_as_a_folder,
)  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "says"),
    [(_damage_store, "is not a readable SQLite store"), (_drop_store, "store.sqlite is missing"),
     (_drop_segments_table, "store.sqlite lacks its segments table: damaged; left as it is"),
     (_lose_a_segment, "segments the store lists have no file in"),
     (_checkpoints_as_a_file, "checkpoints is not a directory: the run is damaged"),
     (_summary_as_a_folder, "summary.json is a directory where the run writes a file"),
     (_damage_policy, "policy.zip is missing or not a zip archive"),
     (_mistype_config, "config field 'steps' of PrefsConfig is 'abc', not int"),
     (_list_config, "holds a JSON list, not a config object"),
     (_cut_config, "config.json lacks labels: it is incomplete"),
     (_binary_config, "is not text"), (_long_pointer, "names a missing checkpoint"),
     (_other_env, "does not fit the run's config.json (size mismatch for"),
     (_cut_a_segment, "1 of the {segments} segment files in"),
     (_misspell_env, "config.json names an unknown env id 'Hopperx-v5'; did you mean Hopper-v5"),
     (_null_policy, "config.json holds policy = null, not a group of settings: it is damaged"),
     (_vpn_config, "config.json is a VPN run's (rlkit vpn train), not a preference run's"),
     (_drop_trainer, "config.json lacks trainer: it is incomplete")],
)  # fmt: skip
def test_resume_of_a_damaged_run_says_what_and_changes_nothing(
    finished_run, tmp_path, capsys, damage, says
):
    run = _copy(finished_run, tmp_path)
    says = says.format(segments=len(list((run / "segments").glob("seg_*.npz"))))
    damage(run)
    before = _snapshot(run)
    assert main(["prefs", "train", "--run-dir", str(run), "--resume", "--steps", "2048"]) == 2
    line = _one_error_line(capsys)
    assert says in line and len(line) < 400, line
    if damage in (_damage_store, _drop_segments_table):  # nor does an export of its labels
        assert main(["label", "export", str(run), "--output", str(tmp_path / "out.csv")]) == 2
        assert says in _one_error_line(capsys)
        assert not (tmp_path / "out.csv").exists()
    if damage not in NOT_FOR_EVAL:
        assert main(["prefs", "eval", str(run), "--episodes", "1"]) == 2
        assert says in _one_error_line(capsys)
    assert _snapshot(run) == before  # nothing written, not even a TensorBoard event file


@pytest.mark.parametrize(
    ("flags", "says"),
    [(["--trainer.lr", "inf"], "--trainer.lr must be a finite number, got inf"),
     (["--teacher-model.beta", "nan"], "--teacher-model.beta must be a finite number, got nan"),
     (["--policy.learning-rate", "inf"], "--policy.learning-rate must be a finite number"),
     (["--label-decay", "inf"], "--label-decay must be a finite number"),
     (["--seed", str(2**32)], "--seed has an invalid value 4294967296"),
     (["--reward-scale", "-1"], "--reward-scale has an invalid value -1.0"),
     (["--torch-threads", "100000"], "--torch-threads has an invalid value 100000"),
     (["--ray-address", "127.0.0.1:1"], "need --ray-workers N"),
     (["--no-ray-worker-rollouts"], "need --ray-workers N"),
     (["--ray-compress", "on"], "need --ray-workers N"),
     (["--ray-workers", "3", "--n-envs", "2"], "--ray-workers 3 is more than the 2 envs:"),
     (["--ray-env-processes", "2"], "need --ray-workers N"),
     (["--ray-call-timeout", "30"], "need --ray-workers N"),
     (["--ray-workers", "1", "--ray-call-timeout", "0"], "--ray-call-timeout has an invalid"),
     (["--ray-workers", "2", "--n-envs", "5", "--ray-env-processes", "3"],
      "--ray-env-processes 3 is more than the envs of a worker (5 envs on 2 workers: 2 for"),
     (["--ray-workers", "1", "--ray-env-processes", "0"], "--ray-env-processes has an invalid"),
     (["--env", "CartPole-v1"], "CartPole-v1 is neither"),
     (["--n-envs", "100000"], "--steps 1024 is less than one rollout (100000 envs x 256 steps")],
)  # fmt: skip
def test_settings_that_mean_nothing_are_refused_before_anything_is_written(
    tmp_path, capsys, flags, says
):
    assert main(["prefs", "train", *TINY, *flags, "--run-dir", str(tmp_path / "run")]) == 2
    assert says in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_resumed_ray_run_takes_a_new_address_alone(finished_run, tmp_path, capsys):
    """A run saved with --ray-workers 2 resumes with just a new --ray-address (a restarted
    cluster): the address is checked (here: nothing answers, one line, exit 2) and nothing is
    written; a run saved without Ray workers still refuses one."""
    run = _copy(finished_run, tmp_path)
    before = _snapshot(run)
    resume = ["prefs", "train", "--run-dir", str(run), "--resume", "--ray-address", "127.0.0.1:1"]
    assert main(resume) == 2
    assert "need --ray-workers N" in _one_error_line(capsys)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "ray_workers": 2}))
    before[run / "config.json"] = (run / "config.json").read_bytes()
    assert main(resume) == 2
    assert "cannot reach Ray cluster at 127.0.0.1:1" in _one_error_line(capsys)
    assert _snapshot(run) == before


def test_resume_never_shortens_a_run(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    before = _snapshot(run)
    assert main(["prefs", "train", "--run-dir", str(run), "--resume", "--steps", "512"]) == 2
    assert "--steps 512 is below the run's 1024" in _one_error_line(capsys)
    assert _snapshot(run) == before


def test_a_run_that_cannot_start_leaves_nothing_and_can_be_run_again(tmp_path, capsys):
    run = tmp_path / "run"
    # an image backbone for a vector observation fails when the ensemble is built
    assert main(["prefs", "train", *TINY, "--backbone", "nature_cnn", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nature_cnn backbone needs image observations" in err[0]  # only
    assert not run.exists()  # the directory it made is gone too
    run.mkdir()  # one that was there (empty) stays
    # a training batch no machine holds (terabytes of inputs): refused at set-up
    assert main(["prefs", "train", *TINY, "--trainer.batch-size", str(10**9), "--run-dir",
                 str(run)]) == 2  # fmt: skip
    line = _one_error_line(capsys)
    assert "--trainer.batch-size 1,000,000,000 (3 members x 1,000,000,000 pairs x 2" in line
    assert "of memory available here: lower --trainer.batch-size" in line
    assert list(run.iterdir()) == []
    assert main(["prefs", "train", *TINY, "--run-dir", str(run)]) == 0


def test_a_run_that_failed_before_its_first_checkpoint_resumes_with_another_setting(
    tmp_path, capsys
):
    """A learning rate that makes the reward model diverge while it pretrains on the initial
    labels stops the run before its first checkpoint. Nothing but those labels was learned,
    so --resume may change that setting (and any other its labels do not depend on): the run
    starts again from step 0 with every stored label, and config.json says what it ran with.
    Once a checkpoint exists, settings are fixed again."""
    run = tmp_path / "run"
    assert main(["prefs", "train", *TINY, "--trainer.lr", "1e30", "--run-dir", str(run)]) == 1
    assert "loss became nan" in _one_error_line(capsys)
    assert not CheckpointManager(run).any()
    store = Store(run)
    first = [(r.id, r.segment_a, r.segment_b, r.choice) for r in store.labels_after(0)]
    store.close()  # (its connection would leave the WAL's files behind until collected)
    assert first
    before = _snapshot(run)
    resume = ["prefs", "train", "--run-dir", str(run), "--resume"]
    assert main([*resume, "--trainer.lr", "1e-3", "--segment-seconds", "0.3"]) == 2
    line = _one_error_line(capsys)
    assert "stored segments and labels depend on" in line
    assert "not --segment-seconds 0.3 (saved: 0.2)" in line and "--trainer.lr" not in line
    assert main([*resume, "--teacher-model.noise", "mistake"]) == 2
    assert "not --teacher-model.noise mistake (saved: rational)" in _one_error_line(capsys)
    assert main([*resume, "--labels", str(len(first) - 1)]) == 2
    assert f"below the {len(first)} labels the run stored" in _one_error_line(capsys)
    assert _snapshot(run) == before

    assert main([*resume, "--trainer.lr", "1e-3", "--steps", "1536"]) == 0
    err = capsys.readouterr().err
    assert "the run starts again with --steps 1536 (saved: 1024), --trainer.lr 0.001" in err
    assert f"starts again from step 0 with the {len(first)} labels" in err
    config = json.loads((run / "config.json").read_text())
    assert config["trainer"]["lr"] == 1e-3 and config["steps"] == 1536
    labels = [(r.id, r.segment_a, r.segment_b, r.choice) for r in Store(run).labels_after(0)]
    assert labels[: len(first)] == first and len(labels) == 10
    _, state = CheckpointManager(run).load_latest()
    assert state["step"] >= 1536
    assert main([*resume, "--trainer.lr", "1e-2", "--steps", "2048"]) == 2
    assert "not --trainer.lr (saved: 0.001)" in _one_error_line(capsys)


class _Interrupted:
    """A PreferenceLoop whose run is interrupted (Ctrl-C) at once."""

    def __init__(self, cfg, run_dir, console) -> None:
        pass

    def run(self, resume: bool, stop=None, on_begin=None, checkpoint=None) -> None:
        raise KeyboardInterrupt

    def close(self) -> None:
        pass


def test_interrupt_before_the_first_checkpoint_says_where_the_labels_are(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(preference, "PreferenceLoop", _Interrupted)
    run = tmp_path / "run"
    assert main(["prefs", "train", *TINY, "--run-dir", str(run)]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint; the 0 labels stored so far are kept" in err
    assert f"--run-dir {run} --resume` starts the run again from step 0" in err
    assert (run / "config.json").is_file()


def test_a_restart_refused_at_set_up_leaves_the_saved_settings_as_they_were(
    tmp_path, capsys, monkeypatch
):
    """A run with no checkpoint restarts with new settings; one the run refuses when it is
    set up (a batch no memory holds) must not be saved in config.json first, or every later
    plain --resume would be refused the same way."""
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(preference, "PreferenceLoop", _Interrupted)
        assert main(["prefs", "train", *TINY, "--run-dir", str(run)]) == 130
    capsys.readouterr()
    before = _snapshot(run)
    argv = ["prefs", "train", "--run-dir", str(run), "--resume", "--trainer.batch-size"]
    assert main([*argv, str(10**9)]) == 2
    assert "--trainer.batch-size 1,000,000,000 (3 members" in _one_error_line(capsys)
    assert _snapshot(run) == before


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_its_labels(
    tmp_path, capsys, monkeypatch
):
    """Stopped after its initial labels were stored, before step 0 was saved: --resume runs
    from step 0 again, trains on every stored label, asks no query twice, and saves step 0
    as soon as the reward model is pretrained."""
    run = tmp_path / "run"

    def stop(self, epochs=None):  # right after the initial labels are stored
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(preference.PreferenceLoop, "start_reward_training", stop)
        assert main(["prefs", "train", *TINY, "--run-dir", str(run)]) == 130
    store = Store(run)
    first = [(r.id, r.segment_a, r.segment_b, r.choice) for r in store.labels_after(0)]
    segments = {s: store.load_segment(s).obs for _, a, b, _ in first for s in (a, b)}
    assert 0 < len(first) < 10 and store.count_selected_queries() == len(first)
    assert f"the {len(first)} labels stored so far are kept" in capsys.readouterr().err
    assert not CheckpointManager(run).any()

    saves, generators = [], []
    loop = preference.PreferenceLoop
    write, start, run_round = loop._write_checkpoint, loop.start, loop.run_round

    def note_generators(self):
        generators.append((self.rng.bit_generator.state, torch.random.get_rng_state()))

    monkeypatch.setattr(
        loop, "_write_checkpoint", lambda s, whole=False: saves.append(s.steps_done) or write(s)
    )
    monkeypatch.setattr(loop, "start", lambda s: (start(s), note_generators(s))[0])
    monkeypatch.setattr(loop, "run_round", lambda s: (note_generators(s), run_round(s))[1])
    assert main(["prefs", "train", "--run-dir", str(run), "--resume"]) == 0
    err = capsys.readouterr().err
    assert (
        f"no checkpoint yet: the run starts again from step 0 with the {len(first)} labels" in err
    )
    labels = [(r.id, r.segment_a, r.segment_b, r.choice) for r in store.labels_after(0)]
    assert labels[: len(first)] == first and len(labels) == 10
    assert store.count_selected_queries() == 10  # the budget, no query asked twice
    for seg, obs in segments.items():  # the old labels' segments, not overwritten by new ones
        assert (store.load_segment(seg).obs == obs).all()
    new_segments = {s for _, a, b, _ in labels[len(first) :] for s in (a, b)}
    assert min(new_segments - set(segments)) > max(segments)
    assert saves[0] == 0 and saves[-1] >= 1024
    # Saving step 0 drew nothing from the run's generators: the run goes on as without it.
    (after_start, rng_a), (first_round, rng_b) = generators[:2]
    assert after_start == first_round and torch.equal(rng_a, rng_b)
    _, state = CheckpointManager(run).load_latest()
    assert state["last_label_id"] == labels[-1][0]  # every label was trained on


def test_interrupt_after_a_checkpoint_names_it(finished_run, tmp_path, capsys, monkeypatch):
    run = _copy(finished_run, tmp_path)

    monkeypatch.setattr(preference, "PreferenceLoop", _Interrupted)
    assert main(["prefs", "train", "--run-dir", str(run), "--resume", "--steps", "4096"]) == 130
    err = capsys.readouterr().err
    latest = CheckpointManager(run).latest().name
    assert f"interrupted; checkpoint {latest} and all 10 stored labels are saved" in err


HOLDER = """
import sys, time
from pathlib import Path
from rlkit.core.rundir import prepare_run_dir
prepare_run_dir(Path(sys.argv[1]), resume=True)  # as `prefs train --resume` and `vpn train` do
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_trainer_on_a_run_in_use_is_refused_until_the_first_is_gone(
    finished_run, tmp_path, capsys
):
    """Two trainers on one run would interleave checkpoints, labels and logs (the last to save
    decides which checkpoint `latest` names): the second is refused in one line naming the
    first, without writing anything; once the first is gone (a kill -9 too), the run is free."""
    import signal
    import subprocess
    import sys

    from rlkit.core import rundir

    run = _copy(finished_run, tmp_path)
    before = _snapshot(run)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["prefs", "train", "--run-dir", str(run), "--resume"]) == 2
        assert _one_error_line(capsys) == (
            f"error: {run} is in use: another rlkit process (PID {holder.pid}) is training this"
            " run; wait for it to end or stop it first"
        )
        assert _snapshot(run) == before
        assert main(["prefs", "eval", str(run), "--episodes", "1"]) == 0  # a reader may run beside
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["prefs", "train", "--run-dir", str(run), "--resume"]) == 0
    assert rundir._LOCKED == {}  # and the finished command let go of it


@pytest.mark.parametrize(
    ("flags", "why"),
    [(["--labels", "0"], "its label budget was 0"),
     (["--teacher", "human"], "no one labeled a clip (`rlkit label serve` is where people do)")],
)  # fmt: skip
def test_a_run_that_ends_without_a_label_says_so(tmp_path, capsys, flags, why):
    run = ["--steps", "512", "--run-dir", str(tmp_path / "r")]
    assert main(["prefs", "train", *TINY, *flags, *run]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"warning: the run ended without a label, {why}: its policy trained on an untrained"
        " reward model"
    )


def test_the_resume_command_a_stopped_run_prints_can_be_pasted_with_spaces_in_its_path(
    finished_run, tmp_path
):
    import shlex

    from rlkit.commands.stopped import interrupted_line

    run = tmp_path / "my runs" / "hopper 1"
    run.parent.mkdir()
    shutil.copytree(finished_run, run)
    line = interrupted_line(run)
    command = line.split("`")[1]
    assert shlex.split(command) == ["rlkit", "prefs", "train", "--run-dir", str(run), "--resume"]
    assert "all 10 stored labels are saved" in line


def test_a_preference_run_given_to_the_vpn_commands_is_named_as_such(finished_run, capsys):
    before = _snapshot(finished_run)
    says = "config.json is a preference run's (rlkit prefs train), not a VPN run's"
    assert main(["vpn", "eval", str(finished_run), "--episodes", "1"]) == 2
    assert says in _one_error_line(capsys)
    assert main(["vpn", "train", "--run-dir", str(finished_run), "--resume"]) == 2
    assert says in _one_error_line(capsys)
    assert _snapshot(finished_run) == before


def test_a_finished_run_resumed_evaluates_and_logs_its_final_step_once(
    finished_run, tmp_path, capsys
):
    """Resuming a finished run (to see its summary, or to take labels people gave since)
    evaluates it; the evaluation at the last step is logged once however often that is done,
    and no empty progress-N.csv is left in sb3/ for a policy that did not train."""
    from rlkit.core.metrics import read_metrics

    run = _copy(finished_run, tmp_path)
    sb3_before = sorted(p.name for p in (run / "sb3").iterdir())
    for _ in range(2):
        argv = ["prefs", "train", "--run-dir", str(run), "--resume", "--eval-episodes", "1"]
        assert main(argv) == 0
        assert "true return" in capsys.readouterr().out
    evals = read_metrics(run)["charts/true_return_eval"]
    assert [step for step, _ in evals] == [1024]
    assert sorted(p.name for p in (run / "sb3").iterdir()) == sb3_before


def test_a_run_resumes_alike_with_its_resolved_settings_or_without(finished_run, tmp_path):
    """config.json's "resolved" section (what the settings left to the env came to) is a
    record, not a setting: a flag that repeats a saved "auto" is still no change, and a run
    saved before the section existed resumes as well, with its config.json left so."""
    run = _copy(finished_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "auto" and config["resolved"]["backbone"] == "mlp"
    repeated = ["--backbone", "auto", "--policy.algo", "auto", "--seed", "0"]
    assert main(["prefs", "train", "--run-dir", str(run), "--resume", *repeated]) == 0
    assert json.loads((run / "config.json").read_text()) == config
    old = _copy(finished_run, tmp_path / "old")
    del config["resolved"]  # as config.json was written before it had the section
    (old / "config.json").write_text(json.dumps(config))
    assert main(["prefs", "train", "--run-dir", str(old), "--resume", "--steps", "1536"]) == 0
    assert CheckpointManager(old).load_latest()[1]["step"] == 1536
    assert json.loads((old / "config.json").read_text()) == {**config, "steps": 1536}


def test_a_resume_reads_its_checkpoint_once(finished_run, tmp_path, monkeypatch):
    """The checkpoint that --resume checks before it writes anything is the one it restores:
    its state.pt (the segment pool and the envs of a stop's, 100s of MB on Atari) is read
    and unpickled once."""
    run = _copy(finished_run, tmp_path)
    real_load, loads = torch.load, []

    def counting_load(f, *args, **kwargs):
        if isinstance(f, str | os.PathLike) and Path(f).name == "state.pt":
            loads.append(Path(f).parent.name)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert main(["prefs", "train", "--run-dir", str(run), "--resume", "--steps", "1536"]) == 0
    assert loads == ["step_0000001024"]
    assert CheckpointManager(run).load_latest()[1]["step"] == 1536
