#!/usr/bin/env bash
# run.sh APP BIN_DIR SCREENSHOT — the live dashboard (troupe/dashboard.h) in headless Chromium
# against a two-node cluster of APP (flashsale or social) under its load generator, on 127.0.0.1
# with a Redis server of its own: the numbers move between two reads, a peer killed with kill -9
# shows as down, and a screenshot goes to SCREENSHOT (docs/dashboard.png is made this way:
# tests/dashboard/run.sh flashsale build/bin docs/dashboard.png). dashboard.py does the work.
#
# Needs Debian's chromium, chromium-driver and python3-selenium (scripts/bootstrap installs them)
# and redis-server; exits 77 (ctest: skipped) when one is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3     # Debian's, where python3-selenium is
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v redis-server >/dev/null || missing+=(redis-server)
{ [ -x "$py" ] && "$py" -c 'import selenium' 2>/dev/null; } || missing+=(python3-selenium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "dashboard: skipped, not installed: ${missing[*]} (scripts/bootstrap installs them)"
    exit 77
fi
exec "$py" "$here/dashboard.py" "$@"
