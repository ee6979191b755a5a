#!/usr/bin/env bash
# Install metaattn into a temporary prefix and build examples/consumer against
# it, every way examples/consumer/README.md shows: CMake find_package (shared
# and static library) and pkg-config (shared and static).  Each consumer must
# run, print a RoutingStats line, and all must print the same output; the
# shared ones must load libmetaattn.so from the prefix, every one the OpenBLAS
# build the library was linked with.  Release build in build-install/ (reused
# between runs, no tests): about 10 s from scratch on 2 cores, a rerun takes
# seconds.  BUILD, JOBS and CC override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build-install}
jobs=${JOBS:-$(nproc)}
cc=${CC:-cc}

fail() { echo "test-install.sh: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/metaattn-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step "build ($build, Release)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMETAATTN_TESTS=OFF >"$tmp/configure.log" 2>&1 \
  || { cat "$tmp/configure.log" >&2; fail "configure"; }
cmake --build "$build" -j "$jobs" >"$tmp/build.log" 2>&1 || { tail -n 50 "$tmp/build.log" >&2; fail "build"; }

step "install into a temporary prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "install"; }
libdir=$prefix/$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
for f in include/metaattn.h libmetaattn.a libmetaattn.so pkgconfig/metaattn.pc cmake/metaattn/metaattnConfig.cmake \
         cmake/metaattn/metaattnConfigVersion.cmake cmake/metaattn/metaattnTargets.cmake; do
  case "$f" in include/*) f=$prefix/$f ;; *) f=$libdir/$f ;; esac
  [ -e "$f" ] || fail "not installed: $f"
done

# the OpenBLAS build the library was linked with (empty without BLAS): every
# consumer must load that one, not whichever update-alternatives selects
blasdir=$(sed -n 's/^OPENBLAS_LIBDIR:INTERNAL=//p' "$build/CMakeCache.txt")
blasdir=${blasdir%/}

# run EXE LABEL shared|static: must succeed and print a RoutingStats line;
# shared: takes libmetaattn.so from the prefix, static: does not load it
run() {
  local exe=$1 label=$2 kind=$3 deps so blas st=0
  [ -x "$exe" ] || fail "$label: $exe was not built"
  deps=$(env -u LD_LIBRARY_PATH ldd "$exe") || fail "$label: ldd failed"
  so=$(awk '/libmetaattn/ {print $3}' <<<"$deps")
  if [ "$kind" = shared ]; then
    case "$so" in "$libdir"/*) ;; *) fail "$label: libmetaattn.so resolves to '${so:-nothing}', not $libdir" ;; esac
  elif [ -n "$so" ]; then
    fail "$label: linked statically but loads $so"
  fi
  if [ -n "$blasdir" ]; then
    blas=$(awk '/libopenblas/ {print $3}' <<<"$deps")
    case "$blas" in "$blasdir"/*) ;; *) fail "$label: libopenblas resolves to '${blas:-nothing}', not $blasdir/" ;; esac
  fi
  env -u LD_LIBRARY_PATH "$exe" >"$tmp/$label.out" 2>&1 || st=$?
  [ "$st" = 0 ] || { cat "$tmp/$label.out" >&2; fail "$label: exit status $st"; }
  grep -q '^RoutingStats(E1=' "$tmp/$label.out" || { cat "$tmp/$label.out" >&2; fail "$label: no RoutingStats line"; }
  sed "s/^/  $label: /" "$tmp/$label.out"
}

step "consumer with CMake: find_package(metaattn CONFIG REQUIRED)"
cmake -S examples/consumer -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_STATIC=ON \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$tmp/consumer-configure.log" 2>&1 \
  || { cat "$tmp/consumer-configure.log" >&2; fail "consumer: CMake configure"; }
grep -q "metaattn 0.2.0 from $libdir/cmake/metaattn" "$tmp/consumer-configure.log" \
  || { cat "$tmp/consumer-configure.log" >&2; fail "consumer: find_package did not find the installed package"; }
cmake --build "$tmp/cmake" >"$tmp/consumer-build.log" 2>&1 || { cat "$tmp/consumer-build.log" >&2; fail "consumer: CMake build"; }
run "$tmp/cmake/consumer" cmake-shared shared
run "$tmp/cmake/consumer_static" cmake-static static

step "consumer with pkg-config (PKG_CONFIG_PATH=prefix)"
export PKG_CONFIG_PATH=$libdir/pkgconfig
pkg-config --exists --print-errors metaattn || fail "pkg-config does not find metaattn"
[ "$(pkg-config --modversion metaattn)" = 0.2.0 ] || fail "pkg-config: version $(pkg-config --modversion metaattn)"
# the commands of examples/consumer/README.md
# shellcheck disable=SC2046  # pkg-config output is split into words on purpose
$cc -o "$tmp/pc-shared" examples/consumer/consumer.c $(pkg-config --cflags --libs metaattn) -lm \
  -Wl,-rpath,"$(pkg-config --variable=libdir metaattn)" || fail "pkg-config: shared build"
pin=()
[ -n "$blasdir" ] && pin=("-Wl,-rpath,$(pkg-config --variable=libdir openblas)")
# shellcheck disable=SC2046  # pkg-config output is split into words on purpose
$cc -o "$tmp/pc-static" examples/consumer/consumer.c $(pkg-config --cflags metaattn) \
  $(pkg-config --static --libs metaattn | sed 's/-lmetaattn\b/-l:libmetaattn.a/') -lm "${pin[@]}" \
  || fail "pkg-config: static build"
run "$tmp/pc-shared" pkgconfig-shared shared
run "$tmp/pc-static" pkgconfig-static static

step "same output from every consumer"
for l in cmake-static pkgconfig-shared pkgconfig-static; do
  cmp -s "$tmp/cmake-shared.out" "$tmp/$l.out" || { diff "$tmp/cmake-shared.out" "$tmp/$l.out" >&2; fail "$l differs from cmake-shared"; }
done
echo "test-install.sh: OK (4 consumers: CMake and pkg-config, shared and static)"
