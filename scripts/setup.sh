#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine: system packages, .venv, pinned requirements, and
# the project installed editable into .venv (the `notagen-engine` command).
#   scripts/setup.sh run    what the app needs (FluidSynth, a SoundFont, cairo and Liberation fonts for PDF)
#   scripts/setup.sh test   that plus Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

packages=(fluidsynth timgm6mb-soundfont libcairo2 fonts-liberation python3-venv)
[ "$mode" = test ] && packages+=(chromium chromium-driver)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# python3-venv is only needed when the interpreter lacks a working venv module
if python3 -c "import ensurepip, venv" 2>/dev/null; then
    missing=("${missing[@]/python3-venv}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
    command="apt-get install -y --no-install-recommends ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $command
    else
        echo "setup: missing system packages. Run this, then run me again:" >&2
        echo "  sudo apt-get update && sudo $command" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing pinned requirements into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements.txt
    echo "$wanted" > "$stamp"
fi

# the project itself, editable, for the `notagen-engine` command (from any folder; `python -m engine` still works)
stamp=.venv/.project.sha256
wanted=$( (cat pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/notagen-engine ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing the project into .venv (the notagen-engine command)"
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation --editable .
    echo "$wanted" > "$stamp"
fi
