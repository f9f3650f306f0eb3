#!/usr/bin/env bash
# End-to-end tests of the browser SDK, the demo page and the console in headless Chromium.
#
# Needs node >= 20 and Debian's `chromium` at /usr/bin/chromium (`apt-get install -y chromium`;
# CHROMIUM_BIN overrides the path). Installs the pinned playwright-core with `npm ci` (it drives the
# system Chromium; no browser is downloaded), builds Herald, and runs the node:test suite. The suite
# starts `herald serve --config` itself, on a free port with an admin_token, because one test kills
# the server and starts it again. Screenshots go to ci-artifacts/browser/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error(`node >= 20 needed, found ${process.version}`); process.exit(1) }'
chromium=${CHROMIUM_BIN:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "no Chromium at $chromium: install Debian's chromium (apt-get install -y chromium) or set CHROMIUM_BIN" >&2
  exit 1
fi
(cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
(cd "$root" && cargo build --quiet -p herald)
# cargo builds into $CARGO_TARGET_DIR when it is set (relative to $root, where cargo ran).
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$root/$target" ;; esac
rm -rf "$root/ci-artifacts/browser"
cd "$here" && HERALD_BIN="$target/debug/herald" CHROMIUM_BIN="$chromium" node --test browser.test.mjs
