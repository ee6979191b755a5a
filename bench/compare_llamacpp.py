#!/usr/bin/env python3
"""metaattn against llama.cpp (llama-cpp-python) on the same GGUF model and prompt.

Each measurement is a fresh process, so that peak RSS is per engine (the
parent reads each child's ru_maxrss with os.wait4): `metaattn bench --model
F --context N --decode D --threads T --json -`, and this script's own child
(--child) running llama-cpp-python the same way — Llama(n_ctx=N+D,
n_threads=n_threads_batch=T, n_batch=n_ubatch=512, logits_all=False); an
untimed warm-up eval of min(N, 64) tokens and reset(); the prefill = one
eval() of the N prompt tokens, timed; then D single-token eval() calls, each
fed the argmax of the last logits, timed.  The engines alternate (metaattn,
llama.cpp, metaattn, ...) for --repeats rounds over every context, so that a
slow spell of a shared machine hits both; best and median per engine.

Identical ids: both sides make the prompt themselves — N SplitMix64 ids in
[0, vocab) seeded 1 (tools/bench_harness.c bench_rand, reimplemented below)
— and the script checks the first ids metaattn prints against its own.
With --prompt-file F the prompt is the first N tokens of a text instead:
metaattn tokenizes it (`metaattn bench --prompt-file`, and `metaattn
tokenize --ids` for the llama.cpp child, which is handed the ids), so that
a routed model routes text, not noise; the first ids are checked the same.

The machine's memory bandwidth is measured once (numpy sums of a 1 GiB
float32 array, 1 and T threads, best of 5), to read decode GB/s of weights
(weight_bytes of every matrix a token reads, times tokens/s) against, and
GB/s with the cache (plus the keys and values a decode step reads: f16 in
llama.cpp; metaattn's --kv, f16 by default).

    .venv-bench/bin/python bench/compare_llamacpp.py [--model F] [--metaattn build/metaattn]
        [--threads 2] [--decode 32] [--prefill-contexts 512,2048] [--decode-contexts 128,4096]
        [--repeats 3] [--activations q8|f32] [--kv f16|f32] [--routing F] [--prompt-file F]
        [--llama-flash-attn] [--llama-extra-bufts] [--json FILE]

Needs llama-cpp-python 0.3.36 and numpy: scripts/install-deps.sh --bench.
Prints a markdown table on stdout (progress on stderr).
"""
import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

M64 = (1 << 64) - 1
TIME = "/usr/bin/time"  # GNU time: peak RSS per process
ENGINES = ("metaattn", "llama.cpp")


