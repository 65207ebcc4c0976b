#!/usr/bin/env bash
# Idempotent, cached set-up of everything the project needs on a fresh machine.
#
#   bash runners/bootstrap.sh                    # Python env + JVM jars + Flink + Go tools + dashboard npm files
#   bash runners/bootstrap.sh --with-test-tools  # ... plus Chromium, chromedriver and docker-compose (apt)
#
# Downloads land in $TRAFFIC_CACHE_DIR (default ~/.cache/traffic-forecast); the
# Python environment there is keyed by the hash of requirements.lock + setup.py,
# so a second run (even from a fresh clone) downloads and installs nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
cache="${TRAFFIC_CACHE_DIR:-$HOME/.cache/traffic-forecast}"
mkdir -p "$cache"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "bootstrap: '$1' is required ($2) but not on PATH" >&2; exit 2; }
}
need python3.11 "Python 3.11" 2>/dev/null || need python3 "Python 3.11"
need java "Java 17"
need mvn "Maven"
need go "Go"

python_bin="$(command -v python3.11 || command -v python3)"
key="$(cat requirements.lock setup.py | sha256sum | cut -c1-16)"
venv="$cache/venv-$key"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "bootstrap: creating the Python environment in $venv"
  rm -rf "$venv"
  "$python_bin" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade "pip==25.3" "setuptools==80.9.0" wheel
  "$venv/bin/pip" install --progress-bar off -c requirements.lock -e ".[dev]"
  touch "$venv/.complete"
fi
ln -sfn "$venv" .venv
# The checkout may have moved since the environment was made: point it here (no download).
if ! "$venv/bin/python" -c "import runners, sys; sys.exit(0 if runners.__file__.startswith('$here/') else 1)" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e .
fi

"$venv/bin/traffic" setup "$@"
