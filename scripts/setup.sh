#!/usr/bin/env bash
# Set up tinyflow in a virtual environment at .venv (idempotent). Needs Python 3.11 and the package registries.
# torch==2.13.0 is installed first, explicitly: that pin takes the CPU build (a looser one pulls a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
.venv/bin/python -m pip install --disable-pip-version-check -q torch==2.13.0
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test]"
echo "tinyflow is set up in .venv ($(.venv/bin/python --version))" >&2
