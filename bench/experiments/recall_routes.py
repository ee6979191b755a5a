#!/usr/bin/env python3
"""How a model routes the recall task's bytes (docs/results.md section 6).

    python3 bench/experiments/recall_routes.py --model M [--records 64] [--seed 7] [--name NAME]

Makes fresh records of the recall task (recall.py's generator: 257 bytes of
KJV filler, 3 facts "#KEY=VALUE#", each queried "@KEY:VALUE" at least 160
bytes later), routes them with eval-mode hard routing (`metaattn route
--tsv --hard --context 256`) and counts, per layer, the executed expert of
each kind of position:
  fact        the 11 bytes of a fact;
  query key   "@" and the 4 key letters of a query;
  value       the positions that predict a queried value byte (the ':'
              and the first 3 digits: these need the fact, far back);
  filler      every other position.
Writes bench/experiments/results/recall-routes/NAME.json (shares per kind
and layer) and, for the first record, a heatmap of the executed expert per
byte and layer, docs/figures/recall-routes-NAME.png (red full, green
linear, blue local), with the kind of each byte marked underneath.
"""
import argparse
import json
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import recall  # noqa: E402
import report  # noqa: E402

KINDS = ("fact", "query key", "value", "filler")
COLOURS = {"E1": (220, 40, 40), "E2": (40, 170, 40), "E3": (40, 80, 220)}


def kinds_of(length, facts, queries):
    k = ["filler"] * length
    for p in facts:
        for i in range(p, p + 11):
            k[i] = "fact"
    for q in queries:
        for i in range(q, q + 5):
            k[i] = "query key"
        for i in range(q + 5, q + 9):  # ':' and 3 digits predict the 4 value digits
            k[i] = "value"
    return k


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", default=None, help="output name (default: the model's run directory name)")
    ap.add_argument("--records", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "metaattn"))
    a = ap.parse_args()
    name = a.name or os.path.basename(os.path.dirname(os.path.abspath(a.model)))
    filler = recall.clean_filler(open(os.path.join(ROOT, "data", "kjv.txt"), "rb").read())
    rng = random.Random(a.seed)
    counts = None
    first = None
    for r in range(a.records):
        rec, facts, queries = recall.make_record(rng, filler, 257, 3, 160)
        text = rec[:256]
        path = os.path.join(ROOT, "runs", f".recall-routes-{os.getpid()}.txt")
        with open(path, "wb") as f:
            f.write(text)
        p = subprocess.run([a.bin, "route", "--model", a.model, "--file", path, "--tsv", "--hard", "--context", "256",
                            "--color", "never"], capture_output=True, text=True)
        os.remove(path)
        if p.returncode:
            sys.exit(f"recall_routes.py: metaattn route failed: {p.stderr.strip()}")
        kinds = kinds_of(256, facts, queries)
        rows = [line.split("\t") for line in p.stdout.strip().split("\n")[1:]]
        n_layers = max(int(row[0]) for row in rows) + 1
        if counts is None:
            counts = [{k: {} for k in KINDS} for _ in range(n_layers)]
        for row in rows:
            layer, pos, expert = int(row[0]), int(row[1]), row[3]
            c = counts[layer][kinds[pos]]
            c[expert] = c.get(expert, 0) + 1
        if first is None:
            first = (text, kinds, rows, n_layers)
    shares = [{k: {e: n / sum(c.values()) for e, n in sorted(c.items())} for k, c in layer.items()} for layer in counts]
    out = {"model": a.model, "records": a.records, "seed": a.seed, "routing": "hard (eval)", "shares": shares}
    res = os.path.join(HERE, "results", "recall-routes")
    os.makedirs(res, exist_ok=True)
    with open(os.path.join(res, name + ".json"), "w") as f:
        json.dump(out, f, indent=1)
    for li, layer in enumerate(shares):
        print(f"layer {li}: " + " | ".join(f"{k}: " + " ".join(f"{e} {100 * s:.0f}%" for e, s in v.items())
                                           for k, v in layer.items()))
    # heatmap of the first record: one row per layer, and a row for the byte kinds
    text, kinds, rows, n_layers = first
    tsv = os.path.join(report.FIG, f"recall-routes-{name}.tsv")
    kind_rgb = {"fact": (250, 190, 0), "query key": (160, 0, 200), "value": (0, 0, 0), "filler": (235, 235, 235)}
    with open(tsv, "w") as f:
        f.write("# byte row r g b: rows 0..L-1 the executed expert per layer (red full, green linear, blue local), "
                "row -1 the byte's kind (orange fact, purple query key, black value-predicting, grey filler)\n")
        for i, k in enumerate(kinds):  # scan lines in y order, separated by blank lines
            f.write(f"{i} -1 " + " ".join(map(str, kind_rgb[k])) + "\n")
        for li in range(n_layers):
            f.write("\n")
            for row in rows:
                if int(row[0]) == li:
                    f.write(f"{row[1]} {li} " + " ".join(map(str, COLOURS.get(row[3], (0, 0, 0)))) + "\n")
    label = lambda c: "''" if c == "'" else "%%" if c == "%" else c if " " <= c <= "~" else "·"
    tics = ", ".join("'%s' %d" % (label(chr(c)), i) for i, c in enumerate(text) if i % 4 == 0)
    png = report.gnuplot(f"recall-routes-{name}.png",
                         f"{name}: executed expert per byte of a recall record (red full, green linear, blue local; "
                         f"bottom row: orange fact, purple query key, black value-predicting)", "", "layer",
                         [f"'{tsv}' using 1:2:3:4:5 with rgbimage notitle"],
                         extra=f"set xtics ({tics}) font ',7' scale 0 rotate by 90\nset ytics 1\n"
                               f"set yrange [-1.5:{n_layers - 0.5}]\nset xrange [-0.5:255.5]\nunset grid",
                         size="1600,300")
    print(f"wrote docs/figures/{png}, {os.path.relpath(os.path.join(res, name + '.json'), ROOT)}")


if __name__ == "__main__":
    main()