def prompt_ids(n, vocab, seed=1):
    """tools/bench_harness.c bench_rand (SplitMix64), each draw mod vocab."""
    s, out = seed, []
    for _ in range(n):
        s = (s + 0x9E3779B97F4A7C15) & M64
        z = ((s ^ (s >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out.append((z ^ (z >> 31)) % vocab)
    return out


def llama_child(path, N, D, T, flash, ids_file=None, extra_bufts=False):
    """One llama.cpp measurement; prints metaattn bench's JSON keys.  Without
    extra_bufts the model loads without llama.cpp's extra buffer types (the
    weight repacking: AMX, CPU_REPACK): on a CPU with AMX its AMX matmul
    crashes on this model (a segfault in ggml_backend_amx_mul_mat, llama.cpp
    issue 20824), so the child runs the CPU kernels a machine without AMX
    runs.  Llama() has no argument for it: its default params are patched."""
    import llama_cpp
    import llama_cpp.llama_cpp as lc
    import numpy as np
    if not extra_bufts:
        default = lc.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p
        lc.llama_model_default_params = params
    llm = llama_cpp.Llama(model_path=path, n_ctx=N + D, n_threads=T, n_threads_batch=T, n_batch=512,
                          n_ubatch=512, logits_all=False, flash_attn=flash, verbose=False)
    V = llm.n_vocab()
    ids = json.load(open(ids_file))[:N] if ids_file else prompt_ids(N, V)

    def argmax():
        return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(V,)).argmax())

    llm.eval(ids[:min(N, 64)])  # warm-up, as metaattn's
    llm.reset()  # n_tokens = 0: the next eval clears the KV cache
    sync = lambda: llama_cpp.llama_synchronize(llm._ctx.ctx)  # noqa: E731 (CPU: a no-op, to be sure)
    t0 = time.perf_counter()
    llm.eval(ids)
    sync()
    t1 = time.perf_counter()
    for _ in range(D):
        llm.eval([argmax()])
    sync()
    t2 = time.perf_counter()
    print(json.dumps(dict(model=path, threads=T, context=N, prefill_tokens=N, prefill_s=t1 - t0,
                          prefill_tok_s=N / (t1 - t0), decode_tokens=D, decode_s=t2 - t1, decode_tok_s=D / (t2 - t1),
                          first_ids=ids[:8], version=llama_cpp.__version__)))


def run_child(cmd):
    """cmd's stdout as JSON, its stderr, and its own peak RSS in MB, from
    GNU time (a child's ru_maxrss counts what its parent had mapped when it
    forked; time is small) or, without it, from wait4."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as tf:
        timed = os.access(TIME, os.X_OK)
        p = subprocess.Popen(([TIME, "-f", "%M", "-o", tf.name] if timed else []) + cmd, stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        o, e = out.read().decode(), err.read().decode()
        kib = int(open(tf.name).read().split()[-1]) if timed and not p.returncode else ru.ru_maxrss
    if p.returncode:
        sys.exit("compare_llamacpp: %s failed (exit %d):\n%s" % (shlex.join(cmd), p.returncode, e))
    return (json.loads(o) if o.strip() else None), e, kib * 1024 / 1e6


def bandwidth(threads):
    """GB/s of numpy sums over 1 GiB of float32 with 1 and `threads` threads
    (numpy drops the GIL in the reduction), best of 5 each."""
    import numpy as np
    a = np.ones(1 << 28, dtype=np.float32)
    res = {}
    for t in sorted({1, threads}):
        parts = np.array_split(a, t)
        best = float("inf")
        for _ in range(5):
            th = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
            t0 = time.perf_counter()
            for x in th:
                x.start()
            for x in th:
                x.join()
            best = min(best, time.perf_counter() - t0)
        res[t] = a.nbytes / best * 1e-9
    return res


def ints(s):
    return [int(x) for x in s.replace(" ", ",").split(",") if x]


def text_ids(args, n):
    """The first n tokens of --prompt-file by metaattn's tokenizer."""
    with open(args.prompt_file, "rb") as f:
        p = subprocess.run([args.metaattn, "tokenize", "--model", args.model, "--ids"], stdin=f,
                           capture_output=True, text=True)
    if p.returncode:
        sys.exit("compare_llamacpp: metaattn tokenize failed:\n" + p.stderr)
    ids = ints(p.stdout)
    if len(ids) < n:
        sys.exit("compare_llamacpp: --prompt-file %s has %d tokens, fewer than %d" % (args.prompt_file, len(ids), n))
    return ids[:n]


def measure(args, contexts, ids_file):
    """Every (engine, context) measured --repeats times, the engines
    alternated; the weight bytes per token (from metaattn's JSON)."""
    runs = {(e, n): [] for e in ENGINES for n in contexts}
    want = json.load(open(ids_file))[:8] if ids_file else None
    wbytes = kvbytes = None
    for rep in range(args.repeats):
        for n in contexts:
            cmds = {"metaattn": [args.metaattn, "bench", "--model", args.model, "--context", str(n), "--decode",
                                 str(args.decode), "--threads", str(args.threads), "--activations",
                                 args.activations, "--kv", args.kv, "--json", "-"]
                                + (["--routing", args.routing] if args.routing else [])
                                + (["--prompt-file", args.prompt_file] if args.prompt_file else []),
                    "llama.cpp": [sys.executable, os.path.abspath(__file__), "--child", args.model, str(n),
                                  str(args.decode), str(args.threads)]
                    + (["--llama-flash-attn"] if args.llama_flash_attn else [])
                    + (["--llama-extra-bufts"] if args.llama_extra_bufts else [])
                    + (["--child-ids", ids_file] if ids_file else [])}
            for eng, cmd in cmds.items():
                j, err, rss = run_child(cmd)
                if eng == "metaattn":  # its table prints the vocabulary and the prompt's first ids
                    m = re.search(r"(?:ids in \[0, (\d+)\), seed 1|tokens of .*?):((?: \d+)+)", err)
                    vocab, first = (int(m.group(1) or 1), ints(m.group(2))) if m else (1, None)
                    wbytes = j["decode_weight_gb_s"] / j["decode_tok_s"] * 1e9
                    kvbytes = (j["decode_total_gb_s"] - j["decode_weight_gb_s"]) / j["decode_tok_s"] * 1e9
                    kvbytes_eng = kvbytes
                    kvfull = j.get("decode_cache_full_gb", kvbytes * 1e-9) * 1e9
                else:
                    # llama.cpp reads its whole f16 cache (metaattn routed reads only its experts' keys)
                    kvbytes_eng = kvfull if args.kv == "f16" else kvfull / 2
                    first = j["first_ids"]
                expect = want[:min(n, 8)] if want else prompt_ids(min(n, 8), vocab)
                if first != expect:
                    sys.exit("compare_llamacpp: %s's prompt does not start %s:\n%s" % (eng, expect, err))
                j["child_peak_rss_mb"] = rss
                j["decode_weight_gb_s"] = wbytes * j["decode_tok_s"] * 1e-9  # the same matrices for both
                j["decode_total_gb_s"] = (wbytes + kvbytes_eng) * j["decode_tok_s"] * 1e-9
                runs[(eng, n)].append(j)
                print("round %d/%d, context %5d, %-9s prefill %8.1f tok/s, decode %6.1f tok/s, peak RSS %6.1f MB"
                      % (rep + 1, args.repeats, n, eng, j["prefill_tok_s"], j["decode_tok_s"], rss), file=sys.stderr)
    return runs, wbytes


def table(args, runs, contexts, rows):
    """The table's lines; a dict per line appended to rows."""
    def row(what, key, n, best=max, fmt="%.1f"):
        m, l = ([r[key] for r in runs[(e, n)]] for e in ENGINES)
        bm, bl, mm, ml = best(m), best(l), statistics.median(m), statistics.median(l)
        rows.append(dict(what=what, context=n, metaattn_best=bm, metaattn_median=mm, llamacpp_best=bl,
                         llamacpp_median=ml, ratio_best=bm / bl, ratio_median=mm / ml))
        return "| %s | %s | %s | %s | %s | %.2f | %.2f |" % (what, fmt % bm, fmt % mm, fmt % bl, fmt % ml,
                                                            bm / bl, mm / ml)

    lines = ["| | metaattn best | median | llama.cpp best | median | ratio best | ratio median |",
             "|---|---|---|---|---|---|---|"]
    lines += [row("prefill tok/s, context %d" % n, "prefill_tok_s", n) for n in args.prefill_contexts]
    lines += [row("decode tok/s, context %d" % n, "decode_tok_s", n) for n in args.decode_contexts]
    lines += [row("decode weight GB/s, context %d" % n, "decode_weight_gb_s", n, fmt="%.2f")
              for n in args.decode_contexts]
    lines += [row("decode GB/s with the cache, context %d" % n, "decode_total_gb_s", n, fmt="%.2f")
              for n in args.decode_contexts]
    lines += [row("peak RSS MB, context %d" % n, "child_peak_rss_mb", n, best=min) for n in contexts]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--metaattn", default="build/metaattn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=32, help="decode steps after each prompt")
    ap.add_argument("--prefill-contexts", type=ints, default=[512, 2048])
    ap.add_argument("--decode-contexts", type=ints, default=[128, 4096])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--activations", choices=("q8", "f32"), default="q8",
                    help="metaattn's activations with quantised weights (q8: 8-bit, as llama.cpp)")
    ap.add_argument("--kv", choices=("f16", "f32"), default="f16", help="metaattn's KV cache (llama.cpp's: f16)")
    ap.add_argument("--routing", default=None, help="metaattn with this routing file (metaattn surgery)")
    ap.add_argument("--prompt-file", default=None, help="the prompt: the first N tokens of this text (default: "
                    "SplitMix64 ids)")
    ap.add_argument("--llama-flash-attn", action="store_true", help="llama.cpp with flash attention (default off)")
    ap.add_argument("--llama-extra-bufts", action="store_true", help="llama.cpp with its extra buffer types "
                    "(weight repacking, AMX; default off: its AMX matmul crashes on CPUs with AMX)")
    ap.add_argument("--child-ids", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="also write the runs and the table here")
    ap.add_argument("--child", nargs=4, metavar=("MODEL", "N", "D", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return llama_child(args.child[0], *map(int, args.child[1:]), args.llama_flash_attn, args.child_ids,
                           args.llama_extra_bufts)
    command = shlex.join([sys.executable] + sys.argv)
    print("$ " + command, file=sys.stderr)
    load = [os.getloadavg()[0]]
    bw = bandwidth(args.threads)
    bws = ", ".join("%.1f GB/s with %d thread%s" % (v, t, "s" * (t > 1)) for t, v in bw.items())
    print("memory bandwidth (numpy sum, 1 GiB): " + bws, file=sys.stderr)
    _, _, base_rss = run_child([sys.executable, "-c", "import llama_cpp, numpy"])
    contexts = sorted(set(args.prefill_contexts) | set(args.decode_contexts))
    ids_file = None
    if args.prompt_file:
        ids_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(text_ids(args, max(contexts)), ids_file)
        ids_file.close()
        ids_file = ids_file.name
    try:
        runs, wbytes = measure(args, contexts, ids_file)
    finally:
        if ids_file:
            os.unlink(ids_file)
    load.append(os.getloadavg()[0])
    version = runs[("llama.cpp", contexts[0])][0]["version"]

    rows = []
    lines = ["# metaattn vs llama.cpp: %s" % os.path.basename(args.model), "", "`%s`" % command, "",
             "metaattn with %s activations and an %s KV cache%s; %d thread%s; llama-cpp-python %s (mmap, f16 KV cache, flash attention %s, extra buffer types %s, n_batch = n_ubatch = 512); "
             "%d decode steps after each prompt; %d round(s), engines alternated, one process per measurement; "
             "prompt: %s (identical, checked)."
             % (args.activations, args.kv, ", routed by %s" % args.routing if args.routing else "", args.threads,
                "s" * (args.threads > 1), version, "on" if args.llama_flash_attn else "off",
                "on" if args.llama_extra_bufts else "off",
                args.decode, args.repeats,
                "the first N tokens of " + args.prompt_file if args.prompt_file else "SplitMix64 ids seeded 1"),
             "Memory bandwidth (numpy sum of 1 GiB, best of 5): %s; weights read per token %.1f MB; load average "
             "%.2f at the start, %.2f at the end (%d cores)." % (bws, wbytes * 1e-6, load[0], load[1], os.cpu_count()),
             ""]
    lines += table(args, runs, contexts, rows)
    bwt = bw[args.threads]
    lines += ["", "Ratios are metaattn / llama.cpp: above 1 metaattn is faster; for peak RSS below 1 it is "
              "smaller.  Peak RSS is each process's own (GNU time's %%M), mapped model pages included; the "
              "llama.cpp process holds Python, numpy and llama_cpp too (%.1f MB importing them alone)." % base_rss,
              "Decode weight GB/s against the %d-thread bandwidth %.1f GB/s: " % (args.threads, bwt)
              + "; ".join("context %d metaattn %.2f, llama.cpp %.2f" % (
                  r["context"], r["metaattn_best"] / bwt, r["llamacpp_best"] / bwt)
                  for r in rows if r["what"].startswith("decode weight")),
              "Decode GB/s with the cache against it: "
              + "; ".join("context %d metaattn %.2f, llama.cpp %.2f" % (
                  r["context"], r["metaattn_best"] / bwt, r["llamacpp_best"] / bwt)
                  for r in rows if r["what"].startswith("decode GB/s with"))]
    print("\n".join(lines))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(command=command, threads=args.threads, decode=args.decode, repeats=args.repeats, kv=args.kv,
                           llama_cpp_python=version, llama_flash_attn=args.llama_flash_attn,
                           bandwidth_gb_s={str(t): v for t, v in bw.items()}, weight_bytes=wbytes,
                           python_llama_cpp_import_rss_mb=base_rss, load_average=load, table=lines, rows=rows,
                           runs=[dict(engine=e, context=n, results=r) for (e, n), r in runs.items()]), f, indent=1)
        print("wrote " + args.json, file=sys.stderr)


if __name__ == "__main__":
    main()
