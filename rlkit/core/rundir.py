"""Run directories: where a job writes its config, logs, checkpoints and plots."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from rlkit.core.errors import UserError


def default_run_name(env_id: str, exp: str, seed: int) -> str:
    """``{env}__{exp}__{seed}__{unix time}``, with the env id made path-safe."""
    return f"{env_id.replace('/', '-')}__{exp}__{seed}__{int(time.time())}"


def prepare_run_dir(run_dir: str | Path, resume: bool) -> Path:
    """Create (or, on resume, check) a run directory.

    A fresh run refuses a directory that already holds a run, so nothing saved there is
    overwritten; ``--resume`` requires one.
    """
    path = Path(run_dir)
    has_run = (path / "config.json").is_file()
    if resume and not has_run:
        raise UserError(
            f"--resume: {path} holds no run (no config.json); drop --resume to start one"
        )
    if not resume and has_run:
        raise UserError(
            f"{path} already holds a run; pass --resume to continue it or choose another --run-dir"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def save_config(run_dir: Path, config: Any) -> None:
    (run_dir / "config.json").write_text(json.dumps(_jsonable(config), indent=2) + "\n")


def load_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} holds no run (no config.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from :func:`save_config`'s JSON.

    Unknown keys are an error (a config from another version should not half-load).
    """
    import typing

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(f"config has unknown fields {sorted(unknown)} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        candidates = [hint, *typing.get_args(hint)]
        sub = next((c for c in candidates if dataclasses.is_dataclass(c)), None)
        if sub is not None and isinstance(value, dict):
            value = dataclass_from_dict(sub, value)
        elif Path in candidates and isinstance(value, str):
            value = Path(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
