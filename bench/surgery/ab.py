#!/usr/bin/env python3
"""Two builds of metaattn on the routed SmolLM2, alternated round by round
(docs/results.md §8d): each round runs `BUILD/metaattn bench --model …
--context N --decode 32 --routing R --paired --prompt-file
data/kjv-heldout.txt --threads T --json -` for build A, then for build B,
and prints the original's and the routed model's attention times, the
routed wall/FLOP, and B / A per round (a slow spell of a shared machine hits
the two builds of one round alike).

    bench/surgery/ab.py build-old build [--context 2048] [--rounds 3] [--threads 2]
                        [--decode 32] [--min-time 0]
                        [--routing bench/results/surgery-route2.routing.safetensors]
"""
import argparse
import json
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one(build, args):
    out = subprocess.run([os.path.join(build, "metaattn"), "bench", "--model",
                          os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"), "--context",
                          str(args.context), "--decode", str(args.decode), "--threads", str(args.threads),
                          "--min-time", str(args.min_time), "--routing",
                          args.routing, "--paired", "--prompt-file", os.path.join(ROOT, "data", "kjv-heldout.txt"),
                          "--json", "-"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    j = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    o = j["original"]
    return {"orig_prefill": o["prefill_attention_s"], "prefill": j["prefill_attention_s"],
            "orig_prefill_all": o["prefill_s"], "prefill_all": j["prefill_s"],
            "orig_decode": o["decode_attention_s"], "decode": j["decode_attention_s"],
            "wall_flop": j["prefill_attention_s"] / o["prefill_attention_s"] /
            (j["prefill_attention_flops"] / o["prefill_attention_flops"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=32, help="decode steps per run")
    ap.add_argument("--min-time", type=float, default=0.0, help="bench --min-time: repeat, keep the best")
    ap.add_argument("--routing", default=os.path.join(ROOT, "bench", "results", "surgery-route2.routing.safetensors"))
    args = ap.parse_args()
    res = {args.a: [], args.b: []}
    for r in range(args.rounds):
        for b in (args.a, args.b):
            x = one(b, args)
            res[b].append(x)
            print("%s round %d: prefill attention original %.3f s, routed %.3f s (wall/FLOP %.2f); decode attention "
                  "original %.2f ms, routed %.2f ms" % (b, r, x["orig_prefill"], x["prefill"], x["wall_flop"],
                                                        x["orig_decode"] * 1e3, x["decode"] * 1e3), flush=True)
    for key, what in (("orig_prefill_all", "original prefill"), ("prefill_all", "routed prefill"),
                      ("orig_prefill", "original prefill attention"), ("prefill", "routed prefill attention"),
                      ("orig_decode", "original decode attention"), ("decode", "routed decode attention")):
        q = [y[key] / x[key] for x, y in zip(res[args.a], res[args.b])]
        print("%s / %s, %s: %s (median %.3f)" % (args.b, args.a, what, " ".join("%.3f" % v for v in q),
                                                 statistics.median(q)))


if __name__ == "__main__":
    main()
