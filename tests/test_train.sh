#!/usr/bin/env bash
# test_train.sh — `metaattn train` end to end on real text (the book of
# Genesis from Debian's bible-kjv): a ~30-second run of a very small model
# must bring the validation loss well below ln 256 = 5.55 nats/byte; a run
# stopped (Ctrl-C or SIGKILL) and resumed reproduces the uninterrupted one
# bit for bit, and so does one stopped by SIGTERM; a NaN loss stops or skips the step, a full disk leaves the
# checkpoint intact; bad input gives clear errors.
# Usage: tests/test_train.sh path/to/metaattn   (from the repository root)
set -u
bin=${1:?usage: test_train.sh path/to/metaattn}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

check() { # name, expected exit code, expected substring, command...
  local name=$1 code=$2 want=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [[ $rc -eq $code && "$out" == *"$want"* ]]; then ok; else
    bad "$name: exit $rc (want $code), wanted '$want' in:"; echo "$out" | tail -3; fi
}

if ! command -v bible >/dev/null; then
  echo "FAIL bible (Debian package bible-kjv) is not installed: run scripts/install-deps.sh"; exit 1
fi
bible "Gen1:1-Gen50:26" > "$tmp/gen.txt"
cat > "$tmp/cfg.json" <<'EOF'
{"attn": {"d_model": 48, "n_heads": 4, "window_size": 8, "controller_hidden": 16, "dropout": 0.0},
 "vocab_size": 256, "n_layers": 2, "max_seq_len": 64, "ffn_multiplier": 4, "tie_weights": true,
 "position_norm": "max_seq_len"}
EOF
common=(--config "$tmp/cfg.json" --data "$tmp/gen.txt" --batch 16 --context 64 --lr 3e-3 --warmup 20
        --eval-every 50 --eval-batches 4 --sample 0 --report 0 --threads 2)

# 1. learning: 300 steps
check "train" 0 "checkpoint:" "$bin" train "${common[@]}" --steps 300 --out "$tmp/A" --ckpt-every 100
val=$(grep -o '"val_loss": [0-9.]*' "$tmp/A/log.jsonl" | tail -1 | awk '{print $2}')
if awk -v v="$val" 'BEGIN { exit !(v != "" && v < 3.0) }'; then ok; else bad "final val_loss '$val' not below 3.0 (ln 256 = 5.55)"; fi
[[ $(wc -l < "$tmp/A/log.jsonl") -eq 300 ]] && ok || bad "log.jsonl should have 300 lines"

# 2. exact resume: 120 steps, stop, resume to 300 == the uninterrupted run
"$bin" train "${common[@]}" --steps 300 --out "$tmp/B" --ckpt-every 100 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do  # stop it once the step-100 checkpoint exists
  [[ -f "$tmp/B/model.safetensors" ]] && break; sleep 0.1
done
kill -INT $pid; wait $pid; rc=$?
[[ $rc -eq 130 || $rc -eq 0 ]] && ok || bad "SIGINT: exit $rc (want 130)"
[[ -f "$tmp/B/model.safetensors" && -f "$tmp/B/optim.safetensors" ]] && ok || bad "no checkpoint after SIGINT"
check "resume" 0 "resumed" "$bin" train "${common[@]}" --steps 300 --out "$tmp/B" --resume --ckpt-every 100
strip() { sed -E 's/"tokens_per_s": [0-9.]+, "elapsed": [0-9.]+, //' "$1"; }
meta_step() { head -c 4096 "$1" | tr -d '\0' | grep -o '"step":"[0-9]*"'; }
if cmp -s <(strip "$tmp/A/log.jsonl") <(strip "$tmp/B/log.jsonl"); then ok; else
  bad "resumed run differs from the uninterrupted one"; diff <(strip "$tmp/A/log.jsonl") <(strip "$tmp/B/log.jsonl") | head -4; fi
cmp -s "$tmp/A/model.safetensors" "$tmp/B/model.safetensors" && ok || bad "final weights differ after resume"

