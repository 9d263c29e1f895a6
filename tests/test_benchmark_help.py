"""Every script in ``benchmarks/`` parses its command line before it does anything: ``--help``
describes a benchmark instead of running it (and rewriting its results under
``benchmarks/results/``), and an unknown option is refused."""

from __future__ import annotations

import ast
import subprocess
import sys

from benchmark_scripts import BENCHMARKS


def _parses_arguments(tree: ast.Module) -> bool:
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = {
        c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", "")
        for c in calls
    }
    return bool(names & {"parse_args", "parse_known_args", "cli"})


def test_every_runnable_benchmark_parses_its_arguments():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    runnable = [p for p in scripts if 'if __name__ == "__main__"' in p.read_text()]
    assert len(runnable) >= 20
    silent = [p.name for p in runnable if not _parses_arguments(ast.parse(p.read_text()))]
    assert silent == []


def test_help_describes_a_benchmark_without_running_it_and_a_typo_is_refused():
    script = str(BENCHMARKS / "mujoco_fingerprint.py")
    out = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.startswith("usage: mujoco_fingerprint.py")
    assert '"bench"' not in out.stdout  # no result line: it did not run
    out = subprocess.run(
        [sys.executable, script, "--sedd", "1"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "unrecognized arguments: --sedd 1" in out.stderr
