/*
 * bench.c — `metaattn bench`: the C side of the benchmarks (docs/performance.md).
 *
 * Every figure is a ratio against a baseline measured in the same run:
 * OpenBLAS sgemm on 2048^3 for GFLOP/s, all-full routing for sparse routing
 * and decoding.  FLOPs are executed work as the kernels count it (causal
 * attention ~ 2 T^2 D per forward; a softmax backward = 2.5 forwards, the
 * five products of FlashAttention-2's backward).  Each case runs once to
 * warm up, then repeats until --min-time has passed (at least 3 times); the
 * best repetition is reported.  Ratios are measured alternately (kernel,
 * sgemm, kernel, ... and mixed, all-full, mixed, ...) so that a slow spell of
 * a shared machine hits both sides.  bench/compare_torch.py runs PyTorch on
 * the same shapes and reads --json.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "train/train.h"
#include "metaattn.h"
#include "kernels/simd.h"

static const char *usage_bench =
    "usage: metaattn bench [--only LIST] [--quick] [--min-time S] [--threads N] [--json FILE]\n"
    "\n"
    "Measures metaattn's kernels, layer, decoding and training on this machine, as\n"
    "ratios against OpenBLAS sgemm (2048^3) and all-full routing in the same run.\n"
    "\n"
    "  --only LIST    comma-separated groups: sgemm, kernels, layer, hard, decode,\n"
    "                 train, long (default: all but long)\n"
    "  --quick        smaller shapes (T/4) and --min-time 0.2, for a smoke run\n"
    "  --min-time S   seconds each case repeats for (default 1.0)\n"
    "  --threads N    OpenMP threads (default: all cores)\n"
    "  --json FILE    also write the results as JSON ('-' = stdout, table to stderr)\n"
    "  -h, --help     show this help\n";

typedef struct { int n; float *A, *B, *C; } gemm_ctx;
static int run_gemm(void *p) {
    gemm_ctx *g = p;
    mattn_gemm(0, 0, g->n, g->n, g->n, 1.0f, g->A, g->n, g->B, g->n, 0.0f, g->C, g->n);
    return 0;
}

typedef struct {
    double min_time;
    int quick;
    FILE *tab;            /* where the table goes */
    FILE *js;             /* JSON results or NULL */
    int n_js;
    double sgemm;         /* GFLOP/s of the baseline (for the row being reported) */
    gemm_ctx gemm;        /* the baseline's operands, kept to re-measure next to each kernel */
} bench;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Best time of fn(ctx): one warm-up, then >= 3 runs and >= min_time. */
typedef int (*bench_fn)(void *ctx);
static double best_time(const bench *b, bench_fn fn, void *ctx) {
    if (fn(ctx)) return -1.0;
    double best = INFINITY, start = now();
    for (int i = 0; i < 3 || now() - start < b->min_time; i++) {
        double t0 = now();
        if (fn(ctx)) return -1.0;
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

/* Best times of two alternatives measured alternately (A, B, A, B, ...), so
 * that a slow spell of a shared machine hits both: the ratio is what counts. */
static int best_time2(const bench *b, bench_fn fa, void *ca, bench_fn fb, void *cb, double *ta, double *tb) {
    if (fa(ca) || fb(cb)) return 1;
    *ta = *tb = INFINITY;
    double start = now();
    for (int i = 0; i < 3 || now() - start < 2.0 * b->min_time; i++) {
        double t0 = now();
        if (fa(ca)) return 1;
        double t1 = now();
        if (fb(cb)) return 1;
        double t2 = now();
        *ta = t1 - t0 < *ta ? t1 - t0 : *ta;
        *tb = t2 - t1 < *tb ? t2 - t1 : *tb;
    }
    return 0;
}

/* One result row: time, executed FLOPs (0: not a FLOP figure), extra value. */
static void report(bench *b, const char *group, const char *name, double sec, double flops, const char *xname,
                   double xval) {
    const double gf = flops > 0 ? flops / sec * 1e-9 : 0.0;
    fprintf(b->tab, "  %-44s %10.3f ms", name, sec * 1e3);
    if (gf > 0) fprintf(b->tab, " %8.1f GFLOP/s", gf);
    if (gf > 0 && b->sgemm > 0) fprintf(b->tab, " %6.1f%% sgemm", 100.0 * gf / b->sgemm);
    if (xname) fprintf(b->tab, "  %s %.4g", xname, xval);
    fputc('\n', b->tab);
    if (b->js) {
        fprintf(b->js, "%s\n    {\"group\": \"%s\", \"name\": \"%s\", \"seconds\": %.6g, \"flops\": %.6g, \"gflops\": %.6g",
                b->n_js++ ? "," : "", group, name, sec, flops, gf);
        if (b->sgemm > 0 && gf > 0) fprintf(b->js, ", \"pct_sgemm\": %.4g", 100.0 * gf / b->sgemm);
        if (xname) fprintf(b->js, ", \"%s\": %.6g", xname, xval);
        fputc('}', b->js);
    }
}

static float *randn(size_t n, uint64_t seed, double std) {
    float *x = mattn_amalloc(n * sizeof(float));
    if (!x) return NULL;
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * mattn_rng_normal(&r));
    return x;
}

// ----------------------------------------------------------------------------
// sgemm baseline


/* Time fn next to sgemm, alternately; b->sgemm becomes the GFLOP/s of this
 * pairing, so a row's "% sgemm" compares two measurements of the same spell. */
static double timed_vs_sgemm(bench *b, bench_fn fn, void *ctx) {
    double tg, t;
    if (best_time2(b, run_gemm, &b->gemm, fn, ctx, &tg, &t)) return -1.0;
    b->sgemm = 2.0 * b->gemm.n * (double)b->gemm.n * b->gemm.n / tg * 1e-9;
    return t;
}

static int bench_sgemm(bench *b) {
    gemm_ctx g = {.n = 2048};
    const size_t n2 = (size_t)g.n * g.n;
    g.A = randn(n2, 1, 1.0), g.B = randn(n2, 2, 1.0), g.C = mattn_amalloc(n2 * sizeof(float));
    if (!g.A || !g.B || !g.C) return cli_fail(1, "bench: out of memory for sgemm");
    b->gemm = g;
    double t = best_time(b, run_gemm, &g), f = 2.0 * n2 * g.n;
    b->sgemm = f / t * 1e-9;
    fprintf(b->tab, "sgemm baseline (mattn_gemm: %s)\n", mattn_gemm_backend());
    report(b, "sgemm", "sgemm 2048^3", t, f, NULL, 0);
    return 0;
}

// ----------------------------------------------------------------------------
// attention kernels

typedef struct {
    mattn_attn_args a;
    mattn_attn_grad g;
    int linear, backward;
    double flops;
} kern_ctx;

static int run_kernel(void *p) {
    kern_ctx *k = p;
    if (k->backward) {
        memset(k->g.gq, 0, sizeof(float) * (size_t)k->a.B * k->a.T * k->g.ldg);
        if (k->linear) mattn_attn_linear_backward(&k->a, &k->g);
        else mattn_attn_softmax_backward(&k->a, &k->g);
    } else {
        k->flops = k->linear ? mattn_attn_linear_forward(&k->a) : mattn_attn_softmax_forward(&k->a);
    }
    return 0;
}

static int bench_kernels(bench *b) {
    const int T = b->quick ? 1024 : 4096, H = 8, dh = 64, D = H * dh;
    fprintf(b->tab, "attention kernels (B=1, T=%d, H=%d, dh=%d)\n", T, H, dh);
    float *qkv = randn((size_t)T * 3 * D, 3, 1.0), *out = mattn_amalloc(sizeof(float) * T * D);
    float *lse = mattn_amalloc(sizeof(float) * H * T), *go = randn((size_t)T * D, 4, 1.0);
    float *g = mattn_amalloc(sizeof(float) * T * 3 * D);
    float *state = mattn_amalloc(mattn_attn_linear_backward_scratch(1, T, H, dh));
    if (!qkv || !out || !lse || !go || !g || !state) return cli_fail(1, "bench: out of memory for kernels");
    static const struct { const char *name; int linear, causal, window; } cases[] = {
        {"full causal", 0, 1, -1}, {"full bidirectional", 0, 0, -1},
        {"local causal w=64", 0, 1, 64}, {"linear causal", 1, 1, -1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kern_ctx k = {.a = {.B = 1, .T = T, .H = H, .dh = dh, .q = qkv, .k = qkv + D, .v = qkv + 2 * D,
                            .ld = 3 * D, .out = out, .ldo = D, .causal = cases[c].causal,
                            .window = cases[c].window, .lse = lse},
                      .g = {.gout = go, .ldgo = D, .gq = g, .gk = g + D, .gv = g + 2 * D, .ldg = 3 * D,
                            .state = state},
                      .linear = cases[c].linear};
        char name[96];
        double t = timed_vs_sgemm(b, run_kernel, &k);
        const double ff = k.flops;
        snprintf(name, sizeof name, "%s forward", cases[c].name);
        report(b, "kernels", name, t, ff, NULL, 0);
        if (cases[c].linear || cases[c].causal) {
            run_kernel(&k); /* out and lse for the backward */
            k.backward = 1;
            t = timed_vs_sgemm(b, run_kernel, &k);
            snprintf(name, sizeof name, "%s backward", cases[c].name);
            report(b, "kernels", name, t, (cases[c].linear ? 2.0 : 2.5) * ff, NULL, 0);
        }
    }
    mattn_afree(qkv), mattn_afree(out), mattn_afree(lse), mattn_afree(go), mattn_afree(g), mattn_afree(state);
    return 0;
}

// ----------------------------------------------------------------------------
// the layer: soft forward (P1), hard routing with forced routes (P3), long T (P6)

typedef struct {
    mattn_layer *l;
    const float *x;
    float *out;
    int T;
    const uint8_t *routes; /* forced before each run, or NULL */
    mattn_stats s;
} layer_ctx;

static int run_layer(void *p) {
    layer_ctx *c = p;
    if (c->routes) mattn_layer_force_routes(c->l, c->routes, c->T);
    if (mattn_layer_forward(c->l, c->x, 1, c->T, NULL, c->out, NULL, &c->s) != MATTN_OK)
        return cli_fail(1, "bench: layer forward: %s", mattn_layer_errmsg(c->l));
    return 0;
}

static mattn_config layer_cfg(int share, int hard) {
    mattn_config c = mattn_config_default();
    c.d_model = 512, c.n_heads = 8, c.window_size = 64, c.causal = 1, c.dropout = 0.0;
    c.share_qkv = share, c.hard_routing = hard;
    return c;
}

/* An eval-mode, gradient-free layer (as torch.no_grad() on the PyTorch
 * side) with a random input of T tokens and an output buffer. */
static int layer_setup(layer_ctx *x, int T, int share, int hard, uint64_t seed) {
    mattn_config c = layer_cfg(share, hard);
    *x = (layer_ctx){.T = T};
    if (mattn_layer_init(&c, NULL, &x->l) != MATTN_OK) return cli_fail(1, "bench: %s", mattn_last_error());
    mattn_layer_set_training(x->l, 0);
    mattn_layer_set_grad(x->l, 0);
    x->x = randn((size_t)T * 512, seed, 1.0);
    x->out = mattn_amalloc(sizeof(float) * T * 512);
    if (!x->x || !x->out) return cli_fail(1, "bench: out of memory for T=%d", T);
    return 0;
}

static void layer_teardown(layer_ctx *x) {
    mattn_afree((float *)x->x), mattn_afree(x->out), mattn_layer_free(x->l);
}

static int bench_layer_soft(bench *b) {
    const int T = b->quick ? 256 : 1024;
    layer_ctx x;
    if (layer_setup(&x, T, 0, 0, 5)) return 1;
    fprintf(b->tab, "layer, soft routing, eval (T=%d, D=512, H=8, w=64, per-expert projections)\n", T);
    double t = timed_vs_sgemm(b, run_layer, &x);
    int rc = t < 0;
    if (!rc) report(b, "layer", "soft layer forward", t, x.s.flops_total, NULL, 0);
    layer_teardown(&x);
    return rc;
}

/* Hard routing at T: 25% of positions (every 4th) on full, the rest
 * alternating linear / local, against every position on full. */
static int bench_hard_at(bench *b, int T, int share) {
    layer_ctx x;
    if (layer_setup(&x, T, share, 1, 6)) return 1;
    uint8_t *mix = malloc((size_t)T), *full = calloc((size_t)T, 1);
    if (!mix || !full) return cli_fail(1, "bench: out of memory for T=%d", T);
    for (int t = 0; t < T; t++) mix[t] = t % 4 == 0 ? 0 : t % 2 ? 1 : 2;
    char name[96];
    double tt[2], ff[2];
    layer_ctx y = x; /* same layer, other routes; measured alternately */
    x.routes = full, y.routes = mix;
    int rc = best_time2(b, run_layer, &x, run_layer, &y, &tt[0], &tt[1]);
    ff[0] = x.s.flops_total, ff[1] = y.s.flops_total;
    for (int v = 0; v < 2 && !rc; v++) {
        snprintf(name, sizeof name, "T=%d %s: %s", T, share ? "share_qkv" : "per-expert",
                 v ? "25% full, rest linear/local" : "all full");
        report(b, "hard", name, tt[v], ff[v], NULL, 0);
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
    layer_teardown(&x);
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
    layer_ctx x;
    if (layer_setup(&x, T, 0, 0, 7)) return 1;
    fprintf(b->tab, "long context: one soft layer forward, eval (T=%d, D=512)\n", T);
    double t0 = now();
    int rc = run_layer(&x);
    double t = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (!rc) report(b, "long", "soft layer forward", t, x.s.flops_total, "peak_rss_mib", ru.ru_maxrss / 1024.0);
    layer_teardown(&x);
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

static int bench_decode(bench *b) {
    const int C = b->quick ? 1024 : 4096, steps = 256;
    fprintf(b->tab, "decoding: one attention sub-layer step at context %d (share_qkv, D=512)\n", C);
    mattn_config c = layer_cfg(1, 1);
    dec_ctx d = {.C = C, .steps = steps};
    if (mattn_layer_init(&c, NULL, &d.l) != MATTN_OK) return cli_fail(1, "bench: %s", mattn_last_error());
    mattn_layer_set_training(d.l, 0);
    mattn_layer_set_position_length(d.l, C + steps);
    float *x = randn((size_t)(C + steps) * 512, 8, 1.0);
    uint8_t *mix = malloc((size_t)C + steps), *full = calloc((size_t)C + steps, 1);
    d.out = mattn_amalloc(512 * sizeof(float));
    if (!x || !mix || !full || !d.out || mattn_layer_cache_init(d.l, 1, C + steps, &d.c) != MATTN_OK)
        return cli_fail(1, "bench: out of memory for decoding");
    for (int t = 0; t < C + steps; t++) mix[t] = t % 4 == 0 ? 0 : t % 2 ? 1 : 2;
    /* a cache cannot be rewound (the linear state), so each repetition
     * refills the prefix and times `steps` steps from position C once */
    double tt[2] = {INFINITY, INFINITY};
    int rc = 0;
    for (int v = 0; v < 2 && !rc; v++) {
        mattn_layer_force_routes(d.l, v ? mix : full, C + steps);
        for (int rep = 0; rep < 2 && !rc; rep++) {
            mattn_layer_cache_reset(d.c);
            d.x = x, d.steps = C;
            rc = run_decode(&d);
            d.x = x + (size_t)C * 512, d.steps = steps;
            double t0 = now();
            rc = rc || run_decode(&d);
            double dt = (now() - t0) / steps;
            tt[v] = dt < tt[v] ? dt : tt[v];
        }
        if (!rc)
            report(b, "decode", v ? "step, 25% full, rest linear/local" : "step, all full", tt[v], 0,
                   "tokens_per_s", 1.0 / tt[v]);
    }
    if (!rc) {
        fprintf(b->tab, "  %-44s %.2fx\n", "speed-up mixed vs all full", tt[0] / tt[1]);
        if (b->js)
            fprintf(b->js, ",\n    {\"group\": \"decode\", \"name\": \"speed-up\", \"context\": %d, \"speedup\": %.6g}",
                    C, tt[0] / tt[1]);
    }
    free(mix), free(full), mattn_afree(x), mattn_afree(d.out);
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
        mattn_adamw_step(c->o, c->m, 1e-3, &gn) != MATTN_OK)
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

static int bench_train(bench *b) {
    mattn_lm_config cfg;
    if (mattn_lm_config_preset("tiny", &cfg) != MATTN_OK) return cli_fail(1, "bench: %s", mattn_last_error());
    train_ctx c = {.B = 16, .T = 128};
    mattn_adamw_config oc = mattn_adamw_config_default();
    if (mattn_model_init(&cfg, &c.m) != MATTN_OK || mattn_adamw_init(c.m, &oc, &c.o) != MATTN_OK)
        return cli_fail(1, "bench: %s", mattn_last_error());
    c.idx = malloc(sizeof(int32_t) * c.B * c.T), c.tgt = malloc(sizeof(int32_t) * c.B * c.T);
    if (!c.idx || !c.tgt) return cli_fail(1, "bench: out of memory");
    mattn_rng r;
    mattn_rng_seed(&r, 9);
    for (int i = 0; i < c.B * c.T; i++) c.idx[i] = (int32_t)(mattn_rng_next(&r) % 96 + 32);
    for (int i = 0; i < c.B * c.T; i++) c.tgt[i] = i + 1 < c.B * c.T ? c.idx[i + 1] : 32;
    mattn_model_set_training(c.m, 1);
    fprintf(b->tab, "training: the README's tiny model (4 layers, D=128, batch %d x context %d)\n", c.B, c.T);
    double t = best_time(b, run_train, &c);
    int rc = t < 0;
    if (!rc) report(b, "train", "training step (fwd+bwd+AdamW)", t, 0, "tokens_per_s", c.B * c.T / t);
    gen_ctx g = {.m = c.m, .n = b->quick ? 64 : 256, .logits = malloc(256 * sizeof(float))};
    mattn_model_set_training(c.m, 0);
    if (!rc && (!g.logits || mattn_model_cache_init(c.m, 1, &g.c) != MATTN_OK))
        rc = cli_fail(1, "bench: decode cache: %s", mattn_last_error());
    if (!rc) {
        t = best_time(b, run_generate, &g);
        rc = t < 0;
        char name[64];
        snprintf(name, sizeof name, "generate %d tokens (decode cache)", g.n);
        if (!rc) report(b, "train", name, t, 0, "tokens_per_s", g.n / t);
    }
    mattn_model_cache_free(g.c), free(g.logits);
    free(c.idx), free(c.tgt), mattn_adamw_free(c.o), mattn_model_free(c.m);
    return rc;
}

// ----------------------------------------------------------------------------

static double cpu_mhz(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    double mhz = 0.0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "cpu MHz", 7) && strchr(line, ':')) { mhz = atof(strchr(line, ':') + 1); break; }
    if (f) fclose(f);
    return mhz;
}

int cmd_bench(int argc, char **argv) {
    const char *only = "sgemm,kernels,layer,hard,decode,train", *json = NULL;
    bench b = {.min_time = 1.0, .tab = stdout};
    long long threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_bench, stdout); return 0; }
        if (!strcmp(a, "--quick")) { b.quick = 1; b.min_time = 0.2; continue; }
        if (!v) return cli_fail(EXIT_USAGE, "bench: unknown option or missing value: '%s' (see --help)", a);
        if (!strcmp(a, "--only")) only = v;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--min-time")) { if (cli_double("--min-time", v, 0.0, 3600.0, &b.min_time)) return EXIT_USAGE; }
        else if (!strcmp(a, "--threads")) { if (cli_int("--threads", v, 1, 1024, &threads)) return EXIT_USAGE; }
        else return cli_fail(EXIT_USAGE, "bench: unknown option '%s' (see --help)", a);
        i++;
    }
    static const char *groups[] = {"sgemm", "kernels", "layer", "hard", "decode", "train", "long"};
    char list[256];
    snprintf(list, sizeof list, "%s", only);
    int want[7] = {0};
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int found = 0;
        for (int g = 0; g < 7; g++)
            if (!strcmp(tok, groups[g])) want[g] = found = 1;
        if (!found)
            return cli_fail(EXIT_USAGE, "--only: unknown group '%s' (sgemm, kernels, layer, hard, decode, train, long)", tok);
    }
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
#ifdef _OPENMP
    if (threads) omp_set_num_threads((int)threads);
    const int nthreads = omp_get_max_threads();
