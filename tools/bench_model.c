/*
 * bench_model.c — `metaattn bench --model FILE.gguf`: a pretrained model's
 * prefill and decoding speed through the public API (mattn_llama_*), the
 * figures bench/compare_llamacpp.py sets against llama.cpp's.
 *
 * One repetition: a fresh cache of exactly context + decode positions, the
 * prefill of `context` tokens (the first context - 1 without logits, the
 * last through the decode step with its logits, as llama.cpp's prefill
 * ends with the last token's logits), timed; then `decode` greedy steps,
 * each feeding the argmax of the previous logits, timed.  Repetitions
 * follow one untimed warm-up (a prefill of at most 64 tokens, which also
 * pages in every matrix of the mapping) while the total time is under
 * --min-time; the best prefill and the best decode are reported.
 *
 * The prompt is the same every run: pseudo-random ids in [0, vocab) from
 * SplitMix64 seeded 1 (bench_rand), a generator bench/compare_llamacpp.py
 * reimplements in five lines, so that both engines see identical ids
 * without a tokenizer or a file between them; or, with --prompt-file, the
 * first --context tokens of a text (a routed model routes text as it was
 * trained to, random ids otherwise).  The table prints the first ids so
 * that the script can check them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "bench_harness.h"
#include "cli.h"

#define PROMPT_SEED 1
#define WARMUP_TOKENS 64

typedef struct {
    mattn_llama *m;
    mattn_llama_cache *c;
    mattn_llama_info info;
    int32_t *tokens; /* (context) the prompt */
    float *logits;   /* (vocab) */
    int N, D;
    const char *act; /* "q8" or "f32" */
    const char *kv;  /* "f16" or "f32" */
    const char *routing; /* --routing FILE or NULL */
    const char *prompt_file; /* --prompt-file FILE or NULL: the prompt's text */
    double attn_p, attn_d;  /* seconds in attention of the best prefill, of the best decode */
    double flops_p, flops_d; /* their attention FLOPs */
    double share[MATTN_ROUTE_EXPERTS]; /* the last repetition's experts, over every block */
    double tp, td;           /* the best prefill and decode seconds */
} model_run;

static int32_t argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return best;
}

/* The first n prompt tokens into the (reset) cache, the logits of the last. */
static int prefill(model_run *r, int n) {
    mattn_llama_cache_reset(r->c);
    if (n > 1 && mattn_llama_forward(r->m, r->c, r->tokens, n - 1, NULL) != MATTN_OK)
        return cli_fail(1, "bench: prefill of %d tokens: %s", n, mattn_llama_errmsg(r->m));
    if (mattn_llama_decode(r->m, r->c, r->tokens[n - 1], r->logits) != MATTN_OK)
        return cli_fail(1, "bench: prefill, last token: %s", mattn_llama_errmsg(r->m));
    return 0;
}

/* D greedy steps after the prefill. */
static int decode(model_run *r) {
    for (int i = 0; i < r->D; i++)
        if (mattn_llama_decode(r->m, r->c, argmax(r->logits, r->info.vocab_size), r->logits) != MATTN_OK)
            return cli_fail(1, "bench: decode step %d at position %d: %s", i, mattn_llama_cache_length(r->c),
                            mattn_llama_errmsg(r->m));
    return 0;
}

/* One repetition (prefill, then decode): the best times kept with their
 * attention seconds and FLOPs. */
static int repetition(model_run *r) {
    double a1, a2, f1, f2;
    const double t0 = cli_now();
    if (prefill(r, r->N)) return 1;
    const double t1 = cli_now();
    mattn_llama_cache_routing(r->c, NULL, &f1, &a1, NULL);
    if (decode(r)) return 1;
    const double t2 = cli_now();
    mattn_llama_cache_routing(r->c, NULL, &f2, &a2, NULL);
    if (t1 - t0 < r->tp) r->tp = t1 - t0, r->attn_p = a1, r->flops_p = f1;
    if (t2 - t1 < r->td) r->td = t2 - t1, r->attn_d = a2 - a1, r->flops_d = f2 - f1;
    return 0;
}

/* The warm-up, then repetitions while the total time is under min_time
 * (at least one), alternating with the original model's when o is given
 * (--paired: both see the same drift of the machine). */
