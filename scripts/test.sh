#!/usr/bin/env bash
# The test command (npm test): installs what it needs, then runs every check with phase timings.
# BASALT_SKIP_BUILD_TESTS=1 leaves out the real mkosi build and the VM suite (minutes on a cold cache);
# BASALT_SKIP_E2E=1 only the VM suite.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -a timings=()
phase() {
  local name=$1; shift
  local start=$SECONDS
  echo "::: $name"
  "$@"
  timings+=("$(printf '%-12s %5d s' "$name" $((SECONDS - start)))")
}
# Debian packages some checks drive (never a change to the apt sources); lists are fetched only if stale.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "$@" || { apt-get update && apt-get install -y --no-install-recommends "$@"; }
}
if [[ ! -d node_modules/vitest || package-lock.json -nt node_modules/.package-lock.json ]]; then
  # npm ci refuses this lock: npm 11 leaves the other platforms' optional packages (Biome's) out of it.
  phase install npm install --no-save --no-audit --no-fund --loglevel=error
fi
phase typecheck npx tsc --noEmit -p .
phase lint npx biome check .
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
  # The fleet suite runs against a real PostgreSQL server the tests start (Debian's package).
  phase pg-deps apt_install postgresql
fi
if ! command -v veritysetup > /dev/null; then
  # The deep verity check's unit test compares with the hash tree cryptsetup writes (Debian's package).
  phase verity-deps apt_install cryptsetup-bin
fi
phase unit npx vitest run --project unit
if [[ ! -x /usr/bin/chromium ]]; then
  # The dashboard's browser test drives Debian's Chromium; playwright-core brings no browser of its own.
  phase browser-deps apt_install chromium
fi
phase browser npx vitest run --project browser
if [[ "${BASALT_SKIP_BUILD_TESTS:-0}" != 1 ]]; then
  phase build npx vitest run --project build
  if [[ "${BASALT_SKIP_E2E:-0}" != 1 ]]; then
    phase e2e npx tsx scripts/e2e.ts
  fi
fi
echo "::: phase timings"
printf '  %s\n' "${timings[@]}"
