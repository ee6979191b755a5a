#!/usr/bin/env bash
# Runs the test suite under valgrind memcheck: a Debug build (AVX2 at most)
# with the built-in GEMM and no OpenMP (build-valgrind/; OpenBLAS's and libgomp's
# thread pools hold memory until exit), every cmocka test program, the fuzz
# replays, the example and the CLI test (its metaattn wrapped in valgrind) —
# everything ctest runs but the slow training test (hours under memcheck;
# `make asan` runs it).
# Fails on any memcheck error or any definitely/indirectly lost byte.
#   scripts/valgrind.sh [NAME...]   (default: every test)
set -uo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed: run scripts/install-deps.sh" >&2; exit 1; }
# valgrind 3.19 decodes up to AVX2, not AVX-512: no -march=native, but the
# AVX2 code paths where the CPU has them
arch=()
grep -qw avx2 /proc/cpuinfo 2>/dev/null && arch=(-DCMAKE_C_FLAGS=-march=x86-64-v3)
cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Debug -DMETAATTN_BLAS=OFF -DMETAATTN_OPENMP=OFF \
  -DMETAATTN_NATIVE=OFF "${arch[@]}" >/dev/null || exit 1
cmake --build build-valgrind -j "$(nproc)" >/dev/null || exit 1
b=build-valgrind
vg=(valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect)
printf '#!/bin/sh\nexec %s %s "$@"\n' "${vg[*]}" "$PWD/$b/metaattn" > "$b/metaattn-vg"
chmod +x "$b/metaattn-vg"

declare -A cmd
for t in config dirichlet kernels backward nn layer model decode safetensors fixtures faults threads errors \
         gguf gguf_bad tokenizer_unit tok_bad llama llama_bad; do
  cmd[$t]="${vg[*]} $b/test_$t"
done
for t in backward nn model; do cmd[${t}_f64]="${vg[*]} $b/test_${t}_f64"; done
for t in safetensors gguf tokenizer config corpus cli; do cmd[fuzz_replay_$t]="${vg[*]} $b/replay_$t fuzz/seeds/$t fuzz/regress/$t"; done
cmd[custom_expert_example]="${vg[*]} $b/custom_expert"
cmd[cli]="env METAATTN_TEST_NO_BENCH=1 tests/test_cli.sh $b/metaattn-vg"  # no timed benchmark run

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=($(printf '%s\n' "${!cmd[@]}" | sort))
fail=0
for n in "${names[@]}"; do
  [[ -n "${cmd[$n]:-}" ]] || { echo "valgrind.sh: unknown test '$n'" >&2; exit 2; }
  t0=$(date +%s)
  if out=$(${cmd[$n]} 2>&1); then
    echo "ok    $n ($(( $(date +%s) - t0 )) s)"
  else
    fail=1
    echo "FAIL  $n (exit $?)"
    echo "$out" | grep -E "==[0-9]+==|FAIL|ERROR" | head -20
  fi
done
exit $fail
