#!/usr/bin/env bash
# Set up tinyflow in a virtual environment at .venv (idempotent). Needs Python 3.11 and the package registries.
# torch==2.13.0 is installed first, explicitly: that pin takes the CPU build (a looser one pulls a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
# The Cortex-M cross-compiler and emulator (firmware backend) and headless Chromium (the MLflow UI browser test):
# installed with apt when missing and this user may (root, or sudo without a password); otherwise a clear note —
# backend=c then only writes the C project and the browser test is skipped, saying why.
APT_PACKAGES="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm chromium chromium-driver"
if ! command -v arm-none-eabi-gcc >/dev/null 2>&1 || ! command -v qemu-system-arm >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then APT="apt-get"; elif sudo -n true 2>/dev/null; then APT="sudo -n apt-get"; else APT=""; fi
  if [ -n "$APT" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $APT_PACKAGES with apt" >&2
    { $APT update -q >/dev/null 2>&1 || true; } && DEBIAN_FRONTEND=noninteractive $APT install -y -q $APT_PACKAGES >/dev/null \
      || echo "note: apt could not install $APT_PACKAGES; firmware is generated but not built or run, the browser test is skipped" >&2
  else
    echo "note: $APT_PACKAGES are missing and cannot be installed here (needs root or sudo and apt);" \
      "firmware is generated but not built or run, the browser test is skipped" >&2
  fi
fi
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
.venv/bin/python -m pip install --disable-pip-version-check -q torch==2.13.0
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test]"
echo "tinyflow is set up in .venv ($(.venv/bin/python --version))" >&2