#else
    const int nthreads = 1;
#endif
    if (json) {
        if (!strcmp(json, "-")) b.js = stdout, b.tab = stderr;
        else if (!(b.js = fopen(json, "w"))) return cli_fail(1, "--json: cannot write '%s'", json);
    }
    const double mhz = cpu_mhz();
    fprintf(b.tab, "metaattn bench: %d threads, %.0f MHz (fp32 peak %.0f GFLOP/s at 32 FLOP/cycle/core), %d-byte vectors\n",
            nthreads, mhz, 32.0 * nthreads * mhz * 1e-3, MATTN_VBYTES);
    if (b.js)
        fprintf(b.js, "{\"threads\": %d, \"cpu_mhz\": %.1f, \"vector_bytes\": %d, \"quick\": %d, \"results\": [", nthreads,
                mhz, MATTN_VBYTES, b.quick);
    int rc = 0;
    if (!rc && (want[0] || want[1] || want[2])) rc = bench_sgemm(&b);
    if (!rc && want[1]) rc = bench_kernels(&b);
    if (!rc && want[2]) rc = bench_layer_soft(&b);
    const double sgemm = b.sgemm;
    b.sgemm = 0.0; /* the groups below are ratios among themselves: no "% sgemm" column */
    if (!rc && want[3]) rc = bench_hard(&b);
    if (!rc && want[4]) rc = bench_decode(&b);
    if (!rc && want[5]) rc = bench_train(&b);
    if (!rc && want[6]) rc = bench_long(&b);
    mattn_afree(b.gemm.A), mattn_afree(b.gemm.B), mattn_afree(b.gemm.C);
    if (b.js) {
        fprintf(b.js, "\n  ], \"sgemm_gflops\": %.6g}\n", sgemm);
        if (b.js != stdout) fclose(b.js);
    }
    return rc;
}
