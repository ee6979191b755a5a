/*
 * bench.c — `metaattn bench`: the layer, sparse hard routing, decoding and
 * training on this machine (docs/performance.md), through the public API.
 *
 * Figures are ratios against a baseline measured in the same run: all-full
 * routing for sparse routing and decoding.  FLOPs are executed work as the
 * layer counts it (mattn_stats).  The attention kernels and the "% sgemm"
 * figures (against OpenBLAS sgemm 2048^3) are bench/bench_kernels.c's, which
 * shares this harness (bench_harness.c).  bench/compare_torch.py runs both
 * and PyTorch on the same shapes, reading --json.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_harness.h"
#include "cli.h"

const char cli_bench_usage[] =
    "usage: metaattn bench [--only LIST] [--quick] [--min-time S] [--threads N] [--json FILE]\n"
    "       metaattn bench --model FILE.gguf [--context N] [--decode N] [--min-time S] [--activations A]\n"
    "                      [--kv T] [--routing F [--paired]] [--prompt-file F] [--threads N] [--json FILE]\n"
    "\n"
    "Measures metaattn's layer, sparse routing, decoding and training on this machine,\n"
    "sparse routing and decoding as ratios against all-full routing in the same run\n"
    "(the attention kernels against OpenBLAS sgemm: build/bench_kernels).\n"
    "\n"
    "  --only LIST    comma-separated groups: layer, hard, decode, train, long\n"
    "                 (default: all but long)\n"
    "  --quick        smaller shapes (T/4) and --min-time 0.2, for a smoke run\n"
    "  --min-time S   seconds each case repeats for (default 1.0)\n"
    "  --threads N    OpenMP threads (default: all cores)\n"
    "  --json FILE    also write the results as JSON ('-' = stdout, table to stderr)\n"
    "  -h, --help     show this help\n"
    "\n"
    "With --model, a pretrained GGUF model instead (bench/compare_llamacpp.py sets it\n"
    "against llama.cpp): the prefill of N tokens into a fresh cache of N + decode\n"
    "positions, then greedy decode steps from context N; prefill and decode tokens/s,\n"
    "decode GB/s of weights (the bytes of every matrix a token reads, head included,\n"
    "times tokens/s) and with the cache (plus the keys and values a step reads),\n"
    "peak RSS.  The prompt: N pseudo-random ids in [0, vocab) from\n"
    "SplitMix64 seeded 1, the same every run, or the first N tokens of a text.\n"
    "\n"
    "  --model FILE   a GGUF model (scripts/get-model.sh smollm2)\n"
    "  --context N    prompt tokens (default 512; N + decode <= the model's context)\n"
    "  --decode N     decode steps after the prompt (default 32)\n"
    "  --min-time S   repeat prefill + decode while under S seconds, best kept\n"
    "                 (default 0: once, after an untimed warm-up of 64 tokens)\n"
    "  --activations A  q8 (default, 8-bit as llama.cpp) or f32\n"
    "  --kv T         the cache: f16 (default, as llama.cpp) or f32\n"
    "  --routing F    route the model's blocks by this routing file (metaattn surgery):\n"
    "                 the report adds the experts' shares (the attention FLOPs add\n"
    "                 the controllers')\n"
    "  --paired       with --routing: the original model too, in the same process,\n"
    "                 its repetitions alternating with the routed model's (both see\n"
    "                 the same drift of the machine); the report adds its figures\n"
    "                 and the ratios routed / original (peak RSS: both)\n"
    "  --prompt-file F  the prompt: the first N tokens of this text (a routed model\n"
    "                 routes text as it was trained to, random ids otherwise)\n"
    "  --json FILE    {\"model\", \"file_mb\", \"threads\", \"context\", \"prefill_tokens\",\n"
    "                 \"prefill_s\", \"prefill_tok_s\", \"decode_tokens\", \"decode_s\",\n"
    "                 \"decode_tok_s\", \"decode_weight_gb_s\", \"decode_total_gb_s\",\n"
    "                 \"peak_rss_mb\", \"activations\", \"kv\", \"prompt_file\", the attention's\n"
    "                 seconds and FLOPs, \"decode_cache_full_gb\" (a step's reads of\n"
    "                 the whole cache; \"decode_total_gb_s\" counts a routed step's own);\n"
    "                 routed: the shares; --paired: \"original\":\n"
    "                 {\"prefill_s\", \"decode_tok_s\", its attention's seconds and FLOPs}}\n"
    "                 ('-' = stdout)\n";

// ----------------------------------------------------------------------------
// hard routing with forced routes (P3), long T (P6)

/* Hard routing at T: 25% of positions (every 4th) on full, the rest
 * alternating linear / local, against every position on full. */
