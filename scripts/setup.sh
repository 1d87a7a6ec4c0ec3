#!/usr/bin/env bash
# Install what dragoman needs and create .venv with dragoman and its model packages.
#   Debian packages: janus (the media gateway; brings libopus0) — and, with --test, what
#   the test suite drives: chromium, redis-server, coturn, iproute2, nftables, prometheus.
# Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v janus >/dev/null || need+=(janus)
if [ "${1:-}" = "--test" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v turnserver >/dev/null || need+=(coturn)
  command -v ip >/dev/null || need+=(iproute2)
  command -v nft >/dev/null || need+=(nftables)
  # promtool checks deploy/prometheus; a real Prometheus scrapes a serve in the tests (the
  # package's service start is irrelevant: the tests run the binary themselves).
  [ -x /usr/bin/prometheus ] && command -v promtool >/dev/null || need+=(prometheus)
  # Japanese/Korean/Chinese captions in the page tests' screenshots (else empty boxes).
  dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
  command -v npm >/dev/null || need+=(npm) # axe-core for the accessibility test
fi
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "dragoman needs the Debian packages: ${need[*]} (no apt-get here; install them yourself)" >&2
    exit 1
  fi
  echo "==> installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

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
  # axe-core, injected into the page by tests/test_page_a11y.py (tests/js/node_modules is
  # git-ignored; no lock file is written).
  npm install --prefix tests/js --no-package-lock --no-audit --no-fund --silent
else
  .venv/bin/python -m pip install -q -e .
fi
echo "==> ready: .venv/bin/dragoman"
