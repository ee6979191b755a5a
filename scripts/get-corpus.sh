#!/usr/bin/env bash
# Writes the default training corpus, the King James Bible from Debian's
# bible-kjv package, to data/kjv.txt (4.3 MB): installs the package if it is
# missing (through install-deps.sh), writes to a temp file and renames, and
# does nothing when the file is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=data/kjv.txt
if [[ -s "$out" ]]; then
  echo "get-corpus: $out present ($(wc -c < "$out") bytes)"
  exit 0
fi
command -v bible >/dev/null || scripts/install-deps.sh
mkdir -p data
bible "Gen1:1-Rev22:21" > "$out.tmp.$$"
[[ -s "$out.tmp.$$" ]] || { echo "get-corpus: bible printed nothing" >&2; rm -f "$out.tmp.$$"; exit 1; }
mv "$out.tmp.$$" "$out"
echo "get-corpus: wrote $out ($(wc -c < "$out") bytes)"
