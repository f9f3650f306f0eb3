#!/usr/bin/env bash
# Interop with the vendor's official Python SDK. Installs it into a private virtualenv, builds
# Herald, and runs the pytest suite against the real binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$root/target/interop-venv"
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import volcengine' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
(cd "$root" && cargo build --quiet -p herald)
HERALD_BIN="$root/target/debug/herald" "$venv/bin/pytest" -q "$here"
