#!/usr/bin/env bash
# Interop with the vendor's official Node SDK (npm `@volcengine/openapi`, pinned in package.json and
# package-lock.json). Installs it into tests/interop/node/node_modules, builds Herald, and runs the
# node:test suite against the real binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error(`node >= 20 needed, found ${process.version}`); process.exit(1) }'
(cd "$here" && npm ci --no-audit --no-fund)
(cd "$root" && cargo build --quiet -p herald)
# cargo builds into $CARGO_TARGET_DIR when it is set (relative to $root, where cargo ran).
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$root/$target" ;; esac
cd "$here" && HERALD_BIN="$target/debug/herald" node --test interop.test.mjs
