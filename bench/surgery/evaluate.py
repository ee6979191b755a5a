#!/usr/bin/env python3
"""The surgery evaluation (docs/results.md, "Surgery"): a routed SmolLM2 next
to the original model and to the baselines at equal cost, at several
context lengths, in one run, through the metaattn CLI only.

  bench/surgery/evaluate.py --routing runs/surgery/b15.st [--lengths 2048,4096,8192]
                            [--prompts 30] [--baseline-prompts 10] [--ppl-tokens 32768]
                            [--seed 0] [--tasks ppl,passkey,copy]
                            [--skip-speed | --speed-only] [--min-time S] [--models original,routed,...]
                            [--static-from EARLIER.jsonl] [--bin build/metaattn]
                            [--out bench/results/surgery]

Per length N: perplexity on data/kjv-heldout.txt (windows of N, stride N, the
first --ppl-tokens tokens), passkey and copy accuracy (greedy, the prompts of
`metaattn eval --task`, the same for every model), prefill attention time and
decode tokens/s (`metaattn bench --model --context N --decode 32
--prompt-file data/kjv-heldout.txt`: held-out text, routed as text is; at
8192, --context 8160: prompt and decode within the model's context; the
routed model's run --paired, so that its ratios to the original come from
one process).  Models:
the original, the routed one, and the baselines made with `metaattn surgery
--fixed`:
  streaming   StreamingLLM at equal cost: every token local, its window
              widened so that a decode step reads as many keys as the routed
              model's at N (sinks + window = f N + (1 - f)(W + S), f the
              routed model's share of full);
  random      the routed model's share of each expert in each block, drawn
              token-independently;
  static      the blocks whose local-only perplexity (on training text) rises
              most stay full, the rest local, as many full as the routed
              model's share of full buys.
Writes OUT.jsonl (every measurement) and OUT.md (the tables, with the
commands).  Needs the build (build/metaattn), the model
(scripts/get-model.sh smollm2) and the data (bench/surgery/data.sh).
"""
import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "build", "metaattn")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
HELD = os.path.join(ROOT, "data", "kjv-heldout.txt")
TRAIN = os.path.join(ROOT, "data", "kjv-train.txt")


def run(args, log):
    cmd = [BIN] + args
    log.write("$ " + " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in cmd) + "\n")
    log.flush()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), out.stderr))
    return out.stdout


def jrun(args, log, json_flag=("--json",)):
    text = run(args + list(json_flag), log)
    return json.loads([l for l in text.splitlines() if l.startswith("{")][-1])


