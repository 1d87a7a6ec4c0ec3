#!/usr/bin/env bash
# One command: install everything the tests need (Debian packages included) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --test
echo "==> lint"
.venv/bin/ruff check dragoman tests
echo "==> every imported package declared (deptry)"
.venv/bin/deptry dragoman
echo "==> the layers hold (import-linter, pyproject.toml)"
.venv/bin/lint-imports --no-cache
echo "==> tests"
exec .venv/bin/python -m pytest "$@"
