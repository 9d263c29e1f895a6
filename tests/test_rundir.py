"""Run directories: a resumed run refuses flags that would change its saved settings."""

from __future__ import annotations

import dataclasses

import pytest

from rlkit.core.errors import UserError
from rlkit.core.rundir import refuse_changes_on_resume


@dataclasses.dataclass(frozen=True)
class Inner:
    learning_rate: float | None = None


@dataclasses.dataclass(frozen=True)
class Config:
    steps: int = 100
    env: str = "Hopper-v5"
    fast: bool = False
    sizes: tuple[int, ...] = (64, 64)
    inner: Inner = dataclasses.field(default_factory=Inner)


SAVED = Config(steps=50, fast=True, sizes=(32,), inner=Inner(learning_rate=0.1))
ALLOWED = {"--resume", "--run-dir", "--steps"}


def test_repeating_saved_values_is_accepted() -> None:
    argv = ["--resume", "--run-dir", "r", "--steps", "500", "--fast", "--sizes", "32",
            "--inner.learning-rate=0.1"]  # fmt: skip
    given = Config(steps=500, fast=True, sizes=(32,), inner=Inner(learning_rate=0.1))
    refuse_changes_on_resume(argv, given, SAVED, ALLOWED)  # no error


def test_changed_settings_are_named_in_one_line() -> None:
    argv = ["--resume", "--run-dir", "r", "--no-fast", "--inner.learning-rate", "0.2",
            "--env", "Hopper-v5"]  # fmt: skip
    given = Config(fast=False, inner=Inner(learning_rate=0.2))
    with pytest.raises(UserError) as info:
        refuse_changes_on_resume(argv, given, SAVED, ALLOWED)
    assert str(info.value) == (
        "--resume continues a run with its saved settings; only --steps may change, not"
        " --inner.learning-rate (saved: 0.1), --no-fast (saved: True)"
    )  # --env repeats the saved Hopper-v5: not named
