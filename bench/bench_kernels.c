/*
 * bench_kernels.c — the kernel benchmarks (docs/performance.md): OpenBLAS
 * sgemm 2048^3 as the baseline, the attention kernels and the soft layer
 * forward, each as a percentage of an sgemm measured alternately with it.
 * It calls the library's internal kernels (src/), which `metaattn bench`,
 * a user of the public API, cannot; it shares that command's harness
 * (tools/bench_harness.c) and its options and JSON.
 *
 * FLOPs are executed work as the kernels count it (causal attention ~ 2 T^2 D
 * per forward; a softmax backward = 2.5 forwards, the five products of
 * FlashAttention-2's backward; a linear backward 2 forwards).
 *
 *   build/bench_kernels [--only sgemm,kernels,layer] [--quick] [--min-time S] [--threads N] [--json FILE]
 */
#include <stdlib.h>
#include <string.h>

#include "../tools/bench_harness.h"
#include "../tools/cli.h"
#include "kernels/kernels.h"

static const char *usage =
    "usage: bench_kernels [--only LIST] [--quick] [--min-time S] [--threads N] [--json FILE]\n"
    "\n"
    "Measures metaattn's attention kernels and soft layer forward on this machine as\n"
    "percentages of OpenBLAS sgemm (2048^3) measured alternately with each of them.\n"
    "\n"
    "  --only LIST    comma-separated groups: sgemm, kernels, layer (default: all);\n"
    "                 the sgemm baseline is measured and reported in any case\n"
    "  --quick        smaller shapes (T/4) and --min-time 0.2, for a smoke run\n"
    "  --min-time S   seconds each case repeats for (default 1.0)\n"
    "  --threads N    OpenMP threads (default: all cores)\n"
    "  --json FILE    also write the results as JSON ('-' = stdout, table to stderr)\n"
    "  -h, --help     show this help\n";

// ----------------------------------------------------------------------------
// sgemm baseline

typedef struct { int n; float *A, *B, *C; } gemm_ctx;
static gemm_ctx gemm;

static int run_gemm(void *p) {
    gemm_ctx *g = p;
    mattn_gemm(0, 0, g->n, g->n, g->n, 1.0f, g->A, g->n, g->B, g->n, 0.0f, g->C, g->n);
    return 0;
}

/* Measure and report the baseline; every later case is timed next to it. */
static int bench_sgemm(bench *b) {
    gemm_ctx g = {.n = 2048};
    const size_t n2 = (size_t)g.n * g.n;
    g.A = bench_randn(n2, 1, 1.0), g.B = bench_randn(n2, 2, 1.0), g.C = bench_floats(n2);
    gemm = g;
    if (!g.A || !g.B || !g.C) return cli_fail(1, "bench: out of memory for sgemm");
    double t = bench_best_time(b, run_gemm, &gemm), f = 2.0 * n2 * g.n;
    b->sgemm = f / t * 1e-9;
    b->base_fn = run_gemm, b->base_ctx = &gemm, b->base_flops = 2.0 * g.n * (double)g.n * g.n;
    fprintf(b->tab, "sgemm baseline (mattn_gemm: %s)\n", mattn_gemm_backend());
    bench_report(b, "sgemm", "sgemm 2048^3", t, f, NULL, 0);
    return 0;
}

static void free_sgemm(bench *b) {
    (void)b;
    free(gemm.A), free(gemm.B), free(gemm.C);
}

static int group_sgemm(bench *b) {
    (void)b; /* measured before every group (bench_sgemm): nothing more */
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
    float *qkv = bench_randn((size_t)T * 3 * D, 3, 1.0), *out = bench_floats((size_t)T * D);
    float *lse = bench_floats((size_t)H * T), *go = bench_randn((size_t)T * D, 4, 1.0);
    float *g = bench_floats((size_t)T * 3 * D);
    float *state = bench_floats(mattn_attn_linear_backward_scratch(1, T, H, dh) / sizeof(float) + 1);
    /* the cores' per-thread scratch (kernels never allocate) */
    size_t ns = mattn_attn_softmax_scratch(T, dh, 0, mattn_max_threads()), n2;
    if ((n2 = mattn_attn_softmax_scratch(T, dh, 1, mattn_max_threads())) > ns) ns = n2;
    if ((n2 = mattn_attn_linear_scratch(0, mattn_max_threads())) > ns) ns = n2;
    if ((n2 = mattn_attn_linear_scratch(1, mattn_max_threads())) > ns) ns = n2;
    float *scr = bench_floats(ns / sizeof(float) + 1);
    if (!qkv || !out || !lse || !go || !g || !state || !scr) return cli_fail(1, "bench: out of memory for kernels");
    static const struct { const char *name; int linear, causal, window; } cases[] = {
        {"full causal", 0, 1, -1}, {"full bidirectional", 0, 0, -1},
        {"local causal w=64", 0, 1, 64}, {"linear causal", 1, 1, -1}};
    int rc = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0] && !rc; c++) {
        kern_ctx k = {.a = {.B = 1, .T = T, .H = H, .dh = dh, .q = qkv, .k = qkv + D, .v = qkv + 2 * D,
                            .ld = 3 * D, .out = out, .ldo = D, .causal = cases[c].causal,
                            .window = cases[c].window, .lse = lse, .scratch = scr,
                            .scratch_bytes = ns / sizeof(float) * sizeof(float)},
                      .g = {.gout = go, .ldgo = D, .gq = g, .gk = g + D, .gv = g + 2 * D, .ldg = 3 * D,
                            .state = state},
                      .linear = cases[c].linear};
        char name[96];
        double t = bench_timed(b, run_kernel, &k);
        const double ff = k.flops;
        snprintf(name, sizeof name, "%s forward", cases[c].name);
        if ((rc = t < 0)) break;
        bench_report(b, "kernels", name, t, ff, NULL, 0);
        if (cases[c].linear || cases[c].causal) {
            run_kernel(&k); /* out and lse for the backward */
            k.backward = 1;
            t = bench_timed(b, run_kernel, &k);
            snprintf(name, sizeof name, "%s backward", cases[c].name);
            if (!(rc = t < 0)) bench_report(b, "kernels", name, t, (cases[c].linear ? 2.0 : 2.5) * ff, NULL, 0);
        }
    }
    free(qkv), free(out), free(lse), free(go), free(g), free(state), free(scr);
    return rc;
}

// ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    static const bench_group groups[] = {
        {"sgemm", group_sgemm, 1}, {"kernels", bench_kernels, 1}, {"layer", bench_layer_soft, 1}};
    const bench_program p = {
        .cmd = NULL, .title = "bench_kernels", .usage = usage, .groups = groups, .n_groups = 3,
        .setup = bench_sgemm, .teardown = free_sgemm};
    cli_prog = "bench_kernels";
    return bench_main(&p, argc - 1, argv + 1);
}
