#!/usr/bin/env bash
# install.sh SOURCE_DIR BUILD_DIR OUT_DIR C_COMPILER [SANITIZER_FLAGS]
#
# Issue 19's "out-of-tree builds against the installed package": installs the build in
# BUILD_DIR into a prefix under OUT_DIR (cmake --install --prefix), checks what is there (the
# libraries with their soname, the headers, a .pc file per unit, the CMake package), then builds
# tests/link/outoftree twice outside the tree — with pkg-config and a plain compiler command, and
# with CMake's find_package (shared and static libraries) — and runs each program.
# SANITIZER_FLAGS: the suite's -fsanitize flags, which the installed libraries were built with.
set -euo pipefail
src=$1 build=$2 out=$3 cc=$4 san=${5:-}
prefix=$out/prefix
rm -rf "$out"
mkdir -p "$out"
cmake --install "$build" --prefix "$prefix" >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }

libdir=$(dirname "$(find "$prefix" -name libtroupe-core.so -print -quit)")
[ -d "$libdir" ] || { echo "install: no libtroupe-core.so under $prefix"; exit 1; }
for f in include/troupe.h include/troupe/node.h "${libdir#"$prefix"/}/cmake/troupe/troupeConfig.cmake"; do
    [ -e "$prefix/$f" ] || { echo "install: $f is missing"; exit 1; }
done
for unit in core dist store config web; do
    for f in "libtroupe-$unit.a" "libtroupe-$unit.so" "pkgconfig/troupe-$unit.pc"; do
        [ -e "$libdir/$f" ] || { echo "install: $libdir/$f is missing"; exit 1; }
    done
    soname=$(readelf -d "$libdir/libtroupe-$unit.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
    [[ "$soname" =~ ^libtroupe-$unit\.so\.[0-9]+$ ]] || { echo "install: soname '$soname'"; exit 1; }
    [ -e "$libdir/$soname" ] || { echo "install: $soname is missing"; exit 1; }
done

# 1. pkg-config and a compiler command, as a Makefile would
export PKG_CONFIG_PATH=$libdir/pkgconfig
flags=$(pkg-config --cflags --libs troupe-core troupe-dist)
echo "install: pkg-config --cflags --libs troupe-core troupe-dist: $flags"
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Wextra -Werror $san "$src/tests/link/outoftree/main.c" -o "$out/outoftree-pc" \
    $flags -Wl,-rpath,"$libdir"
readelf -d "$out/outoftree-pc" | grep -q "NEEDED.*libtroupe-dist.so.[0-9]" ||
    { echo "install: the pkg-config build does not need libtroupe-dist.so.N"; exit 1; }
"$out/outoftree-pc"

# 2. CMake's find_package
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$src/tests/link/outoftree" -B "$out/cmake" "${gen[@]}" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" \
    >"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
cmake --build "$out/cmake" -j 2 >>"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
"$out/cmake/outoftree"
"$out/cmake/outoftree-static"
if readelf -d "$out/cmake/outoftree-static" | grep -q "NEEDED.*libtroupe"; then
    echo "install: outoftree-static needs a shared libtroupe"; exit 1
fi
echo "install: the installed package builds and runs outside the tree (pkg-config, find_package)"
