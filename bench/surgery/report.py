#!/usr/bin/env python3
"""Tables of a surgery evaluation (bench/surgery/evaluate.py's OUT.jsonl) in
markdown: quality (perplexity, passkey, copy) per context length and model,
speed (decode tokens/s, prefill attention time) and the sparse execution's
wall time against its FLOPs, the routed model's shares per block.

  bench/surgery/report.py bench/results/surgery.jsonl [MORE.jsonl ...] [--llamacpp FILE.json]

Several files merge (one per length, or the quality run and an --speed-only
run on an idle machine: the speed figures are taken from the records that
have them; retrieval runs with other --seed values pool with the first:
accuracy and standard error over all their prompts).  --llamacpp: bench/compare_llamacpp.py --json output at the same
contexts (llama.cpp's best decode tokens/s), for the speed table's last
columns (a context of 8160 stands for 8192).
"""
import argparse
import json
import math


def pm(x, se):
    return "%.3f ± %.3f" % (x, se)


def pool(old, new, task):
    """Two retrieval measurements of one model (other seeds: other prompts) as
    one over all their prompts: the mean weighted by prompts, the standard
    error of that mean from both samples' spreads and the gap between them."""
    n0, n1 = old[task + "_prompts"], new[task + "_prompts"]
    m0, m1, n = old[task], new[task], n0 + n1
    m = (n0 * m0 + n1 * m1) / n
    ss = sum((k - 1) * (se * se * k) + k * (x - m) ** 2
             for k, x, se in ((n0, m0, old[task + "_se"]), (n1, m1, new[task + "_se"])))
    return {task: m, task + "_se": math.sqrt(ss / (n - 1) / n), task + "_prompts": n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl", nargs="+")
    ap.add_argument("--llamacpp")
    a = ap.parse_args()
    recs = [json.loads(l) for f in a.jsonl for l in open(f) if l.strip()]
    ev = [r for r in recs if r["kind"] in ("eval", "speed")]
    lengths = sorted({r["context"] for r in ev})
    by = {}
    for r in ev:  # quality and speed of one (model, context) from whichever records have them
        b = by.setdefault((r["model"], r["context"]), {})
        r = dict(r)
        same = r["model"] == "original" or r.get("window") == b.get("window")  # not another routing
        for task in ("passkey", "copy"):  # another seed's prompts: pooled with the ones before
            if (task in r and task in b and same
                    and r.get(task + "_seed", 0) not in b.setdefault(task + "_seeds", [0])):
                b[task + "_seeds"].append(r.get(task + "_seed", 0))
                r.update(pool(b, r, task))
        b.update(r)
    lc = {}
    if a.llamacpp:
        for run in json.load(open(a.llamacpp))["runs"]:
            if run["engine"] == "llama.cpp":
                n = 8192 if run["context"] == 8160 else run["context"]
                lc[n] = max(x["decode_tok_s"] for x in run["results"])
    print("#### Quality (held-out KJV; greedy retrieval)\n")
    print("| context | model | share of full | nats/token | Δ vs original | passkey | copy |")
    print("|---|---|---|---|---|---|---|")
    for N in lengths:
        o = by.get(("original", N))
        for m in ("original", "routed", "streaming", "random", "static"):
            r = by.get((m, N))
            if not r or "nats_per_token" not in r:
                continue
            d = r["nats_per_token"] - o["nats_per_token"] if o else float("nan")
            name = m + (" (window %d)" % r["window"] if m == "streaming" else "")
            print("| %d | %s | %.3f | %.4f | %+.4f | %s (%d) | %s (%d) |" % (
                N, name, r["share_full"], r["nats_per_token"], d, pm(r["passkey"], r["passkey_se"]),
                r["passkey_prompts"], pm(r["copy"], r["copy_se"]), r["copy_prompts"]))
    print("\n#### Speed (2 threads; decode 32 tokens after the context)\n")
    print("| context | original decode tok/s | routed | × | streaming | prefill attention s: original | routed | × |"
          + (" llama.cpp decode tok/s | routed × llama.cpp |" if lc else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if lc else ""))
    for N in lengths:
        o, r, s = by.get(("original", N)), by.get(("routed", N)), by.get(("streaming", N))
        o = r.get("paired_original", o) if r else o  # as below: the routed run's own original when paired
        if not (o and r and "decode_tok_s" in o and "decode_tok_s" in r):
            continue
        row = "| %d | %.1f | %.1f | %.2f | %s | %.3f | %.3f | %.2f |" % (
            N, o["decode_tok_s"], r["decode_tok_s"], r["decode_tok_s"] / o["decode_tok_s"],
            "%.1f" % s["decode_tok_s"] if s and "decode_tok_s" in s else "-", o["prefill_attention_s"],
            r["prefill_attention_s"], r["prefill_attention_s"] / o["prefill_attention_s"])
        if lc:
            row += " %s | %s |" % (("%.1f" % lc[N], "%.2f" % (r["decode_tok_s"] / lc[N])) if N in lc else ("-", "-"))
        print(row)
    print("\n#### Sparse execution: attention wall time against executed FLOPs, routed / original"
          " (the original of the routed run's process when it ran --paired)\n")
    print("| context | prefill: time × | FLOPs × | wall/FLOP | decode: time × | FLOPs × | wall/FLOP |")
    print("|---|---|---|---|---|---|---|")
    for N in lengths:
        o, r = by.get(("original", N)), by.get(("routed", N))
        o = r.get("paired_original", o) if r else o  # the original of the routed run's own process when paired
        if not (o and r and "prefill_attention_flops" in o and "prefill_attention_flops" in r):
            continue
        tp, fp = r["prefill_attention_s"] / o["prefill_attention_s"], r["prefill_attention_flops"] / o["prefill_attention_flops"]
        td, fd = r["decode_attention_s"] / o["decode_attention_s"], r["decode_attention_flops"] / o["decode_attention_flops"]
        print("| %d | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |" % (N, tp, fp, tp / fp, td, fd, td / fd))
    sh = [r for r in recs if r["kind"] == "shares"][-1:]  # the last file's, like the eval records
    if sh:
        print("\n#### The routed model's shares per block (held-out text)\n")
        print("| block | " + " | ".join(str(l) for l in range(len(sh[0]["blocks"]))) + " |")
        print("|---|" + "---|" * len(sh[0]["blocks"]))
        for e, name in enumerate(("full", "linear", "local")):
            print("| %s | " % name + " | ".join("%.2f" % b[e] for b in sh[0]["blocks"]) + " |")
    st = [r for r in recs if r["kind"] == "static_choice"][-1:]
    if st:
        print("\nstatic baseline: blocks kept full %s (by the perplexity rise of each alone local)" % st[0]["full_blocks"])


if __name__ == "__main__":
    main()
