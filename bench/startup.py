#!/usr/bin/env python3
"""The fixed cost of a metaattn call: the best wall time of N runs of small commands.

    python3 bench/startup.py [--metaattn build/metaattn] [--model M] [--runs 10]

`layer` on the 16-token CLI fixture, `tokenize` of two bytes and `generate`
of one token on the GGUF model (its mmap, the tokenizer built from the
metadata, a prefill and a decode step), and `--version` (the process, the
dynamic loader and the CLI's one re-exec, tools/main.c).
"""
import argparse
import subprocess
import time


def best_ms(cmd, runs, stdin=None):
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        best = min(best, time.perf_counter() - t0)
        if p.returncode:
            raise SystemExit("startup: %s failed: %s" % (" ".join(cmd), p.stderr.decode(errors="replace")))
    return best * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metaattn", default="build/metaattn")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    m, fx = a.metaattn, "tests/fixtures/"
    cases = [("--version", [m, "--version"], None),
             ("layer, 16 tokens", [m, "layer", "--weights", fx + "cli_weights.safetensors", "--input",
                                   fx + "cli_input.safetensors", "--output", "/dev/null"], None),
             ("tokenize 2 bytes (GGUF)", [m, "tokenize", "--model", a.model, "--ids"], b"hi"),
             ("generate 1 token (GGUF)", [m, "generate", "--model", a.model, "--prompt", "hi", "--tokens", "1"], None)]
    print("| command | best of %d, ms |\n|---|---|" % a.runs)
    for name, cmd, stdin in cases:
        print("| %s | %.1f |" % (name, best_ms(cmd, a.runs, stdin)))


if __name__ == "__main__":
    main()