static int bench_hard_at(bench *b, int T, int share) {
    bench_layer x;
    if (bench_layer_setup(&x, T, share, 1, 6)) return 1;
    uint8_t *mix = malloc((size_t)T), *full = calloc((size_t)T, 1);
    if (!mix || !full) return cli_fail(1, "bench: out of memory for T=%d", T);
    for (int t = 0; t < T; t++) mix[t] = t % 4 == 0 ? 0 : t % 2 ? 1 : 2;
    char name[96];
    double tt[2], ff[2];
    bench_layer y = x; /* same layer, other routes; measured alternately */
    x.routes = full, y.routes = mix;
    int rc = bench_best_time2(b, bench_layer_run, &x, bench_layer_run, &y, &tt[0], &tt[1]);
    ff[0] = x.s.flops_total, ff[1] = y.s.flops_total;
    for (int v = 0; v < 2 && !rc; v++) {
        snprintf(name, sizeof name, "T=%d %s: %s", T, share ? "share_qkv" : "per-expert",
                 v ? "25% full, rest linear/local" : "all full");
        bench_report(b, "hard", name, tt[v], ff[v], NULL, 0);
    }
    if (!rc) {
        snprintf(name, sizeof name, "T=%d %s: ratios mixed/all-full", T, share ? "share_qkv" : "per-expert");
        fprintf(b->tab, "  %-44s flops %.3f  wall %.3f  wall/flops %.2f\n", name, ff[1] / ff[0], tt[1] / tt[0],
                (tt[1] / tt[0]) / (ff[1] / ff[0]));
        if (b->js)
            fprintf(b->js, ",\n    {\"group\": \"hard\", \"name\": \"%s\", \"T\": %d, \"share_qkv\": %d, "
                           "\"flop_ratio\": %.6g, \"wall_ratio\": %.6g}",
                    name, T, share, ff[1] / ff[0], tt[1] / tt[0]);
    }
    free(mix), free(full);
    bench_layer_teardown(&x);
    return rc;
}

static int bench_hard(bench *b) {
    fprintf(b->tab, "layer, hard routing, eval, forced routes (D=512, H=8, w=64)\n");
    const int T = b->quick ? 1024 : 4096;
    if (bench_hard_at(b, T, 1) || bench_hard_at(b, T, 0)) return 1;
    return b->quick ? 0 : bench_hard_at(b, 2 * T, 1);
}

static int bench_long(bench *b) {
    const int T = b->quick ? 8192 : 32768;
    bench_layer x;
    if (bench_layer_setup(&x, T, 0, 0, 7)) return 1;
    fprintf(b->tab, "long context: one soft layer forward, eval (T=%d, D=512)\n", T);
    double t0 = cli_now();
    int rc = bench_layer_run(&x);
    double t = cli_now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (!rc) bench_report(b, "long", "soft layer forward", t, x.s.flops_total, "peak_rss_mib", ru.ru_maxrss / 1024.0);
    bench_layer_teardown(&x);
    return rc;
}

// ----------------------------------------------------------------------------
// decoding (P5): one attention sub-layer step at context C

typedef struct {
    mattn_layer *l;
    mattn_layer_cache *c;
    const float *x;
    float *out;
    int C, steps;
} dec_ctx;

static int run_decode(void *p) {
    dec_ctx *d = p;
    for (int i = 0; i < d->steps; i++)
        if (mattn_layer_decode(d->l, d->c, d->x + (size_t)i * 512, d->out, NULL) != MATTN_OK)
            return cli_fail(1, "bench: decode: %s", mattn_layer_errmsg(d->l));
    return 0;
}

/* The prefix of C positions, then `steps` timed steps from position C:
 * the best time per step of two repetitions with the given routes. */
static int decode_time(dec_ctx *d, const float *x, const uint8_t *routes, double *best) {
    const int C = d->C, steps = d->steps;
    int rc = 0;
    mattn_layer_force_routes(d->l, routes, C + steps);
    *best = INFINITY;
    for (int rep = 0; rep < 2 && !rc; rep++) {
        mattn_layer_cache_reset(d->c);
        d->x = x, d->steps = C;
        rc = run_decode(d);
        d->x = x + (size_t)C * 512, d->steps = steps;
        double t0 = cli_now();
        rc = rc || run_decode(d);
        double dt = (cli_now() - t0) / steps;
        *best = dt < *best ? dt : *best;
    }
    return rc;
}

