"""Atomic checkpoints: write to a temporary name, fsync, then rename into place.

A checkpoint is a directory ``checkpoints/step_<N>/`` holding ``state.pt`` and any other
files the caller writes (an SB3 policy zip, say). It only gets its final name once every
file in it is on disk, and ``checkpoints/latest`` (written atomically too) names the newest
complete one, so a kill -9 at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlkit.core.errors import UserError


class CheckpointError(UserError):
    """A checkpoint is missing or unreadable; nothing has been overwritten."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; left over only by a failure
    _fsync_dir(path.parent)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` a dict atomically."""
    import torch  # here, not at the top: reading a run's checkpoint names needs no torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a dict written by :func:`save_checkpoint`; a missing or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a truncated or foreign file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a checkpoint dict")
    return payload


class CheckpointManager:
    """Versioned, atomic checkpoint directories under ``run_dir/checkpoints``.

    Args:
        run_dir: the run directory.
        keep: how many complete checkpoints to keep (the oldest are deleted after a save).
    """

    def __init__(self, run_dir: str | os.PathLike, keep: int = 2) -> None:
        self.root = Path(run_dir) / "checkpoints"
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the checkpoint just saved), got {keep}")
        self.keep = keep

    @property
    def latest_file(self) -> Path:
        """The pointer file naming the latest complete checkpoint's directory."""
        return self.root / "latest"

    def save(
        self,
        step: int,
        state: dict[str, Any],
        writers: dict[str, Callable[[Path], None]] | None = None,
    ) -> Path:
        """Write ``state`` (as ``state.pt``) and call each ``writers[name](path)`` to write ``name``."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step_{step:010d}"
        tmp = self.root / f".step_{step:010d}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            save_checkpoint(tmp / "state.pt", state)
            for name, write in (writers or {}).items():
                write(tmp / name)
                with open(tmp / name, "rb") as f:  # (a writer that made no file: an error)
                    os.fsync(f.fileno())
            _fsync_dir(tmp)
        except BaseException:  # a failed save leaves nothing half-written behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replaced = None
        if final.exists():  # a re-save at the same step (after a resume) replaces it:
            # renamed aside and deleted once the new one is in place, so that only the instant
            # between the two renames, not a whole rmtree, leaves no step_<N>
            replaced = self.root / f".step_{step:010d}.old{os.getpid()}"
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(final, replaced)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        atomic_write_bytes(self.latest_file, final.name.encode())
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        self._prune(keep_name=final.name)
        return final

    def _prune(self, keep_name: str) -> None:
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in done[: -self.keep]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)
        for unfinished in [*self.root.glob(".step_*.tmp*"), *self.root.glob(".step_*.old*")]:
            shutil.rmtree(unfinished, ignore_errors=True)  # left by a save that was killed

    def any(self) -> bool:
        """Whether a checkpoint was ever completed here (a damaged one counts)."""
        return self.latest_file.is_file() or any(p.is_dir() for p in self.root.glob("step_*"))

    def complete(self) -> list[Path]:
        """The complete checkpoint directories (those with a ``state.pt``), oldest first."""
        return sorted(p for p in self.root.glob("step_*") if (p / "state.pt").is_file())

    def named(self, name: str) -> Path | None:
        """The checkpoint directory ``name`` (e.g. ``step_0000000000``) if it is a complete
        checkpoint here, else None (a name with a path separator is never one)."""
        path = self.root / name
        ok = name.startswith("step_") and "/" not in name and (path / "state.pt").is_file()
        return path if ok else None

    def latest(self) -> Path:
        """The newest complete checkpoint directory; CheckpointError if there is none.

        A ``step_*`` directory only gets its name once complete, so where a kill came between
        that rename and the pointer's first write, the newest such directory is the latest.
        """
        if not self.latest_file.is_file():
            done = self.complete()
            if done:
                return done[-1]
            raise CheckpointError(
                f"no checkpoint in {self.root.parent}: the run stopped before writing its first"
            )
        name = self.latest_file.read_bytes().decode(errors="replace").strip()
        path = self.named(name)
        if path is None:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise CheckpointError(
                f"checkpoint pointer {self.latest_file} names a missing checkpoint {shown!r}"
            )
        return path

    def load_latest(self) -> tuple[Path, dict[str, Any]]:
        """The latest checkpoint's directory and its loaded ``state.pt``.

        Raises:
            CheckpointError: there is no checkpoint, or the pointer names a missing one.
        """
        path = self.latest()
        return path, load_checkpoint(path / "state.pt")


class _Deflated:
    """A write-only file that compresses what it is given (zlib level 1)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(1)
        self.parts: list[bytes] = []

    def write(self, data: bytes | pickle.PickleBuffer) -> int:
        view = memoryview(data)  # protocol 5 hands large arrays over as PickleBuffers
        self.parts.append(self._zlib.compress(view))
        return view.nbytes

    def close(self) -> bytes:
        self.parts.append(self._zlib.flush())
        return b"".join(self.parts)


def pack(obj: object) -> bytes:
    """``obj`` pickled and compressed as it is pickled, so that an Atari pool (400 MB of
    frames, ~60x smaller compressed) is never held uncompressed a second time."""
    out = _Deflated()
    pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
    return out.close()


def unpack(blob: bytes) -> object:
    """What :func:`pack` packed."""
    return pickle.loads(zlib.decompress(blob))
