#!/usr/bin/env python3
"""The share of full by token role in each block, from the routes TSV of
`metaattn eval --task passkey|copy --routes FILE` (docs/results.md §8a):
text (positions 100 up to the needle), the needle, the question, the answer
(the decode steps).

  bench/surgery/roles.py ROUTES.tsv [--blocks 3,5,7]
"""
import argparse
import re


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tsv")
    ap.add_argument("--blocks", default=None, help="only these blocks (comma-separated)")
    a = ap.parse_args()
    head = open(a.tsv).readline()
    m = re.search(r"needle \[(\d+), (\d+)\), question \[(\d+), (\d+)\)", head)
    if not m:
        raise SystemExit("roles.py: %s: no needle and question spans in its first line" % a.tsv)
    n0, n1, q0, q1 = map(int, m.groups())
    rows = [line.split("\t") for line in open(a.tsv) if not line.startswith("#")]
    L = len(rows[0]) - 1
    blocks = [int(b) for b in a.blocks.split(",")] if a.blocks else list(range(L))
    spans = (("text (100 .. needle)", 100, n0), ("needle", n0, n1), ("question", q0, q1),
             ("answer (decode)", q1, len(rows)))
    print("| share of full in block | " + " | ".join(str(b) for b in blocks) + " |")
    print("|---|" + "---|" * len(blocks))
    for name, lo, hi in spans:
        share = [sum(int(rows[t][b + 1]) == 0 for t in range(lo, hi)) / max(1, hi - lo) for b in blocks]
        print("| %s | " % name + " | ".join("%.1f" % x for x in share) + " |")


if __name__ == "__main__":
    main()