static int bench_decode(bench *b) {
    const int C = b->quick ? 1024 : 4096, steps = 256;
    fprintf(b->tab, "decoding: one attention sub-layer step at context %d (share_qkv, D=512)\n", C);
    mattn_config c = bench_layer_cfg(1, 1);
    dec_ctx d = {.C = C, .steps = steps};
    if (mattn_layer_init(&c, NULL, &d.l) != MATTN_OK) return cli_fail(1, "bench: %s", mattn_last_error());
    mattn_layer_set_training(d.l, 0);
    mattn_layer_set_position_norm(d.l, C + steps);
    float *x = bench_randn((size_t)(C + steps) * 512, 8, 1.0);
    uint8_t *mix = malloc((size_t)C + steps), *full = calloc((size_t)C + steps, 1);
    d.out = bench_floats(512);
    if (!x || !mix || !full || !d.out || mattn_layer_cache_init(d.l, 1, C + steps, &d.c) != MATTN_OK)
        return cli_fail(1, "bench: out of memory for decoding");
    for (int t = 0; t < C + steps; t++) mix[t] = t % 4 == 0 ? 0 : t % 2 ? 1 : 2;
    /* a cache cannot be rewound (the linear state), so each repetition
     * refills the prefix and times `steps` steps from position C once */
    double tt[2];
    int rc = 0;
    for (int v = 0; v < 2 && !rc; v++) {
        rc = decode_time(&d, x, v ? mix : full, &tt[v]);
        if (!rc)
            bench_report(b, "decode", v ? "step, 25% full, rest linear/local" : "step, all full", tt[v], 0,
                         "tokens_per_s", 1.0 / tt[v]);
    }
    if (!rc) {
        fprintf(b->tab, "  %-44s %.2fx\n", "speed-up mixed vs all full", tt[0] / tt[1]);
        if (b->js)
            fprintf(b->js, ",\n    {\"group\": \"decode\", \"name\": \"speed-up\", \"context\": %d, \"speedup\": %.6g}",
                    C, tt[0] / tt[1]);
    }
    free(mix), free(full), free(x), free(d.out);
    mattn_layer_cache_free(d.c), mattn_layer_free(d.l);
    return rc;
}

// ----------------------------------------------------------------------------
// training (P4) and generation: the README's tiny model

typedef struct {
    mattn_model *m;
    mattn_adamw *o;
    int32_t *idx, *tgt;
    int B, T;
} train_ctx;

static int run_train(void *p) {
    train_ctx *c = p;
    float loss, ce;
    double gn;
    if (mattn_model_forward(c->m, c->idx, c->tgt, c->B, c->T, &loss, &ce) != MATTN_OK ||
        mattn_model_zero_grad(c->m) != MATTN_OK || mattn_model_backward(c->m) != MATTN_OK ||
        mattn_adamw_step(c->o, c->m, 1e-3, &gn) != MATTN_OK || mattn_model_update_duals(c->m) != MATTN_OK)
        return cli_fail(1, "bench: training step: %s", mattn_model_errmsg(c->m));
    return 0;
}

typedef struct {
    mattn_model *m;
    mattn_model_cache *c;
    int n;
    float *logits;
} gen_ctx;

static int run_generate(void *p) {
    gen_ctx *g = p;
    mattn_model_cache_reset(g->c);
    int32_t tok = 'A';
    for (int i = 0; i < g->n; i++) {
        if (mattn_model_decode(g->m, g->c, &tok, g->logits) != MATTN_OK)
            return cli_fail(1, "bench: generate: %s", mattn_model_errmsg(g->m));
        int best = 0;
        for (int v = 1; v < 256; v++) best = g->logits[v] > g->logits[best] ? v : best;
        tok = best;
    }
    return 0;
}

