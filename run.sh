#!/usr/bin/env bash
# Set everything up (idempotent) and start the app at http://127.0.0.1:7860 (extra flags go to app.py).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh run
exec .venv/bin/python app.py "$@"