def routing_config(path):
    """window and sinks of a routing file (its safetensors metadata)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n)).get("__metadata__", {})
    return int(meta["window"]), int(meta["sinks"])


def make_fixed(out, spec, window, sinks, log):
    if os.path.exists(out):
        os.remove(out)
    run(["surgery", "--model", MODEL, "--fixed", spec, "--out", out, "--window", str(window), "--sinks", str(sinks)],
        log)


def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routing", required=True)
    ap.add_argument("--lengths", default="2048,4096,8192")
    ap.add_argument("--prompts", type=int, default=30)
    ap.add_argument("--baseline-prompts", type=int, default=10)
    ap.add_argument("--ppl-tokens", type=int, default=32768)
    ap.add_argument("--seed", type=int, default=0, help="the retrieval prompts' draws (eval --task --seed)")
    ap.add_argument("--tasks", default="ppl,passkey,copy", help="which quality measurements to run")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "surgery"))
    ap.add_argument("--skip-speed", action="store_true", help="quality only (the speed runs on an idle machine)")
    ap.add_argument("--speed-only", action="store_true", help="the speed runs only (no perplexity or retrieval)")
    ap.add_argument("--min-time", type=float, default=0.0, help="bench --min-time: repeat, keep the best")
    ap.add_argument("--static-from", help="an earlier OUT.jsonl: its ranking of the blocks (the 31 evals) instead of anew")
    ap.add_argument("--bin", default=BIN, help="the metaattn binary (default build/metaattn)")
    ap.add_argument("--models", default="original,routed,streaming,random,static",
                    help="which models to run (a run stopped midway goes on with the rest)")
    a = ap.parse_args()
    BIN = os.path.abspath(a.bin)
    lengths = [int(x) for x in a.lengths.split(",")]
    tasks = a.tasks.split(",")
    bad = [t for t in tasks if t not in ("ppl", "passkey", "copy")]
    if bad:
        sys.exit("evaluate.py: --tasks %r: unknown measurement %r (ppl, passkey, copy)" % (a.tasks, bad[0]))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    work = a.out + ".work"
    os.makedirs(work, exist_ok=True)
    log = open(a.out + ".commands.txt", "w")
    res = open(a.out + ".jsonl", "w")
    window, sinks = routing_config(a.routing)

    def record(**kv):
        res.write(json.dumps(kv) + "\n")
        res.flush()
        print(json.dumps(kv), flush=True)

    # the routed model's shares per block, on held-out text at the first length
    ev = jrun(["eval", "--model", MODEL, "--routing", a.routing, "--data", HELD, "--context", str(lengths[0]),
               "--stride", str(lengths[0]), "--tokens", str(a.ppl_tokens)], log)
    blocks, f = ev["blocks"], ev["share_full"]
    record(kind="shares", routing=a.routing, share_full=f, blocks=blocks)
    # random: the same shares per block, token-independent
    rnd = os.path.join(work, "random.st")
    spec = ";".join("%d:%.6f,%.6f,%.6f" % (l, b[0], b[1], 1.0 - b[0] - b[1]) for l, b in enumerate(blocks))
    make_fixed(rnd, spec, window, sinks, log)
    # static: rank the blocks by the perplexity rise of making each alone local (training text); not timed
    static = os.path.join(work, "static.st")
    earlier = [json.loads(l) for l in open(a.static_from)] if a.static_from else []
    earlier = [r for r in earlier if r["kind"] == "static_choice"]
    if not a.speed_only:
        n_full = max(0, round(f * len(blocks)))
        if earlier:  # its ranking; as many full blocks as this routing's share buys
            rise = earlier[0]["rise"]
            keep = sorted(sorted(range(len(blocks)), key=lambda l: -rise[l])[:n_full])
        else:
            base = jrun(["eval", "--model", MODEL, "--data", TRAIN, "--context", "2048", "--stride", "2048",
                         "--tokens", "2048"], log)["nats_per_token"]
            rise = []
            for l in range(len(blocks)):
                one = os.path.join(work, "one.st")
                make_fixed(one, "%d:0,0,1" % l + "".join(";%d:1,0,0" % k for k in range(len(blocks)) if k != l),
                           window, sinks, log)
                nl = jrun(["eval", "--model", MODEL, "--routing", one, "--data", TRAIN, "--context", "2048",
                           "--stride", "2048", "--tokens", "2048"], log)["nats_per_token"]
                rise.append(nl - base)
            keep = sorted(sorted(range(len(blocks)), key=lambda l: -rise[l])[:n_full])
        record(kind="static_choice", rise=rise, full_blocks=keep, **({"source": a.static_from} if earlier else {}))
        make_fixed(static, ";".join("%d:%s" % (l, "1,0,0" if l in keep else "0,0,1") for l in range(len(blocks))),
                   window, sinks, log)

    for N in lengths:
        # StreamingLLM at equal cost: the keys a decode step reads
        keys = f * N + (1 - f) * (window + sinks)
        sw = max(1, int(round(keys - sinks)))
        stream = os.path.join(work, "streaming-%d.st" % N)
        make_fixed(stream, "0,0,1", sw, sinks, log)
        models = [("original", None), ("routed", a.routing), ("streaming", stream), ("random", rnd),
                  ("static", static)]
        for name, r in models:
            ra = ["--routing", r] if r else []
            prompts = a.prompts if name in ("original", "routed") else a.baseline_prompts
            rec = {"kind": "speed" if a.speed_only else "eval", "model": name, "context": N,
                   "window": sw if name == "streaming" else window}
            if name not in a.models.split(",") or (a.speed_only and name not in ("original", "routed", "streaming")):
                continue
            if not a.speed_only and "ppl" in tasks:
                ppl = jrun(["eval", "--model", MODEL, "--data", HELD, "--context", str(N), "--stride", str(N),
                            "--tokens", str(max(a.ppl_tokens, N))] + ra, log)
                rec.update(nats_per_token=ppl["nats_per_token"], share_full=ppl.get("share_full", 1.0))
            for task in () if a.speed_only else [t for t in ("passkey", "copy") if t in tasks]:
                t = jrun(["eval", "--model", MODEL, "--data", HELD, "--task", task, "--context", str(N),
                          "--prompts", str(prompts), "--seed", str(a.seed)] + ra, log)
                rec[task] = t["accuracy"]
                rec[task + "_se"] = t["stderr"]
                rec[task + "_prompts"] = t["prompts"]
                rec[task + "_seed"] = a.seed
            if not a.skip_speed and name in ("original", "routed", "streaming"):
                paired = ["--paired"] if name == "routed" else []  # its ratios from one process (drift)
                b = jrun(["bench", "--model", MODEL, "--context", str(min(N, 8192 - 32)), "--decode", "32",
                          "--prompt-file", HELD, "--min-time", str(a.min_time)] + ra + paired, log, ("--json", "-"))
                if "original" in b:
                    rec["paired_original"] = b["original"]
                rec.update(decode_tok_s=b["decode_tok_s"], prefill_s=b["prefill_s"],
                           bench_share_full=b.get("share_full", 1.0),
                           prefill_attention_s=b["prefill_attention_s"], decode_attention_s=b["decode_attention_s"],
                           prefill_attention_flops=b["prefill_attention_flops"],
                           decode_attention_flops=b["decode_attention_flops"])
            record(**rec)
    log.close()


if __name__ == "__main__":
    main()