# 2b. a crash: SIGKILL once the log is past the step-100 checkpoint (the
# resumed run must drop the log lines after it), resume == uninterrupted
"$bin" train "${common[@]}" --steps 300 --out "$tmp/K" --ckpt-every 100 >/dev/null 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do  # no time limit: sanitizer builds are slow
  [[ -f "$tmp/K/model.safetensors" && $(wc -l < "$tmp/K/log.jsonl") -ge 130 ]] && break; sleep 0.1
done
kill -KILL $pid; wait $pid 2>/dev/null
n_log=$(wc -l < "$tmp/K/log.jsonl")
[[ $n_log -ge 130 && $n_log -lt 300 ]] && ok || bad "SIGKILL: log has $n_log lines (want 130..299: killed mid-run)"
check "resume after SIGKILL" 0 "resumed" "$bin" train "${common[@]}" --steps 300 --out "$tmp/K" --resume --ckpt-every 100
if cmp -s <(strip "$tmp/A/log.jsonl") <(strip "$tmp/K/log.jsonl"); then ok; else
  bad "run resumed after SIGKILL differs from the uninterrupted one"; diff <(strip "$tmp/A/log.jsonl") <(strip "$tmp/K/log.jsonl") | head -4; fi
cmp -s "$tmp/A/model.safetensors" "$tmp/K/model.safetensors" && ok || bad "final weights differ after SIGKILL + resume"

# 2b'. SIGTERM (kill, a scheduler's stop) and SIGHUP (the terminal went
# away) are Ctrl-C: the run finishes its step, writes a checkpoint and exits
# 128 + the signal; resumed, it reproduces the uninterrupted run
"$bin" train "${common[@]}" --steps 300 --out "$tmp/T" --ckpt-every 100 >/dev/null 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do  # some steps in, before the first periodic checkpoint
  [[ -f "$tmp/T/log.jsonl" && $(wc -l < "$tmp/T/log.jsonl") -ge 30 ]] && break; sleep 0.05
done
kill -TERM $pid; wait $pid; rc=$?
[[ $rc -eq 143 ]] && ok || bad "SIGTERM: exit $rc (want 143)"
n_log=$(wc -l < "$tmp/T/log.jsonl")
[[ -f "$tmp/T/optim.safetensors" && $(meta_step "$tmp/T/model.safetensors") == "\"step\":\"$n_log\"" ]] && ok ||
  bad "SIGTERM: no checkpoint of the last logged step $n_log: $(meta_step "$tmp/T/model.safetensors")"
check "resume after SIGTERM" 0 "resumed" "$bin" train "${common[@]}" --steps 300 --out "$tmp/T" --resume --ckpt-every 100
if cmp -s <(strip "$tmp/A/log.jsonl") <(strip "$tmp/T/log.jsonl"); then ok; else
  bad "run resumed after SIGTERM differs from the uninterrupted one"; diff <(strip "$tmp/A/log.jsonl") <(strip "$tmp/T/log.jsonl") | head -4; fi
cmp -s "$tmp/A/model.safetensors" "$tmp/T/model.safetensors" && ok || bad "final weights differ after SIGTERM + resume"
"$bin" train "${common[@]}" --steps 300 --out "$tmp/H" >/dev/null 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
  [[ -f "$tmp/H/log.jsonl" && $(wc -l < "$tmp/H/log.jsonl") -ge 5 ]] && break; sleep 0.05
done
kill -HUP $pid; wait $pid; rc=$?
n_log=$(wc -l < "$tmp/H/log.jsonl")
[[ $rc -eq 129 && $(meta_step "$tmp/H/model.safetensors") == "\"step\":\"$n_log\"" ]] && ok ||
  bad "SIGHUP: exit $rc (want 129), checkpoint $(meta_step "$tmp/H/model.safetensors") (want step $n_log)"

# 2c. a weight that turns NaN during step 30 (test hook; the forward refuses
# it before it reaches the loss): stop with a message, keep the step-20
# checkpoint; or skip the step
METAATTN_TEST_NAN_STEP=30 check "NaN loss stops" 1 "step 30: weight 'tok_emb.weight' holds a non-finite value (nan) at 0; weights not updated" \
  "$bin" train "${common[@]}" --steps 60 --out "$tmp/N" --ckpt-every 20
