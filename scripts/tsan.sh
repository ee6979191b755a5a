#!/usr/bin/env bash
# ThreadSanitizer on the concurrency test (tests/test_threads.c: two layers
# and two models from two threads == sequential).  No OpenMP and the
# built-in GEMM: libgomp and OpenBLAS are not instrumented.  Fails on any
# race report.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang >/dev/null || { echo "tsan.sh: clang is not installed: run scripts/install-deps.sh" >&2; exit 1; }
mkdir -p build-tsan
clang -std=c11 -D_GNU_SOURCE -DMATTN_BUILD -O1 -g -fsanitize=thread $(pkg-config --cflags libcjson libpcre2-8) \
  -Iinclude -Isrc -Itests src/*/*.c tests/test_threads.c -lcjson -lpcre2-8 -lcmocka -lm -lpthread \
  -o build-tsan/test_threads
TSAN_OPTIONS=halt_on_error=1 build-tsan/test_threads
