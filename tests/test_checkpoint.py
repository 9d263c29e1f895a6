"""Atomic checkpoints: what a kill at each moment of a save leaves, and what resumes from it."""

import signal
import subprocess
import sys

import pytest

from rlkit.core.checkpoint import CheckpointError, CheckpointManager


def _save(manager: CheckpointManager, step: int) -> None:
    manager.save(step, {"step": step}, {"policy.zip": lambda p: p.write_bytes(b"zip")})


def test_saves_keep_the_newest_two_and_point_at_the_last(tmp_path):
    manager = CheckpointManager(tmp_path)
    assert not manager.any()
    for step in (0, 512, 1024):
        _save(manager, step)
    assert manager.any()
    assert sorted(p.name for p in manager.root.iterdir()) == [
        "latest", "step_0000000512", "step_0000001024",
    ]  # fmt: skip
    path, state = manager.load_latest()
    assert path.name == "step_0000001024" and state == {"step": 1024}
    assert (path / "policy.zip").read_bytes() == b"zip"


def test_keeping_fewer_than_one_checkpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1"):
        CheckpointManager(tmp_path, keep=0)
    manager = CheckpointManager(tmp_path, keep=1)
    for step in (0, 512):
        _save(manager, step)
    assert sorted(p.name for p in manager.root.iterdir()) == ["latest", "step_0000000512"]


def test_killed_before_the_pointer_was_first_written_the_renamed_checkpoint_is_latest(tmp_path):
    manager = CheckpointManager(tmp_path)
    _save(manager, 0)
    manager.latest_file.unlink()  # the kill came after the rename, before the pointer
    (manager.root / ".step_0000000512.tmp99").mkdir()  # and a later save's unfinished folder
    path, state = manager.load_latest()
    assert path.name == "step_0000000000" and state == {"step": 0}


def test_an_unfinished_first_save_is_no_checkpoint_and_the_next_save_clears_it(tmp_path):
    manager = CheckpointManager(tmp_path)
    (manager.root / ".step_0000000000.tmp99").mkdir(parents=True)  # killed mid-save
    assert not manager.any()
    with pytest.raises(CheckpointError, match="stopped before writing its first"):
        manager.latest()
    _save(manager, 0)  # the run, started again, saves step 0 from another process
    assert sorted(p.name for p in manager.root.iterdir()) == ["latest", "step_0000000000"]


_KILLED_MID_SAVE = """
import os, signal, sys
from rlkit.core.checkpoint import CheckpointManager

def half_then_kill(path):
    path.write_bytes(b"half a zip")
    os.kill(os.getpid(), signal.SIGKILL)

CheckpointManager(sys.argv[1]).save(int(sys.argv[2]), {"step": -1}, {"policy.zip": half_then_kill})
"""


@pytest.mark.parametrize("step", [512, 0])
def test_a_save_killed_halfway_leaves_the_previous_checkpoint_whole(tmp_path, step):
    """kill -9 while a writer writes the policy, in a new step's save and in a re-save of the
    step that is already there (as after a resume): the checkpoint before it is untouched."""
    manager = CheckpointManager(tmp_path)
    _save(manager, 0)
    before = {p.name: p.read_bytes() for p in (manager.root / "step_0000000000").iterdir()}
    args = [sys.executable, "-c", _KILLED_MID_SAVE, str(tmp_path), str(step)]
    assert subprocess.run(args, check=False).returncode == -signal.SIGKILL
    if step != 0:
        assert not (manager.root / f"step_{step:010d}").exists()
    path, state = manager.load_latest()
    assert path.name == "step_0000000000" and state == {"step": 0}
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    _save(manager, 1024)  # the next save clears what the killed one left
    assert sorted(p.name for p in manager.root.iterdir()) == [
        "latest", "step_0000000000", "step_0000001024",
    ]  # fmt: skip


def test_a_re_save_at_the_same_step_replaces_it_and_leaves_nothing_aside(tmp_path):
    manager = CheckpointManager(tmp_path)
    _save(manager, 0)
    manager.save(0, {"step": 0, "again": True}, {"policy.zip": lambda p: p.write_bytes(b"zip2")})
    path, state = manager.load_latest()
    assert state == {"step": 0, "again": True} and (path / "policy.zip").read_bytes() == b"zip2"
    assert sorted(p.name for p in manager.root.iterdir()) == ["latest", "step_0000000000"]


def test_a_pointer_to_a_missing_checkpoint_is_an_error_not_a_guess(tmp_path):
    manager = CheckpointManager(tmp_path)
    _save(manager, 0)
    manager.latest_file.write_text("step_0000009999")
    with pytest.raises(CheckpointError, match="names a missing checkpoint"):
        manager.latest()


def test_pack_round_trips_large_arrays_and_compresses_frames():
    import numpy as np

    from rlkit.core.checkpoint import pack, unpack

    frames = np.zeros((300, 84, 84, 4), np.uint8)
    frames[:, 10:20, 30:40] = 255  # a paddle
    obj = {"frames": frames, "view": np.arange(4000.0).reshape(40, 100)[:, ::3], "n": 7}
    blob = pack(obj)
    back = unpack(blob)
    assert back["n"] == 7 and np.array_equal(back["frames"], frames)
    assert np.array_equal(back["view"], obj["view"])
    assert len(blob) < frames.nbytes / 50


def test_a_save_whose_writer_fails_leaves_nothing_behind(tmp_path):
    """A writer that raises (a full disk) or makes no file: the error goes through, the
    previous checkpoint stays the latest, and no half-written folder is left."""
    manager = CheckpointManager(tmp_path)
    _save(manager, 0)

    def failing(path):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        manager.save(512, {"step": 512}, {"policy.zip": failing})
    with pytest.raises(FileNotFoundError):
        manager.save(512, {"step": 512}, {"policy.zip": lambda path: None})
    assert sorted(p.name for p in manager.root.iterdir()) == ["latest", "step_0000000000"]
    assert manager.load_latest()[1] == {"step": 0}
