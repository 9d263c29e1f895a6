#!/usr/bin/env bash
# Set up rlkit in ./.venv on a fresh machine with Python 3.11.
#   bash scripts/setup.sh        the package and the CLI
#   bash scripts/setup.sh --dev  plus test tools, the web/Ray extras and Debian's Chromium
set -euo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-}
if [ -z "$py" ]; then
  py=$(command -v python3.11 || command -v python3)
fi
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# Exactly 2.13.0, the CPU build: PyTorch's CPU index offers 2.13.0+cpu, which pip prefers to
# PyPI's 2.13.0 (on Linux, a multi-GB CUDA build), as it does a local wheel of it where pip is
# configured with one. Where that index cannot be reached, pip gives up on it in about a
# second. Torch alone first (one lookup there), then its dependencies from the usual index.
pip install --timeout 10 --retries 0 --no-deps \
  --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0
pip install torch==2.13.0
# The simulator and RL libraries at the versions the benchmarks were measured with.
pins=(-c scripts/constraints.txt)
if [ "${1:-}" = "--dev" ]; then
  pip install "${pins[@]}" -e ".[dev]"
  if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq chromium >/dev/null
  fi
else
  pip install "${pins[@]}" -e .
fi
