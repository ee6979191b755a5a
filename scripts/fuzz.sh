#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan; build-fuzz/) and runs
# each one on a copy of its checked-in seed corpus (fuzz/seeds/<target>/).
#   scripts/fuzz.sh [--time S | --runs N] [TARGET...]
#     --time S   run each target for S seconds (default 20: the CI run)
#     --runs N   run each target for N executions (the long local run)
#     TARGET     safetensors, gguf, tokenizer, config, corpus, cli (default: all six)
# Crashes are written to build-fuzz/crashes/<target>/ and the script exits 1;
# a crash found becomes a regression test: add the file to fuzz/regress/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=(-max_total_time=20)
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --time) limit=(-max_total_time="${2:?--time needs seconds}"); shift 2 ;;
    --runs) limit=(-runs="${2:?--runs needs a count}"); shift 2 ;;
    safetensors|gguf|tokenizer|config|corpus|cli) targets+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (--time S, --runs N, safetensors|gguf|tokenizer|config|corpus|cli)" >&2; exit 2 ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(safetensors gguf tokenizer config corpus cli)
command -v clang >/dev/null || { echo "fuzz.sh: clang is not installed: run scripts/install-deps.sh" >&2; exit 1; }

CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETAATTN_FUZZ=ON -DMETAATTN_TESTS=OFF \
  -DMETAATTN_OPENMP=OFF -DMETAATTN_BLAS=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null

status=0
for t in "${targets[@]}"; do
  work=build-fuzz/corpus/$t crashes=build-fuzz/crashes/$t
  mkdir -p "$work" "$crashes"
  cp -n fuzz/seeds/$t/* "$work/" 2>/dev/null || true
  echo "fuzz.sh: $t (${limit[*]})"
  # -close_fd_mask=3: the targets' own messages are noise; crash reports still print
  # text to tokenize: 8 KiB is plenty (a piece leaves the stack at 65 bytes), longer inputs only slow it
  max_len=65536
  [[ $t == tokenizer ]] && max_len=8192
  if ! build-fuzz/fuzz_$t "$work" -artifact_prefix="$crashes/" -close_fd_mask=3 -print_final_stats=1 \
       -max_len=$max_len -rss_limit_mb=4096 "${limit[@]}" 2> build-fuzz/$t.log; then
    status=1
    echo "fuzz.sh: $t FAILED, see build-fuzz/$t.log and $crashes/" >&2
    tail -30 build-fuzz/$t.log >&2
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|^Done|cov:" build-fuzz/$t.log | tail -3
done
exit $status
