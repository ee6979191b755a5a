#!/usr/bin/env bash
# test_cli.sh — the CLI contract: help texts, exit codes (0 ok, 2 usage,
# 1 other errors) with one-line messages naming the problem, and a real
# `metaattn layer` run on PyTorch-written weights and input.
# Usage: tests/test_cli.sh path/to/metaattn [path/to/bench_kernels]   (from the
# repository root; bench_kernels defaults to the one next to metaattn)
set -u
bin=${1:?usage: test_cli.sh path/to/metaattn}
fx=tests/fixtures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

check() { # name, expected exit code, expected substring (stdout+stderr), command...
  local name=$1 code=$2 want=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [[ $rc -eq $code && "$out" == *"$want"* ]]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $name: exit $rc (want $code), output:"; echo "$out" | head -5
    echo "  (wanted substring: $want)"
  fi
}

check "help" 0 "layer" "$bin" --help
check "version" 0 "metaattn 0." "$bin" --version
check "no command" 2 "usage" "$bin"
check "unknown command" 2 "unknown command 'frobnicate'" "$bin" frobnicate
check "layer help" 0 "--weights W" "$bin" layer --help
check "layer help lists --eval" 0 "--eval" "$bin" layer --help
check "layer no args" 2 "--input and --output are required" "$bin" layer
check "layer bad flag" 2 "unknown option '--bogus'" "$bin" layer --bogus
check "layer flag without value" 2 "needs a value" "$bin" layer --input
check "missing input" 1 "nope.safetensors" "$bin" layer --input "$tmp/nope.safetensors" --output "$tmp/o.st"
echo '{"n_heads": 7, "d_model": 16}' > "$tmp/bad.json"
check "bad config" 1 "n_heads" "$bin" layer --config "$tmp/bad.json" --input $fx/cli_input.safetensors --output "$tmp/o.st"
echo '{"d_model": 32, "n_heads": 4}' > "$tmp/d32.json"
check "wrong D" 1 "(B, T, 32)" "$bin" layer --config "$tmp/d32.json" --input $fx/cli_input.safetensors --output "$tmp/o.st"
check "weights of another shape" 1 "shape" "$bin" layer --config "$tmp/d32.json" --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output "$tmp/o.st"
check "input without x" 1 "no tensor named 'x'" "$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_weights.safetensors --output "$tmp/o.st"
# x must be a float tensor (an integer or bool x is refused, not converted); the mask may be of any dtype
st_file() { # path, header JSON, data bytes (zeros) then mask bytes (printf escapes)
  local hdr=$2 n
  while (( ${#hdr} % 8 )); do hdr+=" "; done
  n=${#hdr}
  printf "\\x$(printf %02x $((n & 255)))\\x$(printf %02x $((n >> 8 & 255)))\\0\\0\\0\\0\\0\\0" > "$1"
  printf '%s' "$hdr" >> "$1"
  head -c "$3" /dev/zero >> "$1"
  printf "${4:-}" >> "$1"
}
for dt in I32:4 BOOL:1 U8:1 I64:8; do
  st_file "$tmp/x_${dt%:*}.st" "{\"x\":{\"dtype\":\"${dt%:*}\",\"shape\":[1,2,16],\"data_offsets\":[0,$((32 * ${dt#*:}))]}}" $((32 * ${dt#*:}))
  check "layer x ${dt%:*}" 1 "--input $tmp/x_${dt%:*}.st: tensor 'x' has dtype ${dt%:*}, expected a float dtype (F32, F64, F16 or BF16)" \
    "$bin" layer --weights $fx/cli_weights.safetensors --input "$tmp/x_${dt%:*}.st" --output "$tmp/xo.st" --eval
done
[[ ! -e "$tmp/xo.st" ]] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL a refused x wrote an output"; }
for dt in F16:2 BF16:2 F64:8; do
  st_file "$tmp/x_${dt%:*}.st" "{\"x\":{\"dtype\":\"${dt%:*}\",\"shape\":[1,2,16],\"data_offsets\":[0,$((32 * ${dt#*:}))]}}" $((32 * ${dt#*:}))
  check "layer x ${dt%:*}" 0 "RoutingStats(" "$bin" layer --weights $fx/cli_weights.safetensors --input "$tmp/x_${dt%:*}.st" --output "$tmp/o.st" --eval
done
for dt in I32:4:'\1\0\0\0\0\0\0\0' BOOL:1:'\1\0' U8:1:'\1\1'; do
  IFS=: read -r name size bytes <<< "$dt"
  st_file "$tmp/m_$name.st" "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,2,16],\"data_offsets\":[0,128]},\"key_padding_mask\":{\"dtype\":\"$name\",\"shape\":[1,2],\"data_offsets\":[128,$((128 + 2 * size))]}}" 128 "$bytes"
  check "layer mask $name" 0 "RoutingStats(" "$bin" layer --weights $fx/cli_weights.safetensors --input "$tmp/m_$name.st" --output "$tmp/o.st" --eval
done
check "unwritable output" 1 "--output" "$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output /nonexistent/dir/o.st

# real runs: eval soft (parity is checked numerically by test_fixtures), eval hard, training mode
check "layer eval" 0 "RoutingStats(E1=" "$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output "$tmp/o.st" --eval
check "layer eval has uncertainty" 0 "uncertainty=" "$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output "$tmp/o.st" --eval
[[ -s "$tmp/o.st" ]] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL output file missing"; }
for t in out alpha weights beta_hat uncertainty aux_loss; do
  if grep -q "\"$t\"" "$tmp/o.st"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL output lacks '$t'"; fi
done
check "layer hard" 0 "executed tokens:" "$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output "$tmp/h.st" --eval --hard
check "layer train" 0 "RoutingStats(" "$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output "$tmp/t.st"
a=$("$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output "$tmp/t1.st" 2>&1)
b=$("$bin" layer --weights $fx/cli_weights.safetensors --input $fx/cli_input.safetensors --output "$tmp/t2.st" 2>&1)
if [[ "$a" == "$b" ]] && cmp -s "$tmp/t1.st" "$tmp/t2.st"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL training run not reproducible"; fi

# bench: bad arguments, and a smoke run whose JSON parses; the kernel
# benchmarks (build/bench_kernels, next to the CLI) likewise
check "bench help" 0 "--only LIST" "$bin" bench --help
check "bench unknown group" 2 "unknown group 'foo'" "$bin" bench --only foo
check "bench kernels moved" 2 "sgemm and kernels: build/bench_kernels" "$bin" bench --only kernels
check "bench bad threads" 2 "--threads: expected an integer" "$bin" bench --threads 0
check "bench unwritable json" 1 "--json: cannot write" "$bin" bench --only layer --json /nonexistent/x.json
bk=${2:-$(dirname "$bin")/bench_kernels}
if [[ -x "$bk" ]]; then
  check "bench_kernels help" 0 "--only LIST" "$bk" --help
  check "bench_kernels unknown group" 2 "unknown group 'hard' (sgemm, kernels, layer, quant, kvdecode)" "$bk" --only hard
  check "bench_kernels bad flag" 2 "bench_kernels: unknown option '--bogus' (see bench_kernels --help)" "$bk" --bogus
else
  echo "SKIP bench_kernels: no $bk"
fi
# (scripts/valgrind.sh sets METAATTN_TEST_NO_BENCH: timed GEMMs under memcheck take hours)
if [[ -z "${METAATTN_TEST_NO_BENCH:-}" ]]; then
  check "bench layer" 0 "GFLOP/s" "$bin" bench --only layer --quick --min-time 0 --json "$tmp/b.json"
  if grep -q '"soft layer forward"' "$tmp/b.json" && grep -q '"results"' "$tmp/b.json"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL bench JSON"; fi
  if [[ -x "$bk" ]]; then
    check "bench_kernels sgemm" 0 "% sgemm" "$bk" --only sgemm --quick --min-time 0 --json "$tmp/k.json"
    if grep -q '"sgemm_gflops"' "$tmp/k.json" && grep -q '"results"' "$tmp/k.json"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL bench_kernels JSON"; fi
  fi
fi

# tokenize: ids as llama.cpp's tokenizer gives them (vocab_only, add_bos False),
# chat mode or not; errors name the file
gg=models/SmolLM2-135M-Instruct.Q4_1.gguf
check "tokenize no model" 2 "tokenize: --model is required" "$bin" tokenize
check "tokenize not gguf" 1 "not a GGUF file" "$bin" tokenize --model README.md </dev/null
check "tokenize no tokenizer" 1 "no metadata key 'tokenizer.ggml.model'" "$bin" tokenize --model tests/fixtures/llama_tiny_f32.gguf </dev/null
# hostile model files (docs/errors.md, "GGUF models"): each refused by name, exit 1
printf 'GGUF\1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0' > "$tmp/v1.gguf"
check "gguf version 1" 1 "$tmp/v1.gguf: GGUF version 1 is not supported (32-bit counts; versions 2 and 3 are)" \
  "$bin" tokenize --model "$tmp/v1.gguf" </dev/null
head -c 20000 $fx/llama_tok.gguf > "$tmp/cut.gguf"
check "gguf truncated" 1 "$tmp/cut.gguf: tensor 'blk.0.ffn_up.weight': data [13760, 14848) exceeds the file (20000 bytes" \
  "$bin" tokenize --model "$tmp/cut.gguf" </dev/null
check "gguf architecture" 1 "general.architecture is 'qwen2': only 'llama' is supported" \
  "$bin" tokenize --model $fx/llama_bad_arch.gguf </dev/null
check "gguf missing tensor" 1 "tensor 'blk.0.ffn_down.weight' is missing" "$bin" tokenize --model $fx/llama_bad_no_ffn_down.gguf </dev/null
check "gguf shape" 1 "tensor 'blk.0.attn_k.weight' has shape [32, 8] (ggml order), expected [32, 16]" \
  "$bin" tokenize --model $fx/llama_bad_k_shape.gguf </dev/null
check "gguf merge without a space" 1 "--model: tokenizer: $fx/llama_tok_bad_merge.gguf: merge 13 'abc' is not two tokens separated by a space" \
  "$bin" tokenize --model $fx/llama_tok_bad_merge.gguf </dev/null
check "gguf vocabulary size" 1 "tokenizer.ggml.tokens has 268 tokens but token_embd.weight has 269 rows (one per token)" \
  "$bin" tokenize --model $fx/llama_tok_bad_vocab.gguf </dev/null
check "tokenize small model" 0 "260 36 262" bash -c "printf 'abc xyz' | \"\$1\" tokenize --model $fx/llama_tok.gguf --ids" _ "$bin"
if [[ -f "$gg" ]]; then
  check "tokenize ids" 0 "19556 28 905 17 216 33 34 35 36 37 2067 108 306 79 3738 108 46" \
    bash -c "printf 'Hello, world! 12345 <|im_start|>' | \"\$1\" tokenize --model $gg --ids" _ "$bin"
  check "tokenize special" 0 "19556 28 905 17 216 33 34 35 36 37 216 1" \
    bash -c "printf 'Hello, world! 12345 <|im_start|>' | \"\$1\" tokenize --model $gg --ids --special" _ "$bin"
  check "tokenize pieces" 0 "$(printf '905\t world\n17\t!\n216\t \n33\t1')" \
    bash -c "printf 'Hello, world! 1\n' | \"\$1\" tokenize --model $gg" _ "$bin"
  check "tokenize escapes" 0 "$(printf '198\t\\n')" bash -c "printf '\n' | \"\$1\" tokenize --model $gg" _ "$bin"
else
  echo "SKIP tokenize on $gg (scripts/get-model.sh smollm2)"
fi

# generate / chat / eval on a GGUF model: the exact (f32 activations and
# cache) greedy continuation is the reference's
# (tests/fixtures/gen_llama_model_ref.py, prompt 0); usage errors name the flag
check "generate gguf bad activations" 2 "--activations: expected q8 or f32, got 'fp8'" \
  "$bin" generate --model tests/fixtures/llama_tiny_f32.gguf --activations fp8
check "eval gguf bad kv" 2 "--kv: expected f16 or f32, got 'q8'" \
  "$bin" eval --model tests/fixtures/llama_tiny_f32.gguf --data README.md --kv q8
check "generate gguf context" 2 "--context 129 exceeds the model's context 128" \
  "$bin" generate --model tests/fixtures/llama_tiny_f32.gguf --context 129
check "generate gguf no tokenizer" 1 "tokenizer.ggml.model" "$bin" generate --model tests/fixtures/llama_tiny_f32.gguf
check "chat no template" 1 "tokenizer.ggml.model" "$bin" chat --model tests/fixtures/llama_tiny_f32.gguf --prompt hi
check "eval gguf no data" 2 "eval: --data is required" "$bin" eval --model tests/fixtures/llama_tiny_f32.gguf
check "eval gguf stride" 2 "--stride 9 exceeds --context 8" \
  "$bin" eval --model tests/fixtures/llama_tiny_f32.gguf --data README.md --context 8 --stride 9
# surgery: routing files beside a GGUF model, loaded with --routing
ty=tests/fixtures/llama_tiny_q8_0.gguf
check "surgery help" 0 "--fixed SPEC" "$bin" surgery --help
check "surgery no model" 2 "surgery: --model is required" "$bin" surgery --out "$tmp/r.st" --fixed 0,0,1
check "surgery no fixed" 2 "surgery: --data (or --fixed) is required" "$bin" surgery --model $ty --out "$tmp/r.st"
check "surgery shares" 2 "--fixed '0.5,0.6': expected three shares F,N,L (full, linear, local) at '0.6'" \
  "$bin" surgery --model $ty --out "$tmp/r.st" --fixed 0.5,0.6
check "surgery shares sum" 2 "--fixed '0.5,0.6,0': mattn_llama_routing_fix: the shares sum to 1.1" \
  "$bin" surgery --model $ty --out "$tmp/r.st" --fixed 0.5,0.6,0
check "surgery blocks" 2 "--fixed '0-2:1,0,0': blocks '0-2' are not a block or a range A-B within [0, 2)" \
  "$bin" surgery --model $ty --out "$tmp/r.st" --fixed '0-2:1,0,0'
check "surgery trailing" 2 "unexpected 'x' after three shares" "$bin" surgery --model $ty --out "$tmp/r.st" --fixed 0,0,1x
check "surgery bad window" 2 "--window: expected an integer in [1, 1048576], got '0'" \
  "$bin" surgery --model $ty --out "$tmp/r.st" --fixed 0,0,1 --window 0
check "surgery writes" 0 "wrote $tmp/r.st" "$bin" surgery --model $ty --out "$tmp/r.st" --fixed '0:1,0,0;1:0.2,0.3,0.5' --window 8
check "surgery out unwritable" 1 "--out: " "$bin" surgery --model $ty --out "$tmp/none/r.st" --fixed 0,0,1
# distillation on the small model with a tokenizer: progress, log, checkpoint, exact resume
tk=$fx/llama_tok.gguf
sg=(--model $tk --data README.md --context 16 --stage1 1 --checkpoint 2 --window 4 --feature-dim 8 --lr 1e-2)
check "surgery data and fixed" 2 "--fixed and --data exclude each other" "$bin" surgery "${sg[@]}" --out "$tmp/x.st" --fixed 0,0,1
check "surgery budget" 2 "--budget: -0.5 is neither in [0, 1] nor -1" "$bin" surgery "${sg[@]}" --out "$tmp/x.st" --budget -0.5
check "surgery context" 2 "--context 17 exceeds the model's context 16" "$bin" surgery "${sg[@]}" --out "$tmp/x.st" --context 17
check "surgery no data file" 1 "--data: cannot open '$tmp/none.txt'" "$bin" surgery "${sg[@]}" --out "$tmp/x.st" --data "$tmp/none.txt"
check "surgery experts" 2 "--experts 'full,flash': 'flash' is not full, linear or local" \
  "$bin" surgery "${sg[@]}" --out "$tmp/x.st" --experts full,flash
check "surgery trains" 0 "step 4/4 | stage 2" "$bin" surgery "${sg[@]}" --out "$tmp/a.st" --steps 4
check "surgery log" 0 '"step": 4, "kind": "train", "stage": 2' cat "$tmp/a.st.log.jsonl"
check "surgery refuses to overwrite" 1 "--out '$tmp/a.st' exists: --resume continues it" "$bin" surgery "${sg[@]}" --out "$tmp/a.st" --steps 4
check "surgery resume needs a checkpoint" 1 "--resume: '$tmp/c.st' and '$tmp/c.st.state' are needed" \
  "$bin" surgery "${sg[@]}" --out "$tmp/c.st" --steps 4 --resume
"$bin" surgery "${sg[@]}" --out "$tmp/b.st" --steps 2 --quiet
check "surgery resume is exact" 0 "" bash -c "\"\$1\" surgery $(printf '%q ' "${sg[@]}") --out $tmp/b.st --steps 4 --resume --quiet && \
  cmp $tmp/a.st $tmp/b.st && [[ \$(wc -l < $tmp/b.st.log.jsonl) == 4 ]]" _ "$bin"
check "bench prompt file" 0 "prompt: the first 8 tokens of README.md:" \
  "$bin" bench --model $tk --context 8 --decode 2 --prompt-file README.md
check "bench prompt file short" 1 "--prompt-file '$tmp/one.txt': 1 tokens, fewer than --context 8" \
  bash -c "printf a > $tmp/one.txt && \"\$1\" bench --model $tk --context 8 --decode 2 --prompt-file $tmp/one.txt" _ "$bin"
check "surgery init and fixed" 2 "--init trains a routing further: not with --fixed" \
  "$bin" surgery --model $ty --out "$tmp/x.st" --fixed 0,0,1 --init "$tmp/a.st"
check "surgery recall too short" 1 "--recall: a prompt of -32 tokens (--context less the answer's) leaves" \
  "$bin" surgery "${sg[@]}" --out "$tmp/x.st" --stage1 0 --recall 1 --steps 1
check "surgery init missing" 1 "--init: $tmp/none.st: cannot open" \
  "$bin" surgery "${sg[@]}" --out "$tmp/y.st" --init "$tmp/none.st"
check "eval bad task" 2 "--task: expected passkey or copy, got 'recall'" "$bin" eval --model $ty --data README.md --task recall
check "routing missing" 1 "--routing: $tmp/nope.st: cannot open" "$bin" bench --model $ty --context 16 --decode 4 --routing "$tmp/nope.st"
check "routing not a routing file" 1 "not a routing file" "$bin" bench --model $ty --context 16 --decode 4 --routing $fx/cli_weights.safetensors
check "bench routed" 0 "routed                               full 65.0 %, linear 12.5 %, local 22.5 %" \
  "$bin" bench --model $ty --context 16 --decode 4 --routing "$tmp/r.st"
check "bench paired needs routing" 2 "--paired sets a routed model against the original: it needs --routing F" \
  "$bin" bench --model $ty --paired
check "bench paired" 0 "routed / original                    decode tokens/s x" \
  "$bin" bench --model $ty --context 16 --decode 4 --routing "$tmp/r.st" --paired
check "bench paired json" 0 "" bash -c "\"\$1\" bench --model $ty --context 16 --decode 4 --routing $tmp/r.st --paired \
  --json - 2>/dev/null | grep -q '\"share_local\": 0.225, \"original\": {\"prefill_s\": '" _ "$bin"

if [[ -f "$gg" ]]; then
  check "routing of another model" 1 "made for n_layers = 2, the model has 30: a routing file of another model" \
    "$bin" eval --model $gg --data README.md --context 64 --tokens 256 --routing "$tmp/r.st"
  "$bin" surgery --model $gg --out "$tmp/full.st" --fixed 1,0,0 2>/dev/null
  # retrieval prompts in the distillation: their kind in the log, the answer's weight in the KL; --init goes on
  rs=(--model $gg --data README.md --context 200 --stage1 0 --feature-dim 8 --experts full,local --quiet)
  check "surgery recall" 0 "" bash -c "\"\$1\" surgery $(printf '%q ' "${rs[@]}") --out $tmp/rc.st --steps 2 --recall 1 && \
    grep -c '\"kind\": \"\(passkey\|copy\)\"' $tmp/rc.st.log.jsonl | grep -qx 2" _ "$bin"
  check "surgery init" 0 "" bash -c "\"\$1\" surgery $(printf '%q ' "${rs[@]}") --out $tmp/ri.st --steps 1 --init $tmp/rc.st && \
    ! cmp -s $tmp/rc.st $tmp/ri.st && grep -q '\"kind\": \"train\"' $tmp/ri.st.log.jsonl" _ "$bin"
  check "eval gguf routed all full" 0 "$("$bin" eval --model $gg --data README.md --context 64 --tokens 256 | sed -n 2p)" \
    "$bin" eval --model $gg --data README.md --context 64 --tokens 256 --routing "$tmp/full.st"
  check "generate gguf routed json" 0 '"share_full": 1.0000' \
    "$bin" generate --model $gg --prompt "Hello" --tokens 8 --json --routing "$tmp/full.st"
  check "eval passkey" 0 '"task": "passkey", "context": 300, "prompts": 2' \
    "$bin" eval --model $gg --data README.md --task passkey --context 300 --prompts 2 --json
  check "eval copy routes" 0 "copy at 200 tokens: accuracy" "$bin" eval --model $gg --data README.md --task copy --context 200 \
    --prompts 1 --routing "$tmp/full.st" --routes "$tmp/routes.tsv"
  check "eval copy routes file" 0 "" bash -c "[[ \$(wc -l < $tmp/routes.tsv) -ge 190 && \$(sed -n 2p $tmp/routes.tsv | wc -w) == 31 ]]"
  check "eval copy routes spans" 0 "# copy prompt 0 of 200 tokens: needle [" head -1 "$tmp/routes.tsv"
  check "eval task too short" 2 "--context 40: too short for --task passkey (its answer alone takes 8 tokens)" \
    "$bin" eval --model $gg --data README.md --task passkey --context 40
  check "eval task context" 1 "a prompt of 62 tokens (--context less the answer's) leaves -5 filler tokens" \
    "$bin" eval --model $gg --data README.md --task passkey --context 70
  check "chat one-shot" 0 "The capital of France is Paris." \
    "$bin" chat --model $gg --prompt "What is the capital of France?" --temperature 0 --activations f32 --kv f32 --tokens 12
  check "chat lines keep history" 0 "The capital of Italy is Rome." bash -c "printf 'What is the capital of France?\nAnd of Italy?\n' | \
    \"\$1\" chat --model $gg --temperature 0 --activations f32 --kv f32 --tokens 12" _ "$bin"
  check "generate gguf greedy" 0 "stop: --tokens" \
    "$bin" generate --model $gg --prompt "The capital of France is" --temperature 0 --tokens 8
  check "generate gguf json" 0 '"tokens": 8' "$bin" generate --model $gg --prompt "Hello" --tokens 8 --json
  check "generate gguf seeded" 0 "" bash -c "a=\$(\"\$1\" generate --model $gg --tokens 12 --seed 7 2>/dev/null); \
    b=\$(\"\$1\" generate --model $gg --tokens 12 --seed 7 2>/dev/null); [[ \"\$a\" == \"\$b\" && -n \"\$a\" ]]" _ "$bin"
  check "eval gguf" 0 '"scored_tokens": 255' "$bin" eval --model $gg --data README.md --context 64 --tokens 256 --json
  check "eval gguf context" 2 "--context 9000 exceeds the model's context 8192" "$bin" eval --model $gg --data README.md --context 9000
  check "eval gguf missing data" 1 "--data: cannot open 'nope.txt'" "$bin" eval --model $gg --data nope.txt
else
  echo "SKIP generate/chat/eval on $gg (scripts/get-model.sh smollm2)"
fi

# bench --model: its flags checked before the model is opened (a missing
# file is a runtime error), then a smoke run whose JSON has exactly the keys
# docs/cli.md lists
check "bench model bad context 0" 2 "--context: expected an integer" "$bin" bench --model "$gg" --context 0
check "bench model bad context abc" 2 "--context: expected an integer in [1, 16777216], got 'abc'" "$bin" bench --model "$gg" --context abc
check "bench model bad decode" 2 "--decode: expected an integer" "$bin" bench --model "$gg" --decode 0
check "bench model with only" 2 "--only does not apply to --model" "$bin" bench --model "$gg" --only layer
check "bench model with quick" 2 "--quick does not apply to --model" "$bin" bench --quick --model "$gg"
check "bench context without model" 2 "--model FILE.gguf is required" "$bin" bench --context 16
check "bench model missing file" 1 "--model: $tmp/nope.gguf: cannot open" "$bin" bench --model "$tmp/nope.gguf"
if [[ -f "$gg" ]]; then
  check "bench model context beyond" 2 "--context: 8193 is beyond the model's context length 8192" "$bin" bench --model "$gg" --context 8193
  check "bench model context + decode beyond" 2 "--context 8190 + --decode 32 = 8222 positions" "$bin" bench --model "$gg" --context 8190
  if [[ -z "${METAATTN_TEST_NO_BENCH:-}" ]]; then
    "$bin" bench --model "$gg" --context 16 --decode 4 --threads 1 --json - >"$tmp/m.json" 2>"$tmp/m.txt"
    check "bench model table" 0 "decode 4 tokens at context 16" cat "$tmp/m.txt"
    keys="model file_mb threads context prefill_tokens prefill_s prefill_tok_s decode_tokens decode_s decode_tok_s decode_weight_gb_s decode_total_gb_s peak_rss_mb activations kv prefill_attention_s decode_attention_s prefill_attention_flops decode_attention_flops decode_cache_full_gb"
    if command -v python3 >/dev/null; then
      check "bench model JSON" 0 "keys ok" python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
assert list(j) == sys.argv[2].split(), list(j)
assert j["context"] == j["prefill_tokens"] == 16 and j["decode_tokens"] == 4 and j["decode_tok_s"] > 0, j
print("keys ok")' "$tmp/m.json" "$keys"
    else
      for k in $keys; do check "bench model JSON key $k" 0 "\"$k\":" cat "$tmp/m.json"; done
    fi
  fi
else
  echo "SKIP bench --model on $gg (scripts/get-model.sh smollm2)"
fi

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
