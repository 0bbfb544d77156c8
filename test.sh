#!/usr/bin/env bash
# Set everything up (idempotent) and run every test: unit, integration and browser (extra flags go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
