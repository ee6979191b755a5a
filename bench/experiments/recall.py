#!/usr/bin/env python3
"""The recall task of docs/results.md ("Recall"): byte records of corpus
filler with planted facts and later queries, where only the few positions
that predict a queried value need exact attention far back.

    python3 bench/experiments/recall.py --filler data/kjv.txt --out data/recall.txt \
        [--records 8192] [--length 257] [--facts 3] [--min-gap 160] [--seed 1]
        [--drill [--query-sep :]]

Each record is exactly LENGTH bytes (the file is RECORDS * LENGTH bytes, no
separators; `metaattn train --records LENGTH` draws whole records):

  * filler: a slice of the filler text (a uniformly random start, wrapping
    around), with the marker bytes '#', '@', '=' and ':' deleted from the
    whole text first, and every byte outside printable ASCII and newline
    replaced by a space;
  * positions: FACTS fact starts, each uniform among the starts in
    [0, min(LENGTH // 2 - 11, LENGTH - 21 - MIN_GAP)] (the first half, and
    early enough for its query) whose 11 bytes overlap no earlier fact;
    then, for the facts in a random order, a query start uniform among the
    starts from MIN_GAP bytes after the end of its fact to LENGTH - 10
    whose 10 bytes overlap no fact or earlier query; when a fact or a query
    has no such start, all positions are drawn again;
  * then, fact by fact, KEY (4 upper-case letters A-Z, drawn again while it
    equals an earlier key of the record) and VALUE (4 digits 0-9): the fact
    "#KEY=VALUE#" (11 bytes) and its query "@KEY:VALUE" (10 bytes) are
    written over the filler.

The model must predict the 4 VALUE bytes of each query: the positions that
predict them are the query's ':' and the 3 digits after it (4 per query;
3 * 4 / 256 = 4.7 % of the positions for the defaults).  MIN_GAP defaults
to 160 > 4 layers x window 32 = 128, the receptive field of a stack of the
tiny preset's local experts, so a model that only attends locally cannot
see the fact.  Randomness: Python's random.Random(SEED), consumed in the
order above (filler start, positions, keys and values), record by record; the same arguments give the same bytes.
"""
import argparse
import random
import string
import sys

MARKERS = b"#@=:"


def clean_filler(raw):
    out = bytearray()
    for b in raw:
        if b in MARKERS:
            continue
        out.append(b if b == 10 or 32 <= b < 127 else 32)
    return bytes(out)


def place(rng, length, n_facts, min_gap):
    """Fact and query positions, or None when a query finds no room."""
    last = min(length // 2 - 11, length - 21 - min_gap)
    if last < 0:
        raise RuntimeError(f"--length {length} is too short for --min-gap {min_gap}")
    used = [False] * length
    facts = []
    for _ in range(n_facts):
        starts = [p for p in range(last + 1) if not any(used[p:p + 11])]
        if not starts:
            return None
        p = rng.choice(starts)
        for i in range(p, p + 11):
            used[i] = True
        facts.append(p)
    order = list(range(n_facts))
    rng.shuffle(order)
    queries = [None] * n_facts
    for i in order:
        free = [q for q in range(facts[i] + 11 + min_gap, length - 9) if not any(used[q:q + 10])]
        if not free:
            return None
        q = rng.choice(free)
        for j in range(q, q + 10):
            used[j] = True
        queries[i] = q
    return facts, queries


def make_record(rng, filler, length, n_facts, min_gap):
    start = rng.randrange(len(filler))
    rec = bytearray(filler[start:start + length])
    rec += filler[:length - len(rec)]  # wraps around
    while True:
        pos = place(rng, length, n_facts, min_gap)
        if pos:
            break
    facts, queries = pos
    keys = []
    for i, p in enumerate(facts):
        while True:
            key = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
            if key not in keys:
                break
        keys.append(key)
        value = "".join(rng.choice(string.digits) for _ in range(4))
        rec[p:p + 11] = f"#{key}={value}#".encode()
        rec[queries[i]:queries[i] + 10] = f"@{key}:{value}".encode()
    return bytes(rec), facts, queries


def make_drill(rng, length, sep):
    """A record of facts and queries only (no filler): while shorter than
    LENGTH, a new fact when there are fewer than 2 or with probability 1/2,
    else a query of a uniformly chosen earlier fact; cut to LENGTH."""
    rec, facts = "", []
    while len(rec) < length:
        if len(facts) < 2 or rng.random() < 0.5:
            key = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
            value = "".join(rng.choice(string.digits) for _ in range(4))
            facts.append((key, value))
            rec += f"#{key}={value}#"
        else:
            key, value = rng.choice(facts)
            rec += f"@{key}{sep}{value}"
    return rec[:length].encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--filler", required=True, help="filler text (e.g. data/kjv.txt)")
    ap.add_argument("--out", required=True, help="output file (records back to back)")
    ap.add_argument("--records", type=int, default=8192)
    ap.add_argument("--length", type=int, default=257, help="bytes per record (context + 1)")
    ap.add_argument("--facts", type=int, default=3)
    ap.add_argument("--min-gap", type=int, default=160, help="bytes from a fact's end to its query")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--drill", action="store_true",
                    help="the pilot's probe: facts and queries only, no filler (make_drill)")
    ap.add_argument("--query-sep", default=":", help="the byte between a query's key and value (--drill)")
    a = ap.parse_args()
    filler = clean_filler(open(a.filler, "rb").read())
    if len(filler) < a.length:
        sys.exit(f"recall.py: --filler: {a.filler} has {len(filler)} usable bytes, fewer than --length {a.length}")
    rng = random.Random(a.seed)
    with open(a.out + ".tmp", "wb") as f:
        for _ in range(a.records):
            if a.drill:
                rec = make_drill(rng, a.length, a.query_sep)
            else:
                rec, _, _ = make_record(rng, filler, a.length, a.facts, a.min_gap)
            f.write(rec)
    import os
    os.replace(a.out + ".tmp", a.out)
    what = "facts and queries only" if a.drill else f"{a.facts} facts each"
    print(f"recall.py: {a.records} records of {a.length} bytes, {what} -> {a.out}")


if __name__ == "__main__":
    main()
