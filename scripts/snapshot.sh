#!/usr/bin/env bash
# snapshot.sh — records the outputs of a fixed set of runs, so that a change
# meant to keep behaviour (a refactoring) can be shown to keep every bit.
#   scripts/snapshot.sh BIN OUTDIR    runs them with the CLI BIN into OUTDIR
#   then: diff -r OLD NEW  (or compare OUTDIR/SHA256SUMS)
# Runs: `layer` on every layer fixture (hard, eval, training mode), 50 training
# steps (log.jsonl without wall-clock fields, model and optimizer files),
# `eval --json` soft and hard, seeded `generate` (cached and uncached), and
# `route --tsv`.  Two threads, fixed seeds: the outputs are bit-exact.
set -euo pipefail
bin=${1:?usage: snapshot.sh BIN OUTDIR}
out=${2:?usage: snapshot.sh BIN OUTDIR}
fx=tests/fixtures
mkdir -p "$out"
export OMP_NUM_THREADS=2
strip_time() { # drop wall-clock and speed fields, which change run to run
  sed -E 's/"(seconds|elapsed|elapsed_s|time_s|tokens_per_s|tok_per_s|tokens_s|wall_s|ms|step_ms|eta_s)": *[-0-9.eE+]+,? ?//g'
}
split_fixture() { # fixture -> weights file + input file (python3, stdlib only)
  python3 - "$@" <<'PY'
import json, struct, sys
src, wout, xout = sys.argv[1:4]
b = open(src, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
def write(path, keep):
    meta, body, off = {}, b'', 0
    for k, v in h.items():
        if k == '__metadata__' or not keep(k):
            continue
        s, e = v['data_offsets']
        meta[k] = dict(dtype=v['dtype'], shape=v['shape'], data_offsets=[off, off + e - s])
        body += b[8 + n + s:8 + n + e]; off += e - s
    if '__metadata__' in h and keep('__metadata__'):
        meta['__metadata__'] = h['__metadata__']
    j = json.dumps(meta).encode()
    open(path, 'wb').write(struct.pack('<Q', len(j)) + j + body)
names = ('x', 'key_padding_mask')
write(xout, lambda k: k in names)
write(wout, lambda k: k == '__metadata__' or (k not in names and not k.startswith('grad') and
                      k not in ('out', 'alpha', 'weights', 'beta_hat', 'uncertainty', 'aux_loss')))
PY
}
for f in $fx/layer_*.safetensors $fx/cli_weights.safetensors; do
  n=$(basename "$f" .safetensors)
  if [[ $n == cli_weights ]]; then w=$f; x=$fx/cli_input.safetensors
  else w=$out/$n.w.st; x=$out/$n.x.st; split_fixture "$f" "$w" "$x"; fi
  for mode in train hard soft; do
    case $mode in train) fl=() ;; hard) fl=(--eval --hard) ;; soft) fl=(--eval) ;; esac
    "$bin" layer --weights "$w" --input "$x" "${fl[@]}" --output "$out/$n.$mode.st" >"$out/$n.$mode.txt" 2>&1 \
      || echo "exit $?" >>"$out/$n.$mode.txt"
  done
  [[ $n == cli_weights ]] || rm -f "$w" "$x"
done
data=$out/corpus.txt
scripts/get-corpus.sh >/dev/null
head -c 300000 data/kjv.txt >"$data"
for c in bayesian prior-free; do
  r=$out/train-$c
  "$bin" train --data "$data" --out "$r" --steps 50 --eval-every 25 --ckpt-every 50 --batch 4 --context 64 \
    --controller $c --sample 40 --quiet --threads 2 >"$r.stdout" 2>&1
  strip_time <"$r/log.jsonl" >"$r.log"
  rm -f "$r/log.jsonl"
  sed "s|$out|OUT|g" "$r.stdout" | grep -v -E 'tokens/s|[0-9]+(\.[0-9]+)? ?s\b|elapsed|ms/step' >"$r.stdout.stable" || true
  rm "$r.stdout"
  "$bin" eval --model "$r/model.safetensors" --data "$data" --context 64 --max-windows 32 --json --threads 2 | strip_time >"$r.eval.json"
  "$bin" eval --model "$r/model.safetensors" --data "$data" --context 64 --max-windows 32 --json --hard --threads 2 | strip_time >"$r.evalhard.json"
  "$bin" generate --model "$r/model.safetensors" --prompt "And God said" --tokens 40 --seed 7 --json --threads 2 | strip_time >"$r.gen.json"
  "$bin" generate --model "$r/model.safetensors" --prompt "And God said" --tokens 20 --seed 7 --no-cache --json --threads 2 | strip_time >"$r.gennc.json"
  "$bin" route --model "$r/model.safetensors" --text "In the beginning God created" --tsv >"$r.route.tsv"
done
rm -f "$data"
(cd "$out" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum >SHA256SUMS)
echo "snapshot: $(wc -l <"$out/SHA256SUMS") files in $out"
