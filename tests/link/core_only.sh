#!/usr/bin/env bash
# core_only.sh SOURCE_DIR BUILD_DIR C_COMPILER SANITIZE
#
# Issue 15's "a program that links only troupe::core": configures examples/embed (troupe by
# add_subdirectory, every optional unit off) in BUILD_DIR with the suite's compiler and
# sanitizer, builds it, checks that no command line of that build names nng, mbedTLS, SQLite,
# hiredis, libconfig, cJSON, libcurl or http-parser, and runs the program.
set -euo pipefail
src=$1 out=$2 cc=$3 sanitize=${4:-}
rm -rf "$out"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$src/examples/embed" -B "$out" "${gen[@]}" -DCMAKE_C_COMPILER="$cc" \
    -DTROUPE_SANITIZE="$sanitize" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$out.configure.log" 2>&1 ||
    { cat "$out.configure.log"; exit 1; }
cmake --build "$out" --target embed -j 2 >"$out.build.log" 2>&1 || { cat "$out.build.log"; exit 1; }
# every compile and link command of that build (Ninja: build.ninja; Makefiles: flags/link files)
forbidden='-lnng|libnng|nng/|mbedtls|mbedcrypto|sqlite|hiredis|libconfig|cjson|curl|http_parser'
files=$(find "$out" \( -name build.ninja -o -name compile_commands.json -o -name link.txt \
    -o -name flags.make \) -print)
[ -n "$files" ] || { echo "core_only: no command lines found in $out"; exit 1; }
if hits=$(grep -EiHo -- "$forbidden" $files | sort -u) && [ -n "$hits" ]; then
    echo "core_only: the core-only build names another unit's dependency:"
    echo "$hits"
    exit 1
fi
grep -Eq 'troupe_core' $files || { echo "core_only: the build does not use troupe_core"; exit 1; }
"$out/embed"
