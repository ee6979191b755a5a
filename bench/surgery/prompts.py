#!/usr/bin/env python3
"""Two models on the same retrieval prompts, prompt by prompt (docs/results.md
§8l): each FILE is the stderr of `metaattn eval --model … --task passkey|copy
--context N --prompts P --seed S --verbose` (one line per prompt: "prompt i
(depth d %): score  answer"), the first the reference (the original model);
prints the mean per depth, the prompts scored alike, better and worse, and
the mean paired difference with its standard error.

    bench/surgery/prompts.py original.err routed.err
"""
import math
import re
import sys

LINE = re.compile(r"^prompt (\d+) \(depth (\d+) %\): ([0-9.]+)")


def scores(path):
    try:
        out = {}
        for line in open(path):
            m = LINE.match(line)
            if m:
                out[int(m.group(1))] = (int(m.group(2)), float(m.group(3)))
    except OSError as e:
        sys.exit("prompts.py: %s" % e)
    if not out:
        sys.exit("prompts.py: %s: no 'prompt i (depth d %%): score' lines (eval --task … --verbose)" % path)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: prompts.py REFERENCE.err MODEL.err (the stderr of eval --task … --verbose)")
    a, b = scores(sys.argv[1]), scores(sys.argv[2])
    if sorted(a) != sorted(b) or any(a[i][0] != b[i][0] for i in a):
        sys.exit("prompts.py: the two runs are not of the same prompts (--prompts, --seed)")
    print("| depth | prompts | %s | %s |" % (sys.argv[1], sys.argv[2]))
    print("|---|---|---|---|")
    for d in sorted({v[0] for v in a.values()}):
        ids = [i for i in a if a[i][0] == d]
        print("| %d %% | %d | %.3f | %.3f |" % (d, len(ids), sum(a[i][1] for i in ids) / len(ids),
                                             sum(b[i][1] for i in ids) / len(ids)))
    diff = [b[i][1] - a[i][1] for i in sorted(a)]
    n, mean = len(diff), sum(diff) / len(diff)
    se = math.sqrt(sum((x - mean) ** 2 for x in diff) / (n - 1) / n) if n > 1 else 0.0
    print("\nall %d: %.3f against %.3f; alike %d, better %d, worse %d; paired difference %+.3f ± %.3f" % (
        n, sum(v[1] for v in b.values()) / n, sum(v[1] for v in a.values()) / n, sum(x == 0 for x in diff),
        sum(x > 0 for x in diff), sum(x < 0 for x in diff), mean, se))


if __name__ == "__main__":
    main()