[[ $(wc -l < "$tmp/N/log.jsonl") -eq 29 ]] && ok || bad "NaN stop: log should end at step 29"
[[ $(meta_step "$tmp/N/model.safetensors") == '"step":"20"' ]] && ok || bad "NaN stop: checkpoint is not the step-20 one: $(meta_step "$tmp/N/model.safetensors")"
METAATTN_TEST_NAN_STEP=30 check "NaN loss skipped" 0 "step 30 skipped" \
  "$bin" train "${common[@]}" --steps 40 --out "$tmp/S" --ckpt-every 20 --on-nonfinite skip
[[ $(wc -l < "$tmp/S/log.jsonl") -eq 39 ]] && ok || bad "NaN skip: log should have 39 lines (step 30 dropped)"
check "resume after a skipped step" 0 "resumed" "$bin" train "${common[@]}" --steps 45 --out "$tmp/S" --resume
check "bad on-nonfinite" 2 "--on-nonfinite: expected stop or skip" "$bin" train --on-nonfinite ignore

# 2d. disk full while saving (a 64 KiB file-size limit: writes fail with
# EFBIG): clear error, the previous checkpoint and log intact, no temp files
"$bin" train "${common[@]}" --steps 2 --out "$tmp/D" >/dev/null 2>&1
cp "$tmp/D/model.safetensors" "$tmp/D.model"; cp "$tmp/D/optim.safetensors" "$tmp/D.optim"
check "disk full" 1 "File too large" bash -c "trap '' XFSZ; ulimit -f 64; exec \"\$@\"" _ \
  "$bin" train "${common[@]}" --steps 4 --out "$tmp/D" --resume
cmp -s "$tmp/D/model.safetensors" "$tmp/D.model" && cmp -s "$tmp/D/optim.safetensors" "$tmp/D.optim" && ok || bad "disk full: checkpoint changed"
[[ $(ls "$tmp/D" | grep -c tmp) -eq 0 ]] && ok || bad "disk full: temporary files left: $(ls "$tmp/D")"
check "unwritable out" 1 "--out: cannot create" "$bin" train "${common[@]}" --steps 2 --out /dev/null/run

