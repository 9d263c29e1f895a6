"""Where a run's numbers came from: one line per invocation in the run's ``provenance.jsonl``.

Results depend on more than the settings in ``config.json``: MuJoCo releases simulate
differently, and floating point differs from CPU to CPU (BENCHMARKS.md, "Simulator
versions"). Each ``train`` invocation (a new run or a ``--resume``) appends what it ran with:
the command line, the code (rlkit's version and, in a git checkout, its commit), the versions
of the libraries that shape the numbers, and the machine.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions change what a run computes.
PACKAGES = (
    "rlkit", "torch", "numpy", "mujoco", "gymnasium", "ale-py", "stable-baselines3",
    "sb3-contrib", "ray",
)  # fmt: skip
FILE_NAME = "provenance.jsonl"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(folder: Path) -> str | None:
    """The commit checked out where rlkit's source lives (``+dirty`` with uncommitted
    changes), or None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


#: Environment variables that pick the float kernels torch's BLAS (MKL) and oneDNN run: set,
#: they change a run's arithmetic on one CPU as another CPU model would.
KERNEL_VARIABLES = (
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere ``platform.processor()``), followed
    by any of :data:`KERNEL_VARIABLES` set, e.g. ``Intel(R) Xeon(R) Processor
    (MKL_ENABLE_INSTRUCTIONS=AVX2)``: runs on two models, or on one with other kernels, need
    not reproduce each other's floating point, nor the returns built on it."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    kernels = [f"{k}={os.environ[k]}" for k in KERNEL_VARIABLES if os.environ.get(k)]
    return f"{name} ({', '.join(kernels)})" if kernels else name


def provenance(argv: list[str]) -> dict[str, Any]:
    """What this process runs with: UTC time, ``argv``, rlkit's commit, library versions,
    Python, the CPU model and the cores it may use."""
    source = Path(__file__).resolve().parents[2]
    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": list(argv),
        "commit": _git_commit(source),
        "versions": {name: _version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
    }


def record_provenance(run_dir: Path, argv: list[str]) -> Path:
    """Append this invocation's :func:`provenance` to ``run_dir/provenance.jsonl`` (one JSON
    object per line, earlier ones kept) and return the file's path."""
    path = Path(run_dir) / FILE_NAME
    with open(path, "a") as f:
        f.write(json.dumps(provenance(argv)) + "\n")
    return path
