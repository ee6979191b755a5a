#!/usr/bin/env python3
"""Run one experiment group of docs/results.md: train its runs, evaluate them,
keep what the report needs.

    python3 bench/experiments/exp.py GROUP [--threads N] [--dry-run]

GROUP is a file bench/experiments/configs/GROUP.json: "common" arguments
for `metaattn train`, a list of runs (each a name, its own arguments,
optionally "eval" arguments and "then" phases: further argument lists, each
continuing the run to its own --steps), and optionally the group's
"evals", "eval" arguments and "windows".  Run NAME trains into
runs/exp/GROUP/NAME (the checkpoints, the full log), then is scored by
`metaattn eval --json` on the validation split — by default with soft
routing, hard routing, every token forced to `full` (the all-full loss,
FLOPs and wall-clock the routed model is compared with) and, for the
Bayesian controller, hard routing without the uncertainty gate (top-1 for
every token).  All scores are taken twice, round-robin, keeping each one's
faster pass, so that their wall-clock times compare runs made under the
same load.  The scores, the config and a thinned copy of the training log
(every 20th step and every evaluation step) go to
bench/experiments/results/GROUP/NAME/, which is what report.py reads and
what is committed.

Resumable: a finished run (its results/.../run.json exists) is not trained
again; if it lacks a score (a group's evaluations grew) and its checkpoint
is still in runs/exp/, all its scores are taken again.  A run with a
checkpoint continues with `metaattn train --resume`, which reproduces the
uninterrupted run bit for bit for the same --threads (the default, 2, is
recorded in run.json).  Stdlib only.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def sh(cmd):
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode:
        sys.exit(f"exp.py: {' '.join(cmd)} failed")


def eval_json(binary, model, args, threads):
    cmd = [binary, "eval", "--model", model, "--json", "--threads", str(threads)] + args
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"exp.py: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout)


def score(binary, model, base_args, evals, threads, passes=2):
    """Every evaluation of a run, `passes` times round-robin in one session (the
    wall-clock ratios between them compare runs made under the same load);
    per evaluation the pass with the least attention time is kept (the
    losses and FLOPs of the passes are identical)."""
    best = {}
    for _ in range(passes):
        for k, flags in evals.items():
            r = eval_json(binary, model, base_args + flags, threads)
            if k not in best or sum(l["seconds"] for l in r["layers"]) < sum(l["seconds"] for l in best[k]["layers"]):
                best[k] = r
    return best


def git_rev():
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def train_seconds(log_path):
    """Training time over every invocation: "elapsed" restarts at each resume."""
    total, prev = 0.0, 0.0
    with open(log_path) as f:
        for line in f:
            e = json.loads(line)["elapsed"]
            if e < prev:
                total += prev
            prev = e
    return round(total + prev, 1)


def thin_log(src, dst, every=20):
    with open(src) as f, open(dst + ".tmp", "w") as g:
        for line in f:
            rec = json.loads(line)
            if rec["step"] % every == 0 or rec["step"] == 1 or "val_loss" in rec:
                g.write(line)
    os.replace(dst + ".tmp", dst)


def model_metadata(model):
    """The __metadata__ of a model.safetensors (config JSON, step)."""
    with open(os.path.join(ROOT, model), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))["__metadata__"]


def model_config(model):
    return json.loads(model_metadata(model)["config"])


def evaluations(cfg, conf, spec):
    """The `metaattn eval` flags of each score kept for a run: the run's own
    "evals" (e.g. a fixed hybrid's forced routes), else the group's
    ({"name", "flags", optional "controller"}), else the default set."""
    kind = cfg["attn"]["controller"]
    evals = spec.get("evals", conf.get("evals"))
    if evals is not None:
        return {e["name"]: e["flags"] for e in evals if e.get("controller", kind) == kind}
    ev = {"soft": [], "hard": ["--hard"], "all_full": ["--hard", "--force", "full"]}
    if kind == "bayesian":
        ev["top1"] = ["--hard", "--uncertainty-threshold", "inf"]
    return ev


def model_step(model):
    return int(model_metadata(model)["step"])


def flag_value(args, flag):
    """The last value given to flag in an argument list (as the CLI parses it)."""
    vals = [args[i + 1] for i in range(len(args) - 1) if args[i] == flag]
    return vals[-1] if vals else None


def write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def run_one(group, spec, conf, a):
    common = conf["common"]
    name = spec["name"]
    out = os.path.join("runs", "exp", group, name)
    res = os.path.join("bench", "experiments", "results", group, name)
    model = os.path.join(out, "model.safetensors")
    done = os.path.join(ROOT, res, "run.json")
    if os.path.exists(done):
        with open(done) as f:
            info = json.load(f)
        evals = evaluations(info["config"], conf, spec)
        missing = [k for k in evals if k not in info["eval"]] or (["(--rescore)"] if a.rescore else [])
        if not missing:
            print(f"[{group}/{name}] done (results in {res})", flush=True)
        elif not os.path.exists(os.path.join(ROOT, model)) or model_step(model) != info["steps"]:
            print(f"[{group}/{name}] WARNING: scores {', '.join(missing)} missing and the checkpoint of step "
                  f"{info['steps']} is not in {out}: retrain it (delete {res}) to score it", flush=True)
        elif not a.dry_run:
            # all of them again, so that the timed ones are measured together
            info["eval"] = score(a.bin, model, info["eval_args"], evals, a.threads)
            info.update(threads=a.threads, scored_with=git_rev(), scored_at=time.strftime("%Y-%m-%d %H:%M:%S"))
            write_json(done, info)
            print(f"[{group}/{name}] rescored: {', '.join(evals)} (was missing {', '.join(missing)})", flush=True)
        return
    for phase in spec.get("then", []):
        if flag_value(phase, "--steps") is None:
            sys.exit(f"exp.py: {group}/{name}: every \"then\" phase needs its own --steps")
    def train(phase_args):
        """metaattn train for this run, continuing it when it has a checkpoint."""
        cmd = [a.bin, "train"] + common + spec.get("args", []) + phase_args + [
            "--out", out, "--threads", str(a.threads), "--quiet", "--sample", "0", "--ckpt-every", "100"]
        return cmd + (["--resume"] if os.path.exists(os.path.join(ROOT, model)) else [])

    if a.dry_run:
        for i, phase in enumerate([[]] + spec.get("then", [])):
            cmd = train(phase)
            print("$ " + " ".join(cmd + (["--resume"] if i and "--resume" not in cmd else [])))
        return
    t0 = time.time()
    target = int(flag_value(common + spec.get("args", []), "--steps") or 1300)
    if not os.path.exists(os.path.join(ROOT, model)) or model_step(model) < target:
        sh(train([]))
    # further phases ("then": argument lists, e.g. a longer context at a low
    # constant learning rate), each continuing the run to its own --steps
    for phase in spec.get("then", []):
        if model_step(model) < int(flag_value(phase, "--steps")):
            sh(train(phase))
    cfg = model_config(model)
    ev = conf.get("eval", []) + spec.get("eval", []) + ["--max-windows", str(a.windows)]
    scores = score(a.bin, model, ev, evaluations(cfg, conf, spec), a.threads)
    os.makedirs(os.path.join(ROOT, res), exist_ok=True)
    log = os.path.join(ROOT, out, "log.jsonl")
    thin_log(log, os.path.join(ROOT, res, "log.jsonl"))
    with open(log) as f:
        last = json.loads(f.readlines()[-1])
    info = {"group": group, "name": name, "train_args": common + spec.get("args", []),
            "then": spec.get("then", []), "threads": a.threads, "scored_with": git_rev(),
            "scored_at": time.strftime("%Y-%m-%d %H:%M:%S"), "eval_args": ev, "config": cfg,
            "steps": last["step"], "train_seconds": train_seconds(log),
            "wall_seconds_this_invocation": round(time.time() - t0, 1), "eval": scores}
    write_json(done, info)
    print(f"[{group}/{name}] " + ", ".join(f"{k} {v['val_loss']:.4f}" for k, v in scores.items()), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("group", help="a file bench/experiments/configs/GROUP.json")
    ap.add_argument("--threads", type=int, default=2, help="OpenMP threads per run (default 2; recorded)")
    ap.add_argument("--bin", default="build/metaattn")
    ap.add_argument("--windows", type=int, default=None,
                    help="validation windows per evaluation (default: the group's \"windows\", else 1000)")
    ap.add_argument("--only", default=None, help="comma-separated run names")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--rescore", action="store_true",
                    help="score trained runs again (e.g. when the machine was busy during their timed evals)")
    a = ap.parse_args()
    path = os.path.join(HERE, "configs", a.group + ".json")
    if not os.path.exists(path):
        groups = sorted(f[:-5] for f in os.listdir(os.path.join(HERE, "configs")) if f.endswith(".json"))
        sys.exit(f"exp.py: no group '{a.group}' (have: {', '.join(groups)})")
    with open(path) as f:
        conf = json.load(f)
    if not os.path.exists(os.path.join(ROOT, a.bin)):
        sys.exit(f"exp.py: {a.bin} not found: run 'make build' first")
    if not a.dry_run and "data/kjv.txt" in conf["common"] and not os.path.exists(os.path.join(ROOT, "data/kjv.txt")):
        sh(["scripts/get-corpus.sh"])
    if a.windows is None:
        a.windows = conf.get("windows", 1000)
    only = set(a.only.split(",")) if a.only else None
    for spec in conf["runs"]:
        if only is None or spec["name"] in only:
            run_one(a.group, spec, conf, a)


if __name__ == "__main__":
    main()
