#!/usr/bin/env bash
# Idempotent, cached set-up of everything the project needs on a fresh machine.
#
#   bash runners/bootstrap.sh                    # Python env + JVM jars + Flink + Go tools + dashboard npm files
#   bash runners/bootstrap.sh --with-test-tools  # ... plus Chromium, chromedriver and docker-compose (apt)
#
# Downloads land in $TRAFFIC_CACHE_DIR (default ~/.cache/traffic-forecast); the
# Python dependencies there are keyed by the hash of requirements.lock + setup.py,
# so a second run (even from a fresh clone) downloads nothing. Each checkout gets
# its own small .venv that uses those dependencies and runs its own code.
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
need cc "a C compiler for the package's extensions"

python_bin="$(command -v python3.11 || command -v python3)"
key="$(cat requirements.lock setup.py | sha256sum | cut -c1-16)"
deps="$cache/venv-$key"

# 1. The dependencies, shared by every checkout: built once per requirements.lock + setup.py.
#    The project itself is not installed there (each checkout has its own, see 2.).
if [ ! -x "$deps/bin/python" ] || [ ! -f "$deps/.complete" ]; then
  echo "bootstrap: creating the Python environment in $deps"
  rm -rf "$deps"
  "$python_bin" -m venv "$deps"
  "$deps/bin/pip" install --quiet --upgrade "pip==25.3" "setuptools==80.9.0" wheel
  "$deps/bin/pip" install --progress-bar off -c requirements.lock -e ".[dev]"
  "$deps/bin/pip" uninstall --quiet -y traffic-forecast
  touch "$deps/.complete" "$deps/.deps-only"
elif [ ! -f "$deps/.deps-only" ]; then
  # Made by an older bootstrap with this checkout installed in it: take the project out.
  "$deps/bin/pip" uninstall --quiet -y traffic-forecast || true
  touch "$deps/.deps-only"
fi

# 2. This checkout's own environment in .venv: a small venv that sees the shared dependencies
#    through a .pth file and has this checkout installed in editable mode (no download).
#    Two checkouts on one machine therefore never run each other's code.
deps_site="$("$deps/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ -L .venv ] || [ ! -x .venv/bin/python ] || [ "$(cat .venv/.traffic-checkout 2>/dev/null)" != "$here" ]; then
  rm -rf .venv
  "$python_bin" -m venv --without-pip .venv  # pip and setuptools come from the shared dependencies
  echo "$here" > .venv/.traffic-checkout
fi
venv_site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$deps_site')" > "$venv_site/traffic_shared_deps.pth"
#    The install also compiles the C extensions (ml/_*.c) in place; they are compiled again when a source changed.
stale_extension() {
  local source built
  for source in ml/_*.c; do
    built="$(ls "${source%.c}".*.so 2>/dev/null | head -n 1 || true)"
    if [ -z "$built" ] || [ "$source" -nt "$built" ]; then return 0; fi
  done
  return 1
}
if ! .venv/bin/python -P -c "import cli, store, sys; sys.exit(0 if cli.__file__.startswith('$here/') else 1)" 2>/dev/null \
   || ! grep -q "from cli.main import" .venv/bin/traffic 2>/dev/null \
   || stale_extension; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi

.venv/bin/traffic setup "$@"
