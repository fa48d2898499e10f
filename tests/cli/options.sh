#!/usr/bin/env bash
# tests/cli/options.sh — the programs' command lines (getopt_long): `--opt=value` and `--opt value`
# both work, `--help` exits 0, an unknown option or a missing value exits 2 with a message on
# stderr. Run by ctest as `cli_options` with the folder of the built programs (build/bin).
set -uo pipefail
BIN=${1:?usage: options.sh BIN_DIR}
pass=0
fail=0
T=$(mktemp -d /tmp/troupe-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN PROG ARGS...: exit code CODE and PATTERN (grep -E) in stderr
expect() {
    local code=$1 pat=$2
    shift 2
    timeout 60 "$@" > "$T/out" 2> "$T/err" < /dev/null
    local rc=$?
    if [ "$rc" != "$code" ]; then
        bad "$* exited $rc, not $code: $(head -3 "$T/err")"
    elif [ -n "$pat" ] && ! grep -Eq -- "$pat" "$T/err"; then
        bad "$*: no /$pat/ in stderr: $(head -3 "$T/err")"
    else
        ok
    fi
}

# bad options, missing values, stray arguments: exit 2 and a message
expect 2 "unrecognized option '--bogus'" "$BIN/troupe-bench" --bogus
expect 2 "unrecognized option '--nope=1'" "$BIN/troupe-node" --nope=1
expect 2 "option '--config' requires an argument" "$BIN/flashsale" --config
expect 2 "requires an argument" "$BIN/social" --http
expect 2 "unrecognized option" "$BIN/nng-baseline" pair-rtt --bogus
expect 2 "unexpected argument 'extra'" "$BIN/social-bench" extra
expect 2 "takes no arguments" "$BIN/troupe-demo" extra
expect 2 "--node NAME are required" "$BIN/troupe-node" --config=x
expect 2 "unrecognized option '--bogus'" "$BIN/troupectl" --bogus nodes
expect 2 "option '--node' requires an argument" "$BIN/troupectl" nodes --node
expect 2 "--node ADDR and --secret-file FILE are required" "$BIN/troupectl" nodes
# the value form --opt=value is read (each is refused for its value, so nothing runs)
expect 2 "--scale must be above 0" "$BIN/troupe-bench" --scale=0 spawn
expect 2 "--workers takes 1..1024" "$BIN/troupe-node" --config=x --node=y --workers=0
expect 2 "--rate wants a number" "$BIN/social-load" --rate=abc
expect 2 "--rate wants a number" "$BIN/social-load" --rate abc
expect 2 "--count takes 0..1000000" "$BIN/troupectl" --count=x top
expect 2 "--rows takes 1..100" "$BIN/troupectl" --rows 0 top
expect 2 "rates, duration" "$BIN/flashsale-load" --duration=0
expect 2 "bad --buf" "$BIN/nng-baseline" push-throughput --buf=9999
# the apps' log level from their config (log.level; --set overrides it, TROUPE_LOG wins): a bad
# name is refused before anything starts
APPCONF="$(dirname "$0")/../../config"
expect 2 "log.level must be error, warn, info or debug, not \"loud\"" \
    env -u TROUPE_LOG "$BIN/flashsale" --config "$APPCONF/flashsale.conf" --set log.level=loud
expect 2 "log.level must be error, warn, info or debug" \
    env -u TROUPE_LOG "$BIN/social" --config="$APPCONF/social.conf" --set log.level=verbose
# --help: exit 0, the usage on stdout
for p in flashsale flashsale-load social social-load troupe-node troupe-bench troupe-demo \
    nng-baseline social-bench search-index-bench troupectl; do
    if "$BIN/$p" --help > "$T/out" 2>&1 && grep -q "usage" "$T/out"; then ok; else bad "$p --help"; fi
done
# both forms run: a small search benchmark, and a node that starts from a cluster file
expect 0 "" "$BIN/search-index-bench" --users=1000 --queries 100
CONF="$(dirname "$0")/../../config/cluster-local.conf"
timeout 30 "$BIN/troupe-node" --config="$CONF" --node n1 --listen=tcp://127.0.0.1:0 --quiet \
    > "$T/node" 2>&1 &
NODE=$!
for _ in $(seq 1 300); do grep -q '^ready node=n1 ' "$T/node" && break; sleep 0.1; done
if grep -q '^ready node=n1 addr=tcp://127.0.0.1:' "$T/node"; then ok; else bad "troupe-node --config=FILE: $(head -3 "$T/node")"; fi
kill "$NODE" 2> /dev/null
wait "$NODE" 2> /dev/null

echo "cli options: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
