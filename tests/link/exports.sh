#!/usr/bin/env bash
# exports.sh MAJOR LIB=HEADER[,HEADER...]...
#
# What the shared libraries export (nm -D; runtime/troupe.map.in): for each unit's library, every
# symbol it defines is tr_-prefixed; the public ones are under the symbol version TROUPE_<MAJOR>,
# and the only others are the core's internals other units call (tr__*, TR_UNIT), under
# TROUPE_PRIVATE_<version>; and each function its public headers declare is exported (one left
# hidden by -fvisibility=hidden would link in the tree and fail for an embedder).
set -euo pipefail
major=$1
shift
fail=0
for arg in "$@"; do
    lib=${arg%%=*}
    IFS=, read -r -a headers <<<"${arg#*=}"
    name=$(basename "$lib")
    # "SYMBOL@@VERSION" for each defined symbol, the version definitions themselves left out
    syms=$(nm -D --defined-only --with-symbol-versions "$lib" | awk '$2 != "A" {print $3}' | sort -u)
    bad=$(grep -Ev "^tr_[a-z0-9_]+@@TROUPE_${major}\$|^tr__[a-z0-9_]+@@TROUPE_PRIVATE_[0-9.]+\$" \
        <<<"$syms" || true)
    if [ -n "$bad" ]; then
        echo "exports: $name exports symbols outside the API:"; echo "$bad"; fail=1
    fi
    private=$(grep -c '^tr__' <<<"$syms" || true)
    if [ "$private" -gt 0 ] && [[ "$name" != libtroupe-core.* ]]; then
        echo "exports: $name exports $private internal (tr__) symbols; only the core may"; fail=1
    fi
    # the functions the headers declare: a line that names tr_xxx( and is not a static inline
    # function, a macro, a typedef or a comment
    declared=$(cat "${headers[@]}" | grep -Ev '^\s*(static|#|typedef|/?\*)' |
        grep -oE '^[A-Za-z_][A-Za-z_0-9 ]*[ *]+(tr_[a-z0-9_]+)\(' |
        grep -oE 'tr_[a-z0-9_]+\($' | tr -d '(' | sort -u)
    missing=$(comm -23 <(echo "$declared") <(sed 's/@@.*//' <<<"$syms" | sort -u))
    if [ -n "$missing" ]; then
        echo "exports: $name does not export functions its headers declare:"; echo "$missing"; fail=1
    fi
    echo "exports: $name: $(grep -c . <<<"$declared") functions declared, $(grep -c . <<<"$syms")" \
        "symbols exported ($private internal, for the other units)"
done
exit $fail
