#!/usr/bin/env bash
# One command: set up (first run only takes a while) and run `dragoman serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/dragoman serve "$@"
