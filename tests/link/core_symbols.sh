#!/usr/bin/env bash
# core_symbols.sh CORE_LIB OTHER_LIB...
#
# The transport seam (runtime/src/core/internal.h, tr__remote_ops): no object of the core refers
# to a symbol defined by another link unit (dist, store, config, web) or to a library only those
# need (nng, mbedTLS, SQLite, hiredis, libconfig, cJSON, http-parser). Prints what it compared.
set -euo pipefail
core=$1
shift
undef=$(nm -u "$core" | awk '{print $NF}' | sort -u)
defined=$(for lib in "$@"; do nm -g --defined-only "$lib" 2>/dev/null | awk 'NF == 3 {print $3}'; done |
    sort -u)
bad=$(comm -12 <(echo "$undef") <(echo "$defined"))
foreign=$(echo "$undef" | grep -E '^(nng_|nni_|mbedtls_|sqlite3_|redis|config_|cJSON_|http_parser)' || true)
echo "core_symbols: $(echo "$undef" | wc -l) symbols the core needs, $(echo "$defined" | wc -l) defined by $# other unit(s)"
if [ -n "$bad$foreign" ]; then
    echo "core_symbols: the core refers to these symbols of other units or their libraries:"
    printf '%s\n' $bad $foreign
    exit 1
fi