static int measure(model_run *r, model_run *o, double min_time) {
    if (prefill(r, r->N < WARMUP_TOKENS ? r->N : WARMUP_TOKENS)) return 1;
    if (o && prefill(o, o->N < WARMUP_TOKENS ? o->N : WARMUP_TOKENS)) return 1;
    r->tp = r->td = INFINITY;
    if (o) o->tp = o->td = INFINITY;
    const double start = cli_now();
    do {
        if (repetition(r) || (o && repetition(o))) return 1;
    } while (cli_now() - start < min_time);
    int64_t *counts = calloc((size_t)r->info.n_layers * MATTN_ROUTE_EXPERTS, sizeof *counts);
    if (!counts) return cli_fail(1, "bench: out of memory");
    mattn_llama_cache_routing(r->c, counts, NULL, NULL, NULL);
    cli_llama_shares(r->m, counts, r->share);
    free(counts);
    return 0;
}

/* s as the contents of a JSON string. */
static void json_str(FILE *f, const char *s) {
    for (; *s; s++) {
        const unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
}

/* The paired original's line and the ratios routed / original. */
static void report_paired(const model_run *r, const model_run *o, FILE *tab, FILE *js) {
    const double tp = r->attn_p / o->attn_p, fp = r->flops_p / o->flops_p;
    const double td = r->attn_d / o->attn_d, fd = r->flops_d / o->flops_d;
    if (tab) {
        fprintf(tab, "  %-36s prefill %.3f ms, decode %.1f tokens/s; attention %.3f ms in prefill, %.3f ms per "
                     "decode step\n", "original (paired)", o->tp * 1e3, o->D / o->td, o->attn_p * 1e3,
                o->attn_d / o->D * 1e3);
        fprintf(tab, "  %-36s decode tokens/s x%.2f; attention: prefill time x%.3f for FLOPs x%.3f (wall/FLOP %.2f), "
                     "decode x%.3f for x%.3f (%.2f)\n", "routed / original", o->td / r->td, tp, fp, tp / fp, td, fd,
                td / fd);
    }
    if (js)
        fprintf(js, ", \"original\": {\"prefill_s\": %.6g, \"decode_tok_s\": %.6g, \"prefill_attention_s\": %.6g, "
                    "\"decode_attention_s\": %.6g, \"prefill_attention_flops\": %.6g, \"decode_attention_flops\": "
                    "%.6g}", o->tp, o->D / o->td, o->attn_p, o->attn_d, o->flops_p, o->flops_d);
}

static void report(const model_run *r, const model_run *o, const char *path, FILE *tab, FILE *js, int threads,
                   double file_mb) {
    const double tp = r->tp, td = r->td;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double rss_mb = ru.ru_maxrss * 1024.0 * 1e-6; /* Linux: KiB */
    const double wgb = (double)r->info.weight_bytes * 1e-9;
    char name[64];
    snprintf(name, sizeof name, "prefill %d tokens", r->N);
    fprintf(tab, "  %-36s %10.3f ms %10.1f tokens/s\n", name, tp * 1e3, r->N / tp);
    snprintf(name, sizeof name, "decode %d tokens at context %d", r->D, r->N);
    /* the cache a step reads: K and V of every layer over the positions so far (N + D/2 on average); routed,
     * that times its decode attention FLOPs over the original's (the keys its steps read: the controllers'
     * products, a few %, count as reads) */
    const mattn_llama_info *h = &r->info;
    const double kv_full = 2.0 * h->n_layers * h->n_kv_heads * h->head_dim * (r->N + r->D / 2.0) *
                           (strcmp(r->kv, "f32") ? 2 : 4) * 1e-9;
    const double fl_full = 4.0 * h->n_heads * h->head_dim * h->n_layers *
                           (r->D * (r->N + 1.0) + r->D * (r->D - 1) / 2.0);
    const double kvgb = r->routing && r->flops_d < fl_full ? kv_full * r->flops_d / fl_full : kv_full;
    fprintf(tab, "  %-36s %10.3f ms %10.1f tokens/s %8.2f GB/s of weights, %.2f GB/s with the cache\n", name,
            td * 1e3, r->D / td, wgb * r->D / td, (wgb + kvgb) * r->D / td);
    fprintf(tab, "  %-36s %10.3f ms in prefill (%.0f %%, %.1f GFLOP/s), %.3f ms per decode step (%.0f %%, %.1f "
                 "GFLOP/s)\n", "attention", r->attn_p * 1e3, 100 * r->attn_p / tp, r->flops_p / r->attn_p * 1e-9,
            r->attn_d / r->D * 1e3, 100 * r->attn_d / td, r->flops_d / r->attn_d * 1e-9);
    if (r->routing)
        fprintf(tab, "  %-36s full %.1f %%, linear %.1f %%, local %.1f %% of the blocks' tokens (%s)\n", "routed",
                100 * r->share[0], 100 * r->share[1], 100 * r->share[2], r->routing);
    if (o) report_paired(r, o, tab, NULL);
    fprintf(tab, "  %-36s %10.1f MB\n", "peak RSS", rss_mb);
    if (!js) return;
    fprintf(js, "{\"model\": \"");
    json_str(js, path);
    fprintf(js, "\", \"file_mb\": %.6g, \"threads\": %d, \"context\": %d, \"prefill_tokens\": %d, "
                "\"prefill_s\": %.6g, \"prefill_tok_s\": %.6g, \"decode_tokens\": %d, \"decode_s\": %.6g, "
                "\"decode_tok_s\": %.6g, \"decode_weight_gb_s\": %.6g, \"decode_total_gb_s\": %.6g, "
                "\"peak_rss_mb\": %.6g, \"activations\": \"%s\", \"kv\": \"%s\", \"prefill_attention_s\": %.6g, "
                "\"decode_attention_s\": %.6g, \"prefill_attention_flops\": %.6g, \"decode_attention_flops\": %.6g",
            file_mb, threads, r->N, r->N, tp, r->N / tp, r->D, td, r->D / td, wgb * r->D / td,
            (wgb + kvgb) * r->D / td, rss_mb, r->act, r->kv, r->attn_p, r->attn_d, r->flops_p, r->flops_d);
    fprintf(js, ", \"decode_cache_full_gb\": %.6g", kv_full); /* a step's reads of the whole cache */
    if (r->prompt_file) {
        fprintf(js, ", \"prompt_file\": \"");
        json_str(js, r->prompt_file);
        fprintf(js, "\"");
    }
    if (r->routing) {
        fprintf(js, ", \"routing\": \"");
        json_str(js, r->routing);
        fprintf(js, "\", \"share_full\": %.6g, \"share_linear\": %.6g, \"share_local\": %.6g", r->share[0],
                r->share[1], r->share[2]);
    }
    if (o) report_paired(r, o, NULL, js);
    fprintf(js, "}\n");
}

/* The header: the model, the threads, the prompt's first ids. */
static void header(const model_run *r, const char *path, FILE *tab, int threads, double file_mb) {
    const mattn_llama_info *h = &r->info;
    fprintf(tab, "metaattn bench --model %s: %d thread%s, %.1f MB file, %d layers, d_model %d, vocab %d, "
                 "%.1f MB of weights per token\n",
            path, threads, threads == 1 ? "" : "s", file_mb, h->n_layers, h->d_model, h->vocab_size,
            h->weight_bytes * 1e-6);
    if (r->prompt_file) fprintf(tab, "  prompt: the first %d tokens of %s:", r->N, r->prompt_file);
    else fprintf(tab, "  prompt: %d SplitMix64 ids in [0, %d), seed %d:", r->N, h->vocab_size, PROMPT_SEED);
    for (int i = 0; i < r->N && i < 8; i++) fprintf(tab, " %d", r->tokens[i]);
    fprintf(tab, "%s\n  context %d, then %d greedy decode steps (%s cache of %d positions), %s activations\n",
            r->N > 8 ? " ..." : "", r->N, r->D, r->kv, r->N + r->D, r->act);
}

/* The model, its checks against --context and --decode (usage errors:
 * they name the flags), the cache and the prompt. */
static int setup(model_run *r, const char *path) {
    if (mattn_llama_open(path, &r->m) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    if (cli_llama_routing(r->m, r->routing)) return 1;
    mattn_llama_get_info(r->m, &r->info);
    const int ctx = r->info.context_length, V = r->info.vocab_size;
    if (r->N > ctx)
        return cli_fail(EXIT_USAGE, "--context: %d is beyond the model's context length %d (%s)", r->N, ctx, path);
    if ((long long)r->N + r->D > ctx)
        return cli_fail(EXIT_USAGE, "--context %d + --decode %d = %lld positions: beyond the model's context length "
                        "%d (%s)", r->N, r->D, (long long)r->N + r->D, ctx, path);
    if (mattn_llama_cache_init_kv(r->m, r->N + r->D, cli_llama_kv(r->kv), &r->c) != MATTN_OK)
        return cli_fail(1, "bench: a cache of %d positions: %s", r->N + r->D, mattn_llama_errmsg(r->m));
    r->logits = malloc(sizeof *r->logits * (size_t)V);
    if (!r->logits) return cli_fail(1, "bench: out of memory");
    if (r->prompt_file) {
        size_t n = 0;
        if (cli_llama_read_tokens(r->m, r->prompt_file, "--prompt-file", &r->tokens, &n)) return 1;
        if (n < (size_t)r->N)
            return cli_fail(1, "--prompt-file '%s': %zu tokens, fewer than --context %d", r->prompt_file, n, r->N);
        return 0;
    }
    if (!(r->tokens = malloc(sizeof *r->tokens * (size_t)r->N)))
        return cli_fail(1, "bench: out of memory for %d tokens", r->N);
    uint64_t s = PROMPT_SEED;
    for (int i = 0; i < r->N; i++) r->tokens[i] = (int32_t)(bench_rand(&s) % (uint64_t)V);
    return 0;
}

int cmd_bench_model(int argc, char **argv) {
    const char *path = NULL, *json = NULL, *only = NULL, *act = NULL, *kv = NULL, *routing = NULL, *pf = NULL;
    long long N = 512, D = 32, threads = 0;
    double min_time = 0.0;
    int quick = 0, paired = 0;
    const cli_opt opts[] = {OPT_STRING("--model", &path),
                            OPT_INT("--context", &N, 1, 1 << 24),
                            OPT_INT("--decode", &D, 1, 1 << 24),
                            OPT_INT("--threads", &threads, 1, 1024),
                            OPT_DOUBLE("--min-time", &min_time, 0.0, 3600.0),
                            OPT_STRING("--json", &json),
                            OPT_STRING("--activations", &act), OPT_STRING("--kv", &kv),
                            OPT_STRING("--routing", &routing), OPT_STRING("--only", &only),
                            OPT_STRING("--prompt-file", &pf),
                            OPT_FLAG("--quick", &quick), OPT_FLAG("--paired", &paired),
                            OPT_END};
    int rc = cli_parse("bench", cli_bench_usage, opts, argc, argv);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if (!path) return cli_fail(EXIT_USAGE, "bench: --context and --decode measure a model: --model FILE.gguf is "
                                           "required (see metaattn bench --help)");
    if (only || quick)
        return cli_fail(EXIT_USAGE, "bench: %s does not apply to --model (the model bench has no groups or quick "
                        "shapes: --context and --decode size it)", only ? "--only" : "--quick");
    if (paired && !routing)
        return cli_fail(EXIT_USAGE, "bench: --paired sets a routed model against the original: it needs --routing F");
    if ((rc = cli_llama_modes(act, kv))) return rc;
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    const int nthreads = cli_set_threads(threads);
    struct stat st;
    const double file_mb = stat(path, &st) == 0 ? st.st_size * 1e-6 : 0.0;
    model_run r = {.N = (int)N, .D = (int)D, .kv = kv ? kv : "f16", .routing = routing, .prompt_file = pf};
    model_run o = r, *op = paired ? &o : NULL; /* --paired: the original model, its own handle and cache */
    o.routing = NULL;
    FILE *tab = stdout, *js = NULL;
    rc = setup(&r, path);
    if (!rc && op) rc = setup(op, path);
    if (!rc && act && !strcmp(act, "f32")) mattn_llama_set_activations(r.m, MATTN_LLAMA_ACT_F32);
    if (!rc && op && act && !strcmp(act, "f32")) mattn_llama_set_activations(o.m, MATTN_LLAMA_ACT_F32);
    r.act = act ? act : "q8";
    if (!rc && json) {
        if (!strcmp(json, "-")) js = stdout, tab = stderr;
        else if (!(js = fopen(json, "w"))) rc = cli_fail(1, "--json: cannot write '%s'", json);
    }
    if (!rc) header(&r, path, tab, nthreads, file_mb);
    if (!rc) rc = measure(&r, op, min_time);
    if (!rc) report(&r, op, path, tab, js, nthreads, file_mb);
    if (js && js != stdout && fclose(js) != 0 && !rc) rc = cli_fail(1, "--json: cannot write '%s'", json);
    free(r.tokens), free(r.logits);
    mattn_llama_cache_free(r.c), mattn_llama_free(r.m);
    if (op) free(o.tokens), free(o.logits), mattn_llama_cache_free(o.c), mattn_llama_free(o.m);
    return rc;
}