# 3. eval: JSON contract, soft vs hard, executed FLOPs
j=$("$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --context 64 --json 2>&1)
[[ "$j" == '{"val_loss": '* && "$j" == *'"bits_per_byte"'* && "$j" == *'"executed_flops"'* && "$j" == *'"norm_entropy"'* ]] && ok || bad "eval --json: $j"
jh=$("$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --context 64 --json --hard 2>&1)
[[ "$jh" == *'"routing": "hard"'* ]] && ok || bad "eval --hard --json: $jh"
# every expert ran on every token in soft mode; hard mode executed fewer (sparse)
soft_f=$(echo "$j" | grep -o '"executed_fraction": \[[^]]*\]' | head -1)
hard_f=$(echo "$jh" | grep -o '"executed_fraction": \[[^]]*\]' | head -1)
[[ "$soft_f" == '"executed_fraction": [1.000000, 1.000000, 1.000000]' && "$hard_f" != "$soft_f" ]] && ok || bad "executed fractions soft '$soft_f' hard '$hard_f'"
# the uncertainty gate: 'inf' sends every token to its top-1 expert (one expert per token executed)
jt=$("$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --context 64 --json --hard --uncertainty-threshold inf 2>&1)
top1_f=$(echo "$jt" | grep -o '"executed_fraction": \[[^]]*\]' | head -1 | tr -d '[],' | awk '{printf "%.4f", $2 + $3 + $4}')
[[ "$top1_f" == "1.0000" ]] && ok || bad "eval --uncertainty-threshold inf: executed fractions sum to '$top1_f' (want 1): $jt"
jf=$("$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --context 64 --json --hard --force full 2>&1)
[[ "$jf" == *'"forced": "full"'* && "$jf" == *'"executed_fraction": [1.000000, 0.000000, 0.000000]'* ]] && ok || bad "eval --force full: $jf"
check "eval force without hard" 2 "needs --hard" "$bin" eval --model "$tmp/A/model.safetensors" --force local
check "eval force name" 1 "--force fast: the model has no expert 'fast'" "$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --hard --force fast
check "eval force count" 2 "more names than the model's 2 layers" "$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --hard --force full,local,local
check "eval force list" 2 "expected expert names separated by commas" "$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --hard --force full,
check "eval bad threshold" 2 "--uncertainty-threshold: expected a number" "$bin" eval --model "$tmp/A/model.safetensors" --uncertainty-threshold high
check "eval table" 0 "bits/byte" "$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --context 64 --split all --max-windows 20
check "eval no model" 2 "--model is required" "$bin" eval --data "$tmp/gen.txt"
check "eval missing model" 1 "nope.safetensors" "$bin" eval --model "$tmp/nope.safetensors" --data "$tmp/gen.txt"
check "eval context" 2 "exceeds the model's max_seq_len 64" "$bin" eval --model "$tmp/A/model.safetensors" --data "$tmp/gen.txt" --context 100
check "eval split" 2 "expected val or all" "$bin" eval --model "$tmp/A/model.safetensors" --split test

# 4. generate: the decode cache and re-running the context give the same text
g1=$("$bin" generate --model "$tmp/A/model.safetensors" --prompt "In the beginning" --tokens 40 --seed 3 --soft 2>&1 | head -1)
g2=$("$bin" generate --model "$tmp/A/model.safetensors" --prompt "In the beginning" --tokens 40 --seed 3 --soft --no-cache 2>&1 | head -1)
[[ -n "$g1" && "$g1" == "$g2" ]] && ok || bad "generate: cache '$g1' vs no-cache '$g2'"
check "generate summary" 0 "decode cache, hard routing" "$bin" generate --model "$tmp/A/model.safetensors" --tokens 20
# --top-p 1 is the default (the same text); a small nucleus is greedy, as --temperature 0
g3=$("$bin" generate --model "$tmp/A/model.safetensors" --tokens 30 --seed 3 --top-p 1 2>&1 | head -1)
g4=$("$bin" generate --model "$tmp/A/model.safetensors" --tokens 30 --seed 3 2>&1 | head -1)
g5=$("$bin" generate --model "$tmp/A/model.safetensors" --tokens 30 --seed 5 --top-p 1e-6 2>&1 | head -1)
g6=$("$bin" generate --model "$tmp/A/model.safetensors" --tokens 30 --temperature 0 2>&1 | head -1)
[[ -n "$g3" && "$g3" == "$g4" && "$g5" == "$g6" ]] && ok || bad "generate --top-p: '$g3' / '$g4', '$g5' / '$g6'"
check "generate bad top-p" 2 "--top-p: expected a number in (0, 1], got '0'" "$bin" generate --model "$tmp/A/model.safetensors" --top-p 0
check "generate json" 0 '"executed_fraction"' "$bin" generate --model "$tmp/A/model.safetensors" --tokens 10 --json
check "generate context" 0 "stopped at the model's context of 64" "$bin" generate --model "$tmp/A/model.safetensors" --tokens 100
check "generate no model" 2 "--model is required" "$bin" generate --tokens 5
check "generate empty prompt" 2 "must not be empty" "$bin" generate --model "$tmp/A/model.safetensors" --prompt ""

# 5. route: TSV table, HTML heatmap, coloured terminal text
n_tsv=$("$bin" route --model "$tmp/A/model.safetensors" --text "And God said" --tsv | wc -l)
[[ $n_tsv -eq 25 ]] && ok || bad "route --tsv: $n_tsv lines (want 1 + 2 layers x 12 bytes)"
hdr_tsv=$("$bin" route --model "$tmp/A/model.safetensors" --text "And" --tsv | head -2 | tr '\t' ' ')
[[ "$hdr_tsv" == $'layer pos byte expert alpha1 alpha2 alpha3 uncertainty\n0 0 65 E'* ]] && ok || bad "route --tsv columns: $hdr_tsv"
check "route html" 0 "wrote $tmp/r.html" "$bin" route --model "$tmp/A/model.safetensors" --file "$tmp/gen.txt" --html "$tmp/r.html" --color never --hard
grep -q '<h2>Layer 1</h2>' "$tmp/r.html" && grep -q 'title="pos 0: E' "$tmp/r.html" && ok || bad "route html content"
check "route colour" 0 $'\033[30;4' "$bin" route --model "$tmp/A/model.safetensors" --text "x<y & z" --color always
# --context 8: bytes 8..15 are routed as a window of their own
r_a=$("$bin" route --model "$tmp/A/model.safetensors" --text "And God said unt" --tsv --context 8 | awk 'NR > 1 && $2 >= 8 { print $1, $4, $5, $6, $7 }')
r_b=$("$bin" route --model "$tmp/A/model.safetensors" --text "said unt" --tsv | awk 'NR > 1 { print $1, $4, $5, $6, $7 }')
[[ -n "$r_a" && "$r_a" == "$r_b" ]] && ok || bad "route --context 8: windows not routed on their own"
check "route context" 2 "exceeds the model's max_seq_len 64" "$bin" route --model "$tmp/A/model.safetensors" --text abc --context 65
check "route both inputs" 2 "exactly one of --text and --file" "$bin" route --model "$tmp/A/model.safetensors" --text a --file b
check "route bad html path" 1 "--html: cannot write" "$bin" route --model "$tmp/A/model.safetensors" --text abc --html /nonexistent/x.html

# 6. plot: PNG charts from the log
if command -v gnuplot >/dev/null; then
  check "plot" 0 "wrote $tmp/plots/loss.png" "$bin" plot --log "$tmp/A/log.jsonl" --out "$tmp/plots"
  for f in loss routing shares; do
    [[ $(head -c 8 "$tmp/plots/$f.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] && ok || bad "plot: $f.png is not a PNG"
  done
  echo '{"step": 1, "loss": 2.0}' > "$tmp/bad.jsonl"; echo 'not json' >> "$tmp/bad.jsonl"
  check "plot bad log" 1 "line 2 is not a metaattn training record" "$bin" plot --log "$tmp/bad.jsonl" --out "$tmp/plots2"
else
  bad "gnuplot is not installed: run scripts/install-deps.sh"
fi
check "plot no log" 2 "--log is required" "$bin" plot

# 7. errors
check "existing run" 1 "already holds a run" "$bin" train "${common[@]}" --steps 10 --out "$tmp/A"
check "resume nothing" 1 "no checkpoint" "$bin" train "${common[@]}" --steps 10 --out "$tmp/none" --resume
check "missing data" 1 "nope.txt" "$bin" train --data "$tmp/nope.txt" --out "$tmp/C"
: > "$tmp/empty.txt"
check "empty data" 1 "is empty" "$bin" train --data "$tmp/empty.txt" --out "$tmp/C"
check "bad flag" 2 "unknown option '--bogus'" "$bin" train --bogus 1
check "bad number" 2 "--steps: expected an integer" "$bin" train --steps ten
check "context too long" 2 "exceeds the model's max_seq_len 64" "$bin" train "${common[@]}" --context 65 --out "$tmp/C"
check "bad schedule" 2 "ramp kind must be cos or lin" "$bin" train --cost-lambda 0:1:exp:0:10
# an all-full model (expert_costs [1.0]: plain softmax attention) trains, scores and generates
sed 's/"dropout": 0.0}/"dropout": 0.0, "expert_costs": [1.0], "controller": "prior-free"}/' "$tmp/cfg.json" > "$tmp/full.json"
check "all-full train" 0 "checkpoint:" "$bin" train --config "$tmp/full.json" --data "$tmp/gen.txt" --batch 4 --context 64 --steps 5 --sample 0 --threads 2 --out "$tmp/F"
check "all-full eval" 0 "E1=1.000" "$bin" eval --model "$tmp/F/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 4 --hard
check "all-full generate" 0 "E1 1.000 / 100.0%" "$bin" generate --model "$tmp/F/model.safetensors" --tokens 5
check "all-full force" 1 "the model has no expert 'local'" "$bin" eval --model "$tmp/F/model.safetensors" --data "$tmp/gen.txt" --context 64 --hard --force local
check "bad beta0" 2 "--beta0: expected a number" "$bin" train --beta0 -1
check "bad epsilon" 2 "--epsilon: expected a number" "$bin" train --epsilon 0
# the prior's flags reach the saved config; the model loads (its prior buffer matches the config)
check "beta0 epsilon" 0 "checkpoint:" "$bin" train "${common[@]}" --steps 2 --out "$tmp/P" --beta0 2.5 --epsilon 0.05
hdr=$(head -c 8192 "$tmp/P/model.safetensors" | tr -d '\0')
[[ "$hdr" == *'beta_0\":2.5,'* && "$hdr" == *'epsilon\":0.05,'* ]] && ok || bad "--beta0/--epsilon not in the saved config"
check "beta0 model loads" 0 "bits/byte" "$bin" eval --model "$tmp/P/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 4
check "help" 0 "--resume" "$bin" train --help

# 8. budgeted, straight-through routing: the multipliers move and are logged,
# survive a stop and a resume bit for bit; the flags' errors name them
budget=(--steps 60 --hard-from 10 --hard-train straight-through --cost-target 0.3 --full-share 0.1
        --usage-floor 0.05 --dual-lr 0.5 --share-qkv --uncertainty mutual_info --ckpt-every 30)
check "budget train" 0 "checkpoint:" "$bin" train "${common[@]}" "${budget[@]}" --out "$tmp/Q"
last=$(tail -1 "$tmp/Q/log.jsonl")
[[ "$last" == *'"duals": ['* && "$last" == *'"mi_token": '* ]] && ok || bad "no duals / mi_token in the log"
[[ "$last" != *'"duals": [0, 0, 0, 0, 0]'* ]] && ok || bad "the multipliers never moved"
"$bin" train "${common[@]}" "${budget[@]}" --out "$tmp/R" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do [[ -f "$tmp/R/model.safetensors" ]] && break; sleep 0.1; done
kill -TERM $pid; wait $pid
check "budget resume" 0 "resumed" "$bin" train "${common[@]}" "${budget[@]}" --out "$tmp/R" --resume
if cmp -s <(strip "$tmp/Q/log.jsonl") <(strip "$tmp/R/log.jsonl") && cmp -s "$tmp/Q/model.safetensors" "$tmp/R/model.safetensors"; then ok
else bad "budgeted run resumed differs"; diff <(strip "$tmp/Q/log.jsonl") <(strip "$tmp/R/log.jsonl") | head -4; fi
check "budget eval mi" 0 "MI(route; byte)=" "$bin" eval --model "$tmp/Q/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 4 --hard
check "bad hard-train" 2 "--hard-train: expected gumbel or straight-through" "$bin" train "${common[@]}" --hard-train sometimes --out "$tmp/U"
check "bad cost-target" 2 "--cost-target: expected a number in [-1, 1]" "$bin" train --cost-target 2
check "bad experts" 2 "unknown expert 'fast'" "$bin" train "${common[@]}" --experts full,fast --out "$tmp/EX"
check "all-local train" 0 "checkpoint:" "$bin" train "${common[@]}" --experts local --steps 3 --out "$tmp/AL"

# eval --compare: soft, hard and all-full passes in one summary; the all-full
# pass equals eval --hard --force full, the hard pass eval --hard
cmp_out=$("$bin" eval --model "$tmp/Q/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 8 --compare --threads 1 2>&1)
hl=$("$bin" eval --model "$tmp/Q/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 8 --hard --threads 1 | sed -n 's/^loss \([0-9.]*\) .*/\1/p')
fl=$("$bin" eval --model "$tmp/Q/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 8 --hard --force full --threads 1 | sed -n 's/^loss \([0-9.]*\) .*/\1/p')
[[ "$cmp_out" == *"  hard     loss $hl nats/byte"* && "$cmp_out" == *"  all-full loss $fl nats/byte"* && "$cmp_out" == *"x the FLOPs and"* && "$cmp_out" == *"layer 1 hard routes: full "* ]] && ok \
  || bad "eval --compare: hard $hl / all-full $fl not in: $cmp_out"
check "compare without full" 0 "layer 0 hard routes: local 100.0%" "$bin" eval --model "$tmp/AL/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 4 --compare
# the defaults before 0.3 (results.md): soft training, per-expert projections, no budget
check "old defaults" 0 "checkpoint:" "$bin" train --data "$tmp/gen.txt" --batch 4 --context 64 --steps 2 --sample 0 \
  --report 0 --threads 2 --hard-from -1 --no-share-qkv --epsilon 0.01 --elbo-weight 1 --kl-mode token --cost-target -1 \
  --full-share -1 --usage-floor 0 --hard-train gumbel --uncertainty entropy --out "$tmp/OLD"
head -c 4096 "$tmp/OLD/model.safetensors" | grep -aq 'share_qkv\\":false' && ok || bad "--no-share-qkv: the saved config shares"
check "train report" 0 "  hard - soft: " "$bin" train "${common[@]}" --steps 3 --report 16 --out "$tmp/RP"
out=$("$bin" train "${common[@]}" --steps 3 --report 0 --out "$tmp/RP0" 2>&1)
[[ "$out" != *"hard - soft"* ]] && ok || bad "--report 0 still printed the summary"
# eval --gate-share: its three passes agree with eval's own (top-1 = --hard with the gate shut,
# soft, gated = --hard at the threshold it found); a prior-free model has no gate
ev=(--model "$tmp/Q/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 8 --threads 1)
jg=$("$bin" eval "${ev[@]}" --gate-share 0.2 --json 2>&1)
eta=$(sed -n 's/.*"threshold": \([^,]*\),.*/\1/p' <<<"$jg")
vl() { "$bin" eval "${ev[@]}" --json "$@" | sed -n 's/^{"val_loss": \([0-9.]*\),.*/\1/p'; }
gv() { sed -n "s/.*\"$1\": \([0-9.]*\),.*/\1/p" <<<"$jg"; }
close() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && (a - b) ^ 2 < 1e-8) }'; }
close "$(gv loss_top1)" "$(vl --hard --uncertainty-threshold inf)" && close "$(gv loss_soft)" "$(vl)" \
  && close "$(gv loss_gated)" "$(vl --hard --uncertainty-threshold "$eta")" && [[ "$jg" == *'"gap_kept": '* ]] && ok \
  || bad "eval --gate-share: $jg"
check "gate-share prior-free" 1 "prior-free, which has no uncertainty gate" "$bin" eval --model "$tmp/F/model.safetensors" --data "$tmp/gen.txt" --gate-share 0.1
check "gate-share and hard" 2 "--gate-share runs its own top-1, soft and gated passes" "$bin" eval "${ev[@]}" --gate-share 0.1 --hard
check "gate-share range" 2 "--gate-share: expected a number in [0, 1]" "$bin" eval "${ev[@]}" --gate-share 1.5
# a fixed hybrid (train --force): layer 0 full, layer 1 local, from step 0; scored with the same routes
check "fixed hybrid train" 0 "closing summary: not for forced routes" "$bin" train "${common[@]}" --steps 10 --report 4 --force full,local --out "$tmp/FH"
jh=$("$bin" eval --model "$tmp/FH/model.safetensors" --data "$tmp/gen.txt" --context 64 --max-windows 4 --json --hard --force full,local 2>&1)
[[ "$jh" == *'"forced": "full,local"'* && "$jh" == *'"executed_fraction": [1.000000, 0.000000, 0.000000]'*'"executed_fraction": [0.000000, 0.000000, 1.000000]'* ]] && ok || bad "eval --force full,local: $jh"
grep -q '"step": 1, .*"aux_loss": 0.000000, .*"hard": 1' "$tmp/FH/log.jsonl" && ok || bad "train --force: step 1 not hard or with an aux loss"
check "force and hard-from" 2 "routes hard from step 0: drop --hard-from 50" "$bin" train "${common[@]}" --force local --hard-from 50 --out "$tmp/FH2"
check "train force count" 2 "more names than the model's 2 layers" "$bin" train "${common[@]}" --steps 2 --force full,local,local --out "$tmp/FH3"
check "compare and hard" 2 "--compare runs its own soft, hard and all-full passes" "$bin" eval --model "$tmp/Q/model.safetensors" --compare --hard

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
