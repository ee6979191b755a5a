#!/usr/bin/env python3
"""The speed table of repeated paired runs (docs/results.md §8l): each FILE
is the --json of one `metaattn bench --model … --routing R --paired`, the
routed model and the original in one process; per context the median and
the range over the runs of decode tokens/s, the routed / original ratios
and the attention wall time per executed FLOP (routed / original).

    bench/surgery/paired.py bench/results/surgery-w512-d1-paired-xeon-*.json
"""
import json
import statistics
import sys


def span(xs, fmt):
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(xs), min(xs), max(xs))


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: paired.py FILE.json... (the --json of metaattn bench --model … --paired)")
    by = {}
    for f in sys.argv[1:]:
        try:
            r = json.load(open(f))
        except (OSError, ValueError) as e:
            sys.exit("paired.py: %s: %s (the --json of one bench run)" % (f, e))
        if not isinstance(r, dict) or "original" not in r:
            sys.exit("paired.py: %s is not a paired run (no \"original\"; bench --routing R --paired)" % f)
        by.setdefault(r["context"], []).append(r)
    print("| context | runs | original decode tok/s | routed | × | prefill attention × | wall/FLOP |"
          " decode attention × | wall/FLOP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sorted(by):
        rs, rows = by[n], []
        for r in rs:
            o = r["original"]
            pt = r["prefill_attention_s"] / o["prefill_attention_s"]
            pf = r["prefill_attention_flops"] / o["prefill_attention_flops"]
            dt = r["decode_attention_s"] / o["decode_attention_s"]
            df = r["decode_attention_flops"] / o["decode_attention_flops"]
            rows.append((o["decode_tok_s"], r["decode_tok_s"], r["decode_tok_s"] / o["decode_tok_s"], pt, pt / pf,
                         dt, dt / df))
        col = list(zip(*rows))
        print("| %d | %d | %s | %s | %s | %s | %s | %s | %s |" % (
            n, len(rs), span(col[0], "%.1f"), span(col[1], "%.1f"), span(col[2], "%.2f"), span(col[3], "%.3f"),
            span(col[4], "%.2f"), span(col[5], "%.3f"), span(col[6], "%.2f")))


if __name__ == "__main__":
    main()