/* Greedy generation with the decode cache from the training run's model. */
static int bench_generate(bench *b, mattn_model *m) {
    gen_ctx g = {.m = m, .n = b->quick ? 64 : 256, .logits = malloc(256 * sizeof(float))};
    mattn_model_set_training(m, 0);
    int rc = !g.logits || mattn_model_cache_init(m, 1, &g.c) != MATTN_OK
                 ? cli_fail(1, "bench: decode cache: %s", mattn_last_error()) : 0;
    if (!rc) {
        double t = bench_best_time(b, run_generate, &g);
        rc = t < 0;
        char name[64];
        snprintf(name, sizeof name, "generate %d tokens (decode cache)", g.n);
        if (!rc) bench_report(b, "train", name, t, 0, "tokens_per_s", g.n / t);
    }
    mattn_model_cache_free(g.c), free(g.logits);
    return rc;
}

/* The tiny model and its optimizer at batch B x context T (one batch of
 * random printable bytes). */
static int train_setup(train_ctx *c, const mattn_lm_config *cfg) {
    mattn_adamw_config oc = mattn_adamw_config_default();
    if (mattn_model_init(cfg, &c->m) != MATTN_OK || mattn_adamw_init(c->m, &oc, &c->o) != MATTN_OK)
        return cli_fail(1, "bench: %s", mattn_last_error());
    c->idx = malloc(sizeof(int32_t) * c->B * c->T), c->tgt = malloc(sizeof(int32_t) * c->B * c->T);
    if (!c->idx || !c->tgt) return cli_fail(1, "bench: out of memory");
    uint64_t r = 9;
    for (int i = 0; i < c->B * c->T; i++) c->idx[i] = (int32_t)(bench_rand(&r) % 96 + 32);
    for (int i = 0; i < c->B * c->T; i++) c->tgt[i] = i + 1 < c->B * c->T ? c->idx[i + 1] : 32;
    mattn_model_set_training(c->m, 1);
    return 0;
}

static void train_teardown(train_ctx *c) { free(c->idx), free(c->tgt), mattn_adamw_free(c->o), mattn_model_free(c->m); }

/* A training step of the tiny preset, with its budget (cost target, full
 * share, usage floor: multipliers and their dual ascent) against the same
 * model without one, measured alternately. */
static int bench_train(bench *b) {
    mattn_lm_config cfg, nob;
    if (mattn_lm_config_preset("tiny", &cfg) != MATTN_OK) return cli_fail(1, "bench: %s", mattn_last_error());
    nob = cfg;
    nob.attn.cost_target = -1, nob.attn.full_share = -1, nob.attn.usage_floor = 0;
    train_ctx c = {.B = 16, .T = 128}, d = c;
    int rc = train_setup(&c, &cfg) || train_setup(&d, &nob);
    fprintf(b->tab, "training: the README's tiny model (4 layers, D=128, batch %d x context %d)\n", c.B, c.T);
    double t = 0, tn = 0;
    if (!rc) rc = bench_best_time2(b, run_train, &c, run_train, &d, &t, &tn);
    if (!rc) bench_report(b, "train", "training step (fwd+bwd+AdamW)", t, 0, "tokens_per_s", c.B * c.T / t);
    if (!rc) bench_report(b, "train", "the same without the budget", tn, 0, "tokens_per_s", c.B * c.T / tn);
    if (!rc) {
        fprintf(b->tab, "  %-44s %.3f\n", "ratio: step with budget / without", t / tn);
        if (b->js)
            fprintf(b->js, ",\n    {\"group\": \"train\", \"name\": \"budget step ratio\", \"ratio\": %.6g}", t / tn);
    }
    if (!rc) rc = bench_generate(b, c.m);
    train_teardown(&c), train_teardown(&d);
    return rc;
}

// ----------------------------------------------------------------------------

/* bench --model (bench_model.c): --model, --context or --decode as an
 * option (not as another option's value) anywhere on the line. */
static int wants_model(int argc, char **argv) {
    static const char *const valued[] = {"--only", "--json", "--min-time", "--threads"};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--model") || !strcmp(argv[i], "--context") || !strcmp(argv[i], "--decode")) return 1;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            if (!strcmp(argv[i], valued[k])) {
                i++; /* its value; past the end when it is the last argument */
                break;
            }
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (wants_model(argc, argv)) return cmd_bench_model(argc, argv);
    static const bench_group groups[] = {
        {"layer", bench_layer_soft, 1}, {"hard", bench_hard, 1}, {"decode", bench_decode, 1},
        {"train", bench_train, 1},      {"long", bench_long, 0}};
    const bench_program p = {
        .cmd = "bench", .title = "metaattn bench", .usage = cli_bench_usage, .groups = groups, .n_groups = 5,
        .groups_note = "sgemm and kernels: build/bench_kernels"};
    return bench_main(&p, argc, argv);
}
