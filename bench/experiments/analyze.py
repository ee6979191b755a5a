#!/usr/bin/env python3
"""Routing analysis and the second corpus (docs/results.md sections 4 and 5).

    python3 bench/experiments/analyze.py [--threads N]

For every finished run of the phase1 and frontier groups whose checkpoint is
still in runs/exp/ (exp.py trains them):
  - routes 128 windows of 128 bytes spread evenly over the KJV validation
    split (`metaattn route --tsv --context 128`) and aggregates, per layer,
    the chosen expert (argmax α) by character class and by position in the
    window, and for the Bayesian controller the uncertainty U_t by chosen
    expert -> bench/experiments/results/analysis/GROUP-NAME.json;
  - writes a heatmap of three passages (`metaattn route --html`) to
    docs/figures/route-GROUP-NAME.html;
  - scores the model on a second corpus it was not trained or tuned on,
    Debian's fortunes collection (`scripts/get-corpus.sh fortunes`; 1000
    windows of 128 bytes over the whole file, soft and hard routing) ->
    bench/experiments/results/corpus2/GROUP-NAME.json.
Existing outputs are kept (delete one to redo it).  report.py renders them.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RES = os.path.join(HERE, "results")
CTX = 128

CLASSES = ("word start", "in word", "space", "newline", "digit", "punctuation")  # "punctuation": and other bytes
POS_BUCKETS = ((0, 8), (8, 16), (16, 32), (32, 64), (64, 128))


def is_letter(b):
    return b is not None and (0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A)


def char_class(b, prev):
    """ASCII classes (bytes >= 0x80, e.g. UTF-8 sequences, count as punctuation/other)."""
    if is_letter(b):
        return "in word" if is_letter(prev) else "word start"
    if b == 0x20:
        return "space"
    if b == 0x0A:
        return "newline"
    if 0x30 <= b <= 0x39:
        return "digit"
    return "punctuation"


def val_windows(path, n_win):
    """n_win windows of CTX bytes evenly spread over the validation split (the last 10 %)."""
    with open(path, "rb") as f:
        data = f.read()
    n_val = int(len(data) * 0.1)
    val = data[len(data) - n_val:]
    n_all = len(val) // CTX
    return [val[(i * n_all // n_win) * CTX:(i * n_all // n_win + 1) * CTX] for i in range(n_win)]


def route_tsv(binary, model, text_path, threads):
    out = subprocess.run([binary, "route", "--model", model, "--file", text_path, "--tsv", "--context", str(CTX)],
                         cwd=ROOT, check=True, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(threads))).stdout
    lines = out.splitlines()
    head = lines[0].split("\t")
    return head, [line.split("\t") for line in lines[1:]]


def analyse(binary, model, text_path, text, threads):
    head, rows = route_tsv(binary, model, text_path, threads)
    K = sum(h.startswith("alpha") for h in head)
    has_u = head[-1] == "uncertainty"
    L = 1 + max(int(r[0]) for r in rows)
    # the first 64 bytes of window 10, for a heatmap figure: alpha per layer and byte
    h0 = 10 * CTX
    res = {"layers": [], "heatmap": {"text": text[h0:h0 + 64].decode("latin-1"),
                                     "alpha": [[[float(x) for x in r[4:4 + K]] for r in rows
                                                if int(r[0]) == layer and h0 <= int(r[1]) < h0 + 64]
                                               for layer in range(L)]}}
    for layer in range(L):
        by_class = {c: [0] * K for c in CLASSES}
        by_pos = {f"{a}-{b - 1}": [0] * K for a, b in POS_BUCKETS}
        u_by = [[] for _ in range(K)]
        alpha_full_by_class = {c: [] for c in CLASSES}
        for r in rows:
            if int(r[0]) != layer:
                continue
            i, b, k = int(r[1]), int(r[2]), int(r[3][1:]) - 1
            p = i % CTX
            prev = text[i - 1] if p > 0 else None
            c = char_class(b, prev)
            by_class[c][k] += 1
            alpha_full_by_class[c].append(float(r[4]))
            for a, e in POS_BUCKETS:
                if a <= p < e:
                    by_pos[f"{a}-{e - 1}"][k] += 1
            if has_u:
                u_by[k].append(float(r[4 + K]))
        res["layers"].append({
            "chosen_by_class": by_class, "chosen_by_position": by_pos,
            "mean_alpha_full_by_class": {c: (sum(v) / len(v) if v else None) for c, v in alpha_full_by_class.items()},
            "uncertainty_by_chosen": [{"n": len(v), "mean": (sum(v) / len(v) if v else None),
                                       "min": (min(v) if v else None), "max": (max(v) if v else None)} for v in u_by]
            if has_u else None})
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default="build/metaattn")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(ROOT, a.bin)):
        sys.exit(f"analyze.py: {a.bin} not found: run 'make build' first")
    subprocess.run(["scripts/get-corpus.sh"], cwd=ROOT, check=True)
    subprocess.run(["scripts/get-corpus.sh", "fortunes"], cwd=ROOT, check=True)
    wins = val_windows(os.path.join(ROOT, "data", "kjv.txt"), 128)
    text = b"".join(wins)
    work = os.path.join(ROOT, "runs", "exp", "analysis")
    os.makedirs(work, exist_ok=True)
    passages = os.path.join(work, "val_windows.txt")
    with open(passages, "wb") as f:
        f.write(text)
    three = os.path.join(work, "three_passages.txt")
    with open(three, "wb") as f:
        f.write(wins[10] + wins[60] + wins[110])
    for sub in ("analysis", "corpus2"):
        os.makedirs(os.path.join(RES, sub), exist_ok=True)
    for group in ("phase1", "frontier"):
        gdir = os.path.join(RES, group)
        if not os.path.isdir(gdir):
            continue
        for name in sorted(os.listdir(gdir)):
            model = os.path.join("runs", "exp", group, name, "model.safetensors")
            if not os.path.exists(os.path.join(gdir, name, "run.json")) or not os.path.exists(os.path.join(ROOT, model)):
                continue
            tag = f"{group}-{name}"
            out = os.path.join(RES, "analysis", tag + ".json")
            if not os.path.exists(out):
                print(f"[{tag}] routing analysis", flush=True)
                res = analyse(a.bin, model, passages, text, a.threads)
                res["model"] = f"{group}/{name}"
                with open(out + ".tmp", "w") as f:
                    json.dump(res, f, indent=1)
                os.replace(out + ".tmp", out)
                subprocess.run([a.bin, "route", "--model", model, "--file", three, "--context", str(CTX), "--html",
                                os.path.join("docs", "figures", f"route-{tag}.html"), "--color", "never"],
                               cwd=ROOT, check=True, capture_output=True)
            out2 = os.path.join(RES, "corpus2", tag + ".json")
            if not os.path.exists(out2):
                print(f"[{tag}] second corpus", flush=True)
                ev = {}
                for mode, flags in (("soft", []), ("hard", ["--hard"])):
                    cmd = [a.bin, "eval", "--model", model, "--data", "data/fortunes.txt", "--split", "all",
                           "--max-windows", "1000", "--json", "--threads", str(a.threads)] + flags
                    ev[mode] = json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                                                         text=True).stdout)
                with open(out2 + ".tmp", "w") as f:
                    json.dump({"model": f"{group}/{name}", "data": "data/fortunes.txt", "eval": ev}, f, indent=1)
                os.replace(out2 + ".tmp", out2)


if __name__ == "__main__":
    main()
