#!/usr/bin/env python3
"""Tables and figures of docs/results.md from bench/experiments/results/.

    python3 bench/experiments/report.py [--check]

Reads every run.json and log.jsonl that exp.py left under
bench/experiments/results/GROUP/NAME/, and
  - rewrites each generated table of docs/results.md in place, between the
    markers <!-- begin NAME --> and <!-- end NAME --> (the prose around them
    is left alone);
  - draws the figures into docs/figures/*.png with gnuplot (the data each
    one plots is left next to it as a .tsv).
A group with no finished run yet gets a one-line "not run yet" table.
--check rewrites nothing and exits 1 if docs/results.md is out of date.
Stdlib + gnuplot only.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RES = os.path.join(HERE, "results")
DOC = os.path.join(ROOT, "docs", "results.md")
FIG = os.path.join(ROOT, "docs", "figures")
EXPERTS = ("full", "linear", "local")

# The paper's Phase-1 Tiny-LM numbers (hard-routing projection).
PAPER = {"bayesian": {"cost": 25.1, "entropy": 43.3}, "prior-free": {"cost": 59.3, "entropy": 55.8}}


def load_group(group):
    d = os.path.join(RES, group)
    runs = {}
    if not os.path.isdir(d):
        return runs
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name, "run.json")
        if os.path.exists(p):
            with open(p) as f:
                r = json.load(f)
            with open(os.path.join(d, name, "log.jsonl")) as f:
                r["log"] = [json.loads(line) for line in f]
            runs[name] = r
    return runs


def mean_sd(xs, fmt="{:.3f}"):
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return fmt.format(statistics.mean(xs)) + " ± " + fmt.replace("+", "").format(statistics.stdev(xs))


def layer_mean(ev, key):
    return statistics.mean(layer[key] for layer in ev["layers"])


def train_tail(r, key, n=5):
    """Mean over layers and the last n records of the thinned log (every 20th step: steps 1220-1300 of
    1300) of a training-batch statistic (α as trained: Dirichlet samples for the Bayesian controller)."""
    recs = r["log"][-n:]
    return statistics.mean(statistics.mean(l[key] for l in rec["layers"]) for rec in recs)


def controller(r):
    return r["config"]["attn"]["controller"]


# ----------------------------------------------------------------------------
# Phase 1: Bayesian vs prior-free, 3 seeds each


def table_phase1(runs):
    if not runs:
        return "_Not run yet: `python3 bench/experiments/exp.py phase1`._\n"
    rows = []
    head = ("| controller | runs | val loss soft | val loss hard | projected hard cost %: eval / training (paper) "
            "| norm. entropy %: eval / training (paper) | collapsed % | mean α full / linear / local |\n"
            "|---|---:|---:|---:|---:|---:|---:|---|\n")
    for kind, label in (("prior-free", "prior-free (no cost, no entropy term)"),
                        ("bayesian", "Bayesian (β0 1, ε 0.01, elbo 1)")):
        rs = [r for r in runs.values() if controller(r) == kind and not r["name"].startswith("free-tuned")]
        if not rs:
            continue
        soft = [r["eval"]["soft"]["val_loss"] for r in rs]
        hard = [r["eval"]["hard"]["val_loss"] for r in rs]
        cost = [100 * layer_mean(r["eval"]["soft"], "projected_cost") for r in rs]
        ent = [100 * layer_mean(r["eval"]["soft"], "norm_entropy") for r in rs]
        tcost = [100 * train_tail(r, "projected_cost") for r in rs]
        tent = [100 * train_tail(r, "norm_entropy") for r in rs]
        col = [100 * layer_mean(r["eval"]["soft"], "collapsed") for r in rs]
        w = [statistics.mean(statistics.mean(l["weights"][k] for l in r["eval"]["soft"]["layers"]) for r in rs)
             for k in range(3)]
        rows.append(f"| {label} | {len(rs)} | {mean_sd(soft)} | {mean_sd(hard)} | "
                    f"{mean_sd(cost, '{:.1f}')} / {mean_sd(tcost, '{:.1f}')} ({PAPER[kind]['cost']}) | "
                    f"{mean_sd(ent, '{:.1f}')} / {mean_sd(tent, '{:.1f}')} "
                    f"({PAPER[kind]['entropy']}) | {mean_sd(col, '{:.1f}')} | "
                    f"{w[0]:.3f} / {w[1]:.3f} / {w[2]:.3f} |\n")
    tuned = [r for r in runs.values() if r["name"].startswith("free-tuned")]
    for r in tuned:
        ev = r["eval"]["soft"]
        a = r["config"]["attn"]
        rows.append(f"| prior-free, cost λ {a['cost_lambda']:g}, entropy {a['entropy_coeff']:g} ({r['name']}) | 1 | "
                    f"{ev['val_loss']:.3f} | {r['eval']['hard']['val_loss']:.3f} | "
                    f"{100 * layer_mean(ev, 'projected_cost'):.1f} / {100 * train_tail(r, 'projected_cost'):.1f} | "
                    f"{100 * layer_mean(ev, 'norm_entropy'):.1f} / {100 * train_tail(r, 'norm_entropy'):.1f} | "
                    f"{100 * layer_mean(ev, 'collapsed'):.1f} | "
                    + " / ".join(f"{statistics.mean(l['weights'][k] for l in ev['layers']):.3f}" for k in range(3))
                    + " |\n")
    return head + "".join(rows)


def table_phase1_runs(runs):
    """One row per run and layer: shares, entropy, cost, the top-1 loss of the Bayesian runs."""
    if not runs:
        return "_Not run yet._\n"
    out = ["| run | val soft | val hard | val top-1 | layer | α full / linear / local | norm. entropy % "
           "| projected cost % | collapsed % |\n|---|---:|---:|---:|---:|---|---:|---:|---:|\n"]
    for name, r in sorted(runs.items()):
        ev = r["eval"]["soft"]
        top1 = r["eval"].get("top1", r["eval"]["hard"])["val_loss"]
        for i, l in enumerate(ev["layers"]):
            lead = (f"| {name} | {ev['val_loss']:.3f} | {r['eval']['hard']['val_loss']:.3f} | {top1:.3f} "
                    if i == 0 else "| | | | ")
            out.append(lead + f"| {i} | " + " / ".join(f"{w:.3f}" for w in l["weights"])
                       + f" | {100 * l['norm_entropy']:.1f} | {100 * l['projected_cost']:.1f} "
                       f"| {100 * l['collapsed']:.1f} |\n")
    return "".join(out)


def table_transition(groups):
    """Is there a sudden drop of routing entropy (the paper's predicted phase transition)?  Per run: the
    training-batch entropy at a few steps, the drop during the first 100 steps (warmup), and after them the
    largest drop over any 100-step span of the entropy smoothed over 5 logged points (100 steps), next to
    the spread of the unsmoothed values around the smoothed curve (noise)."""
    rows = []
    for group, runs in groups:
        for name, r in sorted(runs.items()):
            ent = [(rec["step"], statistics.mean(l["norm_entropy"] for l in rec["layers"])) for rec in r["log"]
                   if rec["step"] % 20 == 0 or rec["step"] == 1]
            at = dict(ent)
            late = [(s, e) for s, e in ent if s >= 100]
            sm = [(late[i][0], statistics.mean(e for _, e in late[max(0, i - 2):i + 3])) for i in range(len(late))]
            noise = statistics.pstdev([e - m for (_, e), (_, m) in zip(late, sm)]) if len(late) > 1 else 0.0
            best = (0.0, 0, 0)
            for i, (s0, e0) in enumerate(sm):
                for s1, e1 in sm[i + 1:]:
                    if s1 - s0 > 100:
                        break
                    if e0 - e1 > best[0]:
                        best = (e0 - e1, s0, s1)
            marks = [at.get(s) for s in (1, 100, 500)] + [ent[-1][1]]
            early = at[1] - at[100] if 1 in at and 100 in at else None
            rows.append(f"| {group}/{name} | " + " | ".join("—" if v is None else f"{100 * v:.1f}" for v in marks)
                        + f" | {'—' if early is None else f'{100 * early:.1f}'} | {100 * best[0]:.1f} "
                        f"(steps {best[1]}–{best[2]}) | {100 * noise:.1f} |\n")
    if not rows:
        return "_Not run yet._\n"
    return ("| run | entropy % at step 1 | 100 | 500 | last | drop in steps 1–100, points "
            "| largest later drop within 100 steps (smoothed), points | noise (sd), points |\n"
            "|---|---:|---:|---:|---:|---:|---|---:|\n" + "".join(rows))


def fig_entropy(runs, stem, title):
    """Normalised routing entropy (mean over layers) against the training step, every run."""
    if not runs:
        return None
    names = sorted(runs)
    tsv = os.path.join(FIG, stem + ".tsv")
    with open(tsv, "w") as f:
        f.write("# step " + " ".join(names) + "  (normalised routing entropy, mean over layers, training batch)\n")
        steps = sorted({rec["step"] for n in names for rec in runs[n]["log"]})
        by = {n: {rec["step"]: rec for rec in runs[n]["log"]} for n in names}
        for s in steps:
            vals = []
            for n in names:
                rec = by[n].get(s)
                vals.append("%.5f" % statistics.mean(l["norm_entropy"] for l in rec["layers"]) if rec else "NaN")
            f.write(f"{s} " + " ".join(vals) + "\n")
    plots = []
    for i, n in enumerate(names):
        color = ("#c0392b", "#e67e22", "#f1948a", "#8e44ad", "#d35400")[i % 5] if controller(runs[n]) == "prior-free" \
            else ("#2471a3", "#17a589", "#5dade2", "#1abc9c", "#34495e")[i % 5]
        plots.append(f"'{tsv}' using 1:{i + 2} with lines lw 2 lc rgb '{color}' title '{n}'")
    return gnuplot(stem + ".png", title, "step", "normalised entropy H(α)/ln 3 (training batch)", plots,
                   extra="set yrange [0:1.05]")


def fig_phase1_shares(runs):
    """Mean α per expert, per layer, averaged over seeds: one group of bars per (controller, layer)."""
    if not runs:
        return None
    tsv = os.path.join(FIG, "phase1_shares.tsv")
    with open(tsv, "w") as f:
        f.write("# label full linear local (mean alpha on the validation split, mean over seeds)\n")
        for kind in ("prior-free", "bayesian"):
            rs = [r for r in runs.values() if controller(r) == kind and not r["name"].startswith("free-tuned")]
            if not rs:
                continue
            for li in range(len(rs[0]["eval"]["soft"]["layers"])):
                w = [statistics.mean(r["eval"]["soft"]["layers"][li]["weights"][k] for r in rs) for k in range(3)]
                f.write(f"\"{'free' if kind == 'prior-free' else 'bayes'} L{li}\" {w[0]:.4f} {w[1]:.4f} {w[2]:.4f}\n")
    plots = [f"'{tsv}' using 2:xtic(1) title 'full' lc rgb '#c0392b'",
             f"'' using 3 title 'linear' lc rgb '#27ae60'", f"'' using 4 title 'local' lc rgb '#2471a3'"]
    return gnuplot("phase1_shares.png", "Expert shares per layer (mean α, validation split)", "", "mean α", plots,
                   extra="set style data histograms\nset style histogram rowstacked\nset style fill solid 0.8\n"
                         "set boxwidth 0.7\nset yrange [0:1]\nset xtics rotate by -30")


# ----------------------------------------------------------------------------
# Frontier: loss against measured attention cost


def frontier_points(phase1, frontier):
    pts = []
    for group, runs in (("phase1", phase1), ("frontier", frontier)):
        for name, r in sorted(runs.items()):
            if group == "phase1" and (not name.endswith("-s1") or name.startswith("free-tuned")):
                continue  # the frontier is seed 1, λ alone (the tuned run adds an entropy bonus: section 1)
            ev = r["eval"]
            if "all_full" not in ev:
                print(f"report.py: {group}/{name} has no all_full score: run exp.py {group} to rescore it",
                      file=sys.stderr)
                continue
            a = r["config"]["attn"]
            knob = (f"λ {a['cost_lambda']:g}" if controller(r) == "prior-free"
                    else f"β0 {a['beta_0']:g}, ε {a['epsilon']:g}, elbo {a['elbo_weight']:g}")
            # the all-full reference without the controller (a plain full-attention layer has none);
            # the routed side pays for its controller
            flops = sum(l["flops_total"] for l in ev["hard"]["layers"]) / sum(
                l["flops_total"] - l["flops_controller"] for l in ev["all_full"]["layers"])
            wall = sum(l["seconds"] for l in ev["hard"]["layers"]) / sum(
                l["seconds"] for l in ev["all_full"]["layers"])
            pts.append({"run": f"{group}/{name}", "controller": controller(r), "knob": knob,
                        "soft": ev["soft"]["val_loss"], "hard": ev["hard"]["val_loss"],
                        "full": ev["all_full"]["val_loss"],
                        "cost": 100 * layer_mean(ev["soft"], "projected_cost"),
                        "entropy": 100 * layer_mean(ev["soft"], "norm_entropy"), "flops": flops, "wall": wall})
    return pts


def table_frontier(pts):
    if not pts:
        return "_No scored runs yet: `python3 bench/experiments/exp.py frontier` (and `phase1`)._\n"
    out = ["| run | controller | setting | val soft | val hard | val all-full | projected cost % | norm. entropy % "
           "| attention FLOPs hard / all-full | attention wall-clock hard / all-full |\n"
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"]
    for p in sorted(pts, key=lambda p: (p["controller"], p["flops"])):
        out.append(f"| {p['run']} | {p['controller']} | {p['knob']} | {p['soft']:.3f} | {p['hard']:.3f} | "
                   f"{p['full']:.3f} | {p['cost']:.1f} | {p['entropy']:.1f} | {p['flops']:.3f} | {p['wall']:.3f} |\n")
    return "".join(out)


def fig_frontier(pts, x="flops"):
    """Hard-routed validation loss against the measured FLOP ratio (x = "flops") or the projected cost."""
    if not pts:
        return None
    plots = []
    col = {"flops": 1, "cost": 5}[x]
    for kind, color in (("prior-free", "#c0392b"), ("bayesian", "#2471a3")):
        tsv = os.path.join(FIG, f"frontier_{kind}{'' if x == 'flops' else '_projected'}.tsv")
        with open(tsv, "w") as f:
            f.write("# attention_flop_ratio val_loss_hard wall_ratio run projected_cost_%\n")
            for p in sorted((p for p in pts if p["controller"] == kind), key=lambda p: p[x]):
                f.write(f"{p['flops']:.4f} {p['hard']:.4f} {p['wall']:.4f} \"{p['knob']}\" {p['cost']:.2f}\n")
        style = "linespoints" if kind == "prior-free" else "points"  # one knob (λ) vs several (elbo, ε, β0)
        plots.append(f"'{tsv}' using {col}:2 with {style} pt 7 ps 1.5 lw 2 lc rgb '{color}' title '{kind}'")
        plots.append(f"'{tsv}' using {col}:2:4 with labels offset 0,1 font ',8' notitle")
    if x == "flops":
        return gnuplot("frontier.png", "Validation loss (hard routing) against executed attention FLOPs",
                       "attention sub-layer FLOPs, hard routing / every token on full", "val loss (nats/byte)", plots)
    return gnuplot("frontier_projected.png", "Validation loss (hard routing) against projected cost",
                   "projected hard cost, % of all-full (costs 1, 0.15, 0.30)", "val loss (nats/byte)", plots)


# ----------------------------------------------------------------------------
# Long context: measured cost and loss at T = 4096 and 8192


def table_long(runs):
    if not runs:
        return "_Not run yet: `python3 bench/experiments/exp.py long`._\n"
    ref = next((r for r in runs.values() if len(r["config"]["attn"]["expert_costs"]) == 1), None)
    out = ["| model | T | routing | val loss | Δ loss vs all-full model | attention GFLOP | FLOPs vs all-full model "
           "| attention wall-clock s | wall vs all-full model |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n"]
    verdicts = []
    for T in (4096, 8192):
        base = ref["eval"].get(f"soft@{T}") if ref else None
        bf = sum(l["flops_total"] for l in base["layers"]) if base else None
        bs = sum(l["seconds"] for l in base["layers"]) if base else None
        for name, r in sorted(runs.items()):
            for mode in ("soft", "hard", "top1", "all_full"):
                ev = r["eval"].get(f"{mode}@{T}")
                if not ev or (r is ref and mode != "soft"):
                    continue
                f = sum(l["flops_total"] for l in ev["layers"])
                s = sum(l["seconds"] for l in ev["layers"])
                label = {"soft": "soft", "hard": "hard, uncertainty-gated", "top1": "hard, top-1",
                         "all_full": "every token forced to full"}[mode] if r is not ref else "(all-full model)"
                dl = ev["val_loss"] - base["val_loss"] if base else None
                out.append(f"| {name} | {T} | {label} | {ev['val_loss']:.3f} | "
                           + (f"{dl:+.3f} | " if base else "— | ") + f"{f * 1e-9:.1f} | "
                           + (f"{f / bf:.3f} | " if base else "— | ") + f"{s:.2f} | "
                           + (f"{s / bs:.3f} |" if base else "— |") + "\n")
                if base and r is not ref and mode in ("hard", "top1"):
                    verdicts.append((name, T, mode, 1 - f / bf, 1 - s / bs, dl))
    if verdicts:
        out.append("\n| model | T | routing | FLOP cut | wall-clock cut | Δ loss | paper's criterion (≥ 30 % FLOPs, "
                   "≤ 0.5 nats) | our goal (≥ 50 % wall-clock, ≤ 0.05 nats/byte) |\n"
                   "|---|---:|---|---:|---:|---:|---|---|\n")
        for name, T, mode, fc, wc, dl in verdicts:
            out.append(f"| {name} | {T} | {mode} | {100 * fc:.1f} % | {100 * wc:.1f} % | {dl:+.3f} | "
                       f"{'met' if fc >= 0.30 and dl <= 0.5 else 'not met'} | "
                       f"{'met' if wc >= 0.50 and dl <= 0.05 else 'not met'} |\n")
    return "".join(out)


# ----------------------------------------------------------------------------
# Phase 1 and long context again, with the defaults that route (section 7)


def ev_sum(ev, key):
    return sum(l[key] for l in ev["layers"])


def table_phase1v2(runs, old):
    if not runs:
        return "_Not run yet: `python3 bench/experiments/exp.py phase1v2`._\n"
    head = ("| controller | defaults | runs | val loss soft | hard (as deployed) | hard − soft | forced all-full "
            "| MI(route; byte), mean of layers | layers with MI ≥ 0.1 | `full` share, hard | hard / all-full FLOPs "
            "| hard / all-full time | projected cost %: eval (paper) | norm. entropy %: eval (paper) |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for kind, label in (("prior-free", "prior-free"), ("bayesian", "Bayesian")):
        for tag, group in (("old (§1)", old), ("new (§7)", runs)):
            rs = [r for r in group.values() if controller(r) == kind and not r["name"].startswith("free-tuned")]
            if not rs:
                continue
            soft = [r["eval"]["soft"]["val_loss"] for r in rs]
            hard = [r["eval"]["hard"]["val_loss"] for r in rs]
            gap = [h - s for h, s in zip(hard, soft)]
            full = [r["eval"]["all_full"]["val_loss"] for r in rs if "all_full" in r["eval"]]
            mi = [layer_mean(r["eval"]["hard"], "mi_token") for r in rs if "mi_token" in r["eval"]["hard"]["layers"][0]]
            n_mi = [sum(l["mi_token"] >= 0.1 for l in r["eval"]["hard"]["layers"]) for r in rs
                    if "mi_token" in r["eval"]["hard"]["layers"][0]]
            fsh = \
                  [100 * statistics.mean(l["executed_fraction"][0] for l in r["eval"]["hard"]["layers"]) for r in rs]
            fr = [ev_sum(r["eval"]["hard"], "flops_total") / ev_sum(r["eval"]["all_full"], "flops_total")
                  for r in rs if "all_full" in r["eval"]]
            tr = [ev_sum(r["eval"]["hard"], "seconds") / ev_sum(r["eval"]["all_full"], "seconds")
                  for r in rs if "all_full" in r["eval"]]
            cost = [100 * layer_mean(r["eval"]["soft"], "projected_cost") for r in rs]
            ent = [100 * layer_mean(r["eval"]["soft"], "norm_entropy") for r in rs]
            rows.append(f"| {label} | {tag} | {len(rs)} | {mean_sd(soft)} | {mean_sd(hard)} | {mean_sd(gap, '{:+.3f}')} "
                        f"| {mean_sd(full)} | {mean_sd(mi) if mi else '—'} | "
                        f"{' / '.join(str(n) for n in n_mi) + ' of 4' if n_mi else '—'} | {mean_sd(fsh, '{:.1f}')} % "
                        f"| {mean_sd(fr, '{:.2f}')} | {mean_sd(tr, '{:.2f}')} | {mean_sd(cost, '{:.1f}')} "
                        f"({PAPER[kind]['cost']}) | {mean_sd(ent, '{:.1f}')} ({PAPER[kind]['entropy']}) |\n")
    return head + "".join(rows)


def table_phase1v2_runs(runs):
    if not runs:
        return "_Not run yet._\n"
    out = ["| run | soft | hard | top-1 | MI(route; byte) per layer | hard routes full / linear / local % per layer |\n"
           "|---|---:|---:|---:|---|---|\n"]
    for name, r in sorted(runs.items()):
        ev = r["eval"]
        hard = ev["hard"]["layers"]
        out.append(f"| {name} | {ev['soft']['val_loss']:.4f} | {ev['hard']['val_loss']:.4f} | "
                   + (f"{ev['top1']['val_loss']:.4f}" if "top1" in ev else "—") + " | "
                   + ", ".join(f"{l['mi_token']:.3f}" for l in hard) + " | "
                   + "; ".join("/".join(f"{100 * x:.1f}" for x in l["executed_fraction"]) for l in hard) + " |\n")
    return "".join(out)


def table_long2(runs):
    if not runs:
        return "_Not run yet: `python3 bench/experiments/exp.py long2`._\n"
    out = ["| model | T | routing | val loss | Δ loss vs all-full model | FLOPs vs all-full model "
           "| attention time vs all-full model | `full` share per layer |\n"
           "|---|---:|---|---:|---:|---:|---:|---|\n"]
    ref = runs.get("all-full")
    picks = (("all-full", "soft", "all-full model"), ("local", "soft", "sliding window (every token local)"),
             ("hybrid", "hybrid", "fixed hybrid: layer 0 full, layer 1 local"), ("routed", "soft", "routed, soft"),
             ("routed", "hard", "routed, hard (as deployed)"), ("routed", "all_full", "routed, forced all-full"))
    for T in (4096, 8192):
        base = ref["eval"].get(f"soft@{T}") if ref else None
        for name, mode, label in picks:
            r = runs.get(name)
            ev = r["eval"].get(f"{mode}@{T}") if r else None
            if not ev:
                continue
            dl = f"{ev['val_loss'] - base['val_loss']:+.3f}" if base else "—"
            fr = f"{ev_sum(ev, 'flops_total') / ev_sum(base, 'flops_total'):.3f}" if base else "—"
            tr = f"{ev_sum(ev, 'seconds') / ev_sum(base, 'seconds'):.3f}" if base else "—"
            fk = 0 if r["config"]["attn"].get("experts", ["full"])[0] == "full" else None
            fs = ", ".join(f"{100 * l['executed_fraction'][0]:.1f} %" for l in ev["layers"]) if fk == 0 else "0"
            out.append(f"| {label} | {T} | {mode} | {ev['val_loss']:.3f} | {dl} | {fr} | {tr} | {fs} |\n")
    return "".join(out)


def table_recall_routes(rr):
    """recall_routes.py's shares: per model, layer and kind of position, the executed experts."""
    if not rr:
        return "_Not run yet: `python3 bench/experiments/recall_routes.py --model M`._\n"
    kinds = ("fact", "query key", "value", "filler")
    out = ["| model | layer | " + " | ".join(f"{k}: full / linear / local %" for k in kinds) + " |\n"
           "|---|---:|" + "---|" * len(kinds) + "\n"]
    for name, r in sorted(rr.items()):
        for li, layer in enumerate(r["shares"]):
            cells = [" / ".join(f"{100 * layer[k].get(e, 0.0):.0f}" for e in ("E1", "E2", "E3")) for k in kinds]
            out.append(f"| {name if li == 0 else ''} | {li} | " + " | ".join(cells) + " |\n")
    return "".join(out)


# ----------------------------------------------------------------------------
# Routing analysis and the second corpus


def load_dir(sub):
    d = os.path.join(RES, sub)
    out = {}
    if os.path.isdir(d):
        for f in sorted(os.listdir(d)):
            if f.endswith(".json"):
                with open(os.path.join(d, f)) as g:
                    out[f[:-5]] = json.load(g)
    return out


def shares(counts):
    n = sum(counts)
    return [100.0 * c / n for c in counts] if n else None


def table_by(analysis, key):
    if not analysis:
        return "_Not run yet: `python3 bench/experiments/analyze.py`._\n"
    cats = list(next(iter(analysis.values()))["layers"][0][key])
    out = ["| model | layer | " + " | ".join(cats) + " |\n|---|---:|" + "---|" * len(cats) + "\n"]
    for tag, r in sorted(analysis.items()):
        for i, l in enumerate(r["layers"]):
            cells = []
            for c in cats:
                s = shares(l[key][c])
                cells.append("—" if s is None else " / ".join(f"{x:.0f}" for x in s))
            out.append(f"| {r['model'] if i == 0 else ''} | {i} | " + " | ".join(cells) + " |\n")
    return "".join(out)


def fig_heatmap(tag, r):
    """alpha of each byte of a 64-byte passage, per layer, as an RGB strip (red full, green linear, blue local)."""
    h = r["heatmap"]
    tsv = os.path.join(FIG, f"heatmap-{tag}.tsv")
    with open(tsv, "w") as f:
        f.write("# byte layer r g b (alpha full, linear, local scaled to 0..255)\n")
        for li, layer in enumerate(h["alpha"]):
            for i, a in enumerate(layer):
                f.write(f"{i} {li} " + " ".join(str(int(round(255 * x))) for x in (a + [0, 0])[:3]) + "\n")
            f.write("\n")
    text = h["text"]
    # single-quoted gnuplot strings take everything literally but '' for a quote; unprintable bytes as ·
    # (and '%' is a format character in tic labels)
    label = lambda c: "''" if c == "'" else "%%" if c == "%" else c if " " <= c <= "~" else "·"
    tics = ", ".join("'%s' %d" % (label(c), i) for i, c in enumerate(text))
    n_layers = len(h["alpha"])
    return gnuplot(f"heatmap-{tag}.png", f"{r['model']}: alpha per byte and layer (red full, green linear, blue local)",
                   "", "layer", [f"'{tsv}' using 1:2:3:4:5 with rgbimage notitle"],
                   extra=f"set xtics ({tics}) font ',9' scale 0\nset ytics 1\nset yrange [-0.5:{n_layers - 0.5}]\n"
                         f"set xrange [-0.5:{len(text) - 0.5}]\nunset grid", size="1100,260")


def table_uncertainty(analysis):
    rows = []
    for tag, r in sorted(analysis.items()):
        for i, l in enumerate(r["layers"]):
            if not l["uncertainty_by_chosen"]:
                continue
            cells = []
            for u in l["uncertainty_by_chosen"]:
                cells.append("—" if not u["n"] else f"{u['mean']:.2f} ({u['n']})")
            rows.append(f"| {r['model'] if i == 0 else ''} | {i} | " + " | ".join(cells) + " |\n")
    if not rows:
        return "_No Bayesian model analysed yet._\n"
    return "| model | layer | U_t when full chosen (tokens) | linear | local |\n|---|---:|---:|---:|---:|\n" + "".join(rows)


def table_corpus2(corpus2, phase1, frontier):
    if not corpus2:
        return "_Not run yet: `python3 bench/experiments/analyze.py`._\n"
    out = ["| model | KJV val soft / hard | fortunes soft / hard | projected cost % KJV / fortunes "
           "| norm. entropy % KJV / fortunes | mean α full/linear/local, fortunes |\n"
           "|---|---:|---:|---:|---:|---|\n"]
    for tag, c in sorted(corpus2.items()):
        group, name = c["model"].split("/")
        r = (phase1 if group == "phase1" else frontier).get(name)
        if not r:
            continue
        k, f = r["eval"], c["eval"]
        w = [statistics.mean(l["weights"][i] for l in f["soft"]["layers"]) for i in range(3)]
        out.append(f"| {c['model']} | {k['soft']['val_loss']:.3f} / {k['hard']['val_loss']:.3f} | "
                   f"{f['soft']['val_loss']:.3f} / {f['hard']['val_loss']:.3f} | "
                   f"{100 * layer_mean(k['soft'], 'projected_cost'):.1f} / {100 * layer_mean(f['soft'], 'projected_cost'):.1f} | "
                   f"{100 * layer_mean(k['soft'], 'norm_entropy'):.1f} / {100 * layer_mean(f['soft'], 'norm_entropy'):.1f} | "
                   + " / ".join(f"{x:.3f}" for x in w) + " |\n")
    return "".join(out)


# ----------------------------------------------------------------------------


def gnuplot(png, title, xl, yl, plots, extra="", size="900,500"):
    """Draw docs/figures/png; the script is left next to it (run from docs/figures, relative paths)."""
    path = os.path.join(FIG, png)
    script = (f"set terminal pngcairo size {size} noenhanced\nset output '{png}.tmp'\n"
              f"set title '{title}'\nset xlabel '{xl}'\nset ylabel '{yl}'\nset key outside right\nset grid\n"
              f"{extra}\nplot " + ", \\\n     ".join(plots).replace(FIG + os.sep, "") + "\n")
    with open(os.path.join(FIG, png[:-4] + ".gp"), "w") as f:
        f.write(script.replace(f"'{png}.tmp'", f"'{png}'"))
    for attempt in (script, script.replace("pngcairo", "png")):  # gd png if this gnuplot lacks cairo
        try:
            p = subprocess.run(["gnuplot"], input=attempt, text=True, capture_output=True, cwd=FIG)
        except FileNotFoundError:
            sys.exit("report.py: gnuplot not found (scripts/install-deps.sh installs gnuplot-nox)")
        if p.returncode == 0 and os.path.exists(path + ".tmp"):
            os.replace(path + ".tmp", path)
            return png
    sys.exit(f"report.py: gnuplot failed on {png}: {p.stderr.strip()}")


def replace_block(doc, name, body):
    pat = re.compile(r"(<!-- begin %s -->\n)(.*?)(<!-- end %s -->)" % (re.escape(name), re.escape(name)), re.S)
    if not pat.search(doc):
        sys.exit(f"report.py: docs/results.md has no block '{name}' (<!-- begin {name} --> ... <!-- end {name} -->)")
    return pat.sub(lambda m: m.group(1) + body + m.group(3), doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/results.md is out of date; write nothing")
    a = ap.parse_args()
    os.makedirs(FIG, exist_ok=True)
    phase1, frontier, long = load_group("phase1"), load_group("frontier"), load_group("long")
    phase1v2, long2 = load_group("phase1v2"), load_group("long2")
    pts = frontier_points(phase1, frontier)
    analysis, corpus2 = load_dir("analysis"), load_dir("corpus2")
    blocks = {"phase1": table_phase1(phase1), "phase1-runs": table_phase1_runs(phase1),
              "frontier": table_frontier(pts), "long": table_long(long),
              "transition": table_transition((("phase1", phase1), ("frontier", frontier))), "by-class": table_by(analysis, "chosen_by_class"),
              "by-position": table_by(analysis, "chosen_by_position"), "uncertainty": table_uncertainty(analysis),
              "corpus2": table_corpus2(corpus2, phase1, frontier),
              "phase1v2": table_phase1v2(phase1v2, phase1), "phase1v2-runs": table_phase1v2_runs(phase1v2),
              "long2": table_long2(long2), "recall-routes": table_recall_routes(load_dir("recall-routes")),
              "heatmaps": "".join(f"![{r['model']}](figures/heatmap-{tag}.png)\n\n" for tag, r in sorted(analysis.items())
                                  if "heatmap" in r) or "_Not run yet._\n"}
    with open(DOC) as f:
        doc = f.read()
    new = doc
    for name, body in blocks.items():
        new = replace_block(new, name, body)
    if a.check:
        sys.exit(0 if new == doc else "report.py: docs/results.md is out of date: run bench/experiments/report.py")
    figs = [fig_entropy(phase1, "phase1_entropy", "Routing entropy during training (KJV, tiny LM, phase 1)"),
            fig_phase1_shares(phase1), fig_frontier(pts), fig_frontier(pts, "cost"),
            fig_entropy(frontier, "frontier_entropy", "Routing entropy during training (frontier runs)")]
    figs += [fig_heatmap(tag, r) for tag, r in sorted(analysis.items()) if "heatmap" in r]
    for png in figs:
        if png:
            print(f"wrote docs/figures/{png}")
    if new != doc:
        with open(DOC + ".tmp", "w") as f:
            f.write(new)
        os.replace(DOC + ".tmp", DOC)
        print("updated docs/results.md")


if __name__ == "__main__":
    main()
