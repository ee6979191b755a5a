#!/usr/bin/env python3
"""A routing file with another local window and the controllers' full bias
moved: the eval-time knobs of a distilled routing (docs/results.md §8j).

  bench/surgery/retune.py IN.st OUT.st [--window W] [--shift D] [--sinks S]

--shift D adds D to every learned controller's full logit bias
(blk.L.controller.net.3.bias[0]), the same move the training's budget
calibration makes after each step (src/surgery/distill.c): D < 0 sends
fewer tokens to full, the tokens that stay being those the controllers
score highest.  --window and --sinks rewrite the file's config.  Nothing
else changes; the output is a valid routing file for --routing.
"""
import argparse
import json
import struct
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--window", type=int)
    ap.add_argument("--sinks", type=int)
    ap.add_argument("--shift", type=float, default=0.0)
    a = ap.parse_args()
    try:
        with open(a.inp, "rb") as f:
            blob = f.read()
    except OSError as e:
        sys.exit("%s: %s" % (a.inp, e.strerror))
    n = struct.unpack("<Q", blob[:8])[0] if len(blob) >= 8 else -1
    try:
        if not 0 < n <= len(blob) - 8:
            raise ValueError("header length %d" % n)
        head = json.loads(blob[8:8 + n])
    except ValueError as e:
        sys.exit("%s: not a safetensors file (%s)" % (a.inp, e))
    data = bytearray(blob[8 + n:])
    meta = head.get("__metadata__", {}) if isinstance(head, dict) else {}
    if meta.get("format") != "metaattn-routing":
        sys.exit("%s: not a metaattn routing file (format %r)" % (a.inp, meta.get("format")))
    for name, v in (("--window", a.window), ("--sinks", a.sinks)):
        if v is not None:
            if v < (1 if name == "--window" else 0):
                sys.exit("%s: %d out of range" % (name, v))
            meta[name[2:]] = str(v)
    moved = 0
    for k, t in head.items():
        if k.endswith(".controller.net.3.bias"):
            if t["dtype"] != "F32":
                sys.exit("%s: dtype %s, expected F32" % (k, t["dtype"]))
            off = t["data_offsets"][0]
            b0 = struct.unpack_from("<f", data, off)[0]
            struct.pack_into("<f", data, off, b0 + a.shift)
            moved += 1
    if a.shift and not moved:
        sys.exit("%s: no learned controllers to shift" % a.inp)
    h = json.dumps(head, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(a.out, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    print("%s: window %s, sinks %s, full bias %+g on %d controllers" % (a.out, meta["window"], meta["sinks"],
                                                                        a.shift, moved))


if __name__ == "__main__":
    main()
