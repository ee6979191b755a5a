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
 * The "quant" group (not run by default: `--only quant`) times the products
 * with GGUF weights (src/kernels/quant.h) on SmolLM2-135M's shapes, at 1 and
 * 2 threads whatever --threads says: GEMV (M = 1) as GB/s of weight bytes
 * and as a fraction of the memory bandwidth measured in the same run (a
 * streaming sum over 1 GiB, more than this host's last-level cache), one
 * decoding step's 211 distinct matrices in a row (the model's 96 MB), and
 * GEMM (M = 64) as GFLOP/s and % of an sgemm measured alternately with it.
 *
 * The "kvdecode" group (not by default either) times the decode step's
 * attention alone over a SmolLM2-shaped cache of 4096 positions in its
 * three layouts (bench_kvdecode).
 *
 *   build/bench_kernels [--only sgemm,kernels,layer,quant,kvdecode] [--quick] [--min-time S] [--threads N]
 *                       [--json FILE]
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
    "  --only LIST    comma-separated groups: sgemm, kernels, layer, quant, kvdecode\n"
    "                 (default: all but quant and kvdecode);\n"
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
// quantised weights (quant.h): GEMV against the memory bandwidth, GEMM
// against sgemm, threads 1 and 2

typedef struct { const float *a; size_t n; double sum; } stream_ctx;

static int run_stream(void *p) { /* read n floats once: 16 partial sums per thread */
    stream_ctx *c = p;
    double total = 0.0;
    #pragma omp parallel reduction(+ : total)
    {
        float acc[16] = {0};
        #pragma omp for schedule(static)
        for (size_t i = 0; i < c->n; i += 16)
            for (int j = 0; j < 16; j++) acc[j] += c->a[i + j];
        for (int j = 0; j < 16; j++) total += acc[j];
    }
    c->sum = total;
    return 0;
}

typedef struct {
    mattn_ggml_type t;
    int M, N, K, n_mats;
    const uint8_t *const *W; /* n_mats matrices, run in a row */
    const int *Ns, *Ks;      /* per matrix, or NULL: all N x K */
    const float *x;
    float *y;
    void *scr;
    size_t sb;
} qm_ctx;

static int run_qm(void *p) {
    qm_ctx *c = p;
    for (int i = 0; i < c->n_mats; i++)
        if (mattn_qmatmul(c->y, c->x, c->W[i], c->t, c->M, c->Ns ? c->Ns[i] : c->N, c->Ks ? c->Ks[i] : c->K,
                          c->scr, c->sb))
            return cli_fail(1, "bench: mattn_qmatmul failed");
    return 0;
}

/* N rows of K random weights of type t (finite scales, values in [-1, 1]). */
static uint8_t *qm_weights(mattn_ggml_type t, int N, int K, uint64_t seed) {
    const size_t nb = mattn_qmatmul_row_bytes(t, K) * (size_t)N, n = (size_t)N * K;
    uint8_t *W = (uint8_t *)bench_floats(nb / 4 + 1);
    if (!W) return NULL;
    if (t == MATTN_GGML_F32) {
        float *f = bench_randn(n, seed, 0.5);
        if (f) memcpy(W, f, nb), free(f);
        return W;
    }
    for (size_t i = 0; i < nb; i++) W[i] = (uint8_t)(bench_rand(&seed) >> 56);
    const size_t bb = mattn_gguf_block_bytes(t);
    for (size_t i = 0; i < nb; i += bb) /* f16 scale / value high bytes 0x20 or 0xa0: finite, normal */
        W[i + 1] = (W[i + 1] & 0x80) | 0x20;
    if (t == MATTN_GGML_Q4_1)
        for (size_t i = 0; i < nb; i += bb) W[i + 3] = (W[i + 3] & 0x80) | 0x20;
    if (t == MATTN_GGML_BF16)
        for (size_t i = 0; i < nb; i += 2) W[i + 1] = (W[i + 1] & 0x80) | 0x3c; /* |v| in [2^-7, 2^-6) */
    return W;
}

static const mattn_ggml_type qm_types[] = {MATTN_GGML_F32, MATTN_GGML_F16, MATTN_GGML_BF16,
                                           MATTN_GGML_Q8_0, MATTN_GGML_Q4_0, MATTN_GGML_Q4_1};
static const int qm_shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}}; /* N x K */

/* One decoding step's matrices, each distinct: 30 layers of q, k, v, o (576,
 * 192, 192, 576 x 576), gate, up (1536 x 576), down (576 x 1536) in Q4_1, and
 * the Q8_0 output head (49152 x 576): 96 MB. */
static int bench_decode_sweep(bench *b, const float *x, float *y, void *scr, size_t sb, double bw) {
    enum { L = 30, PER = 7, NM = L * PER + 1 };
    static const int lN[PER] = {576, 192, 192, 576, 1536, 1536, 576}, lK[PER] = {576, 576, 576, 576, 576, 576, 1536};
    uint8_t *W[NM];
    int Ns[NM], Ks[NM], rc = 0;
    double bytes = 0;
    for (int m = 0; m < NM; m++) {
        const int head = m == NM - 1;
        Ns[m] = head ? 49152 : lN[m % PER], Ks[m] = head ? 576 : lK[m % PER];
        const mattn_ggml_type t = head ? MATTN_GGML_Q8_0 : MATTN_GGML_Q4_1;
        W[m] = qm_weights(t, Ns[m], Ks[m], 100 + (uint64_t)m);
        bytes += (double)mattn_qmatmul_row_bytes(t, Ks[m]) * Ns[m];
        rc |= !W[m];
    }
    /* the matrices of a step differ in type: run them as two calls of run_qm */
    qm_ctx layers = {.t = MATTN_GGML_Q4_1, .M = 1, .n_mats = NM - 1, .W = (const uint8_t *const *)W, .Ns = Ns,
                     .Ks = Ks, .x = x, .y = y, .scr = scr, .sb = sb};
    qm_ctx head = {.t = MATTN_GGML_Q8_0, .M = 1, .N = 49152, .K = 576, .n_mats = 1,
                   .W = (const uint8_t *const *)W + NM - 1, .x = x, .y = y, .scr = scr, .sb = sb};
    double tl = 0, th = 0;
    if (!rc) {
        tl = bench_best_time(b, run_qm, &layers), th = bench_best_time(b, run_qm, &head);
        rc = tl < 0 || th < 0;
    }
    if (!rc) {
        char name[96];
        snprintf(name, sizeof name, "decode step: 210 Q4_1 + head Q8_0, %.0f MB", bytes * 1e-6);
        bench_report(b, "quant", name, tl + th, 0, "GB/s", bytes / (tl + th) * 1e-9);
        fprintf(b->tab, "  %-44s %10.2f of the measured bandwidth\n", "", bytes / (tl + th) * 1e-9 / bw);
    }
    for (int m = 0; m < NM; m++) free(W[m]);
    return rc ? cli_fail(1, "bench: decode sweep failed") : 0;
}

static int bench_quant(bench *b) {
    const int nthreads = mattn_max_threads();
    stream_ctx sc = {.n = (size_t)1 << 28}; /* 1 GiB of floats */
    float *big = bench_randn(sc.n, 9, 1.0);
    const int Mg = 64, Kmax = 1536, Nmax = 49152;
    float *x = bench_randn((size_t)Mg * Kmax, 10, 1.0), *y = bench_floats((size_t)Mg * Nmax);
    const size_t sb = mattn_qmatmul_scratch(MATTN_GGML_F32, Mg, Kmax, 2) + mattn_qmatmul_scratch(MATTN_GGML_Q8_0, Mg, Kmax, 2);
    void *scr = mattn_amalloc(sb);
    if (!big || !x || !y || !scr) return cli_fail(1, "bench: out of memory for quant");
    sc.a = big;
    int rc = 0;
    for (int th = 1; th <= 2 && !rc; th++) {
        cli_set_threads(th);
        const double ts = bench_best_time(b, run_stream, &sc), bw = sc.n * 4.0 / ts * 1e-9;
        fprintf(b->tab, "quantised weights, %d thread%s: memory bandwidth (streaming sum, 1 GiB) %.1f GB/s\n", th,
                th > 1 ? "s" : "", bw);
        bench_report(b, "quant", th > 1 ? "stream 1 GiB, 2 threads" : "stream 1 GiB, 1 thread", ts, 0, "GB/s", bw);
        for (size_t ti = 0; ti < sizeof qm_types / sizeof qm_types[0] && !rc; ti++)
            for (size_t si = 0; si < sizeof qm_shapes / sizeof qm_shapes[0] && !rc; si++) {
                const mattn_ggml_type t = qm_types[ti];
                const int N = qm_shapes[si][0], K = qm_shapes[si][1];
                uint8_t *W = qm_weights(t, N, K, 20 + ti * 4 + si);
                if (!W) { rc = cli_fail(1, "bench: out of memory for quant"); break; }
                const double wb = (double)mattn_qmatmul_row_bytes(t, K) * N;
                const uint8_t *Wl[1] = {W};
                qm_ctx c = {.t = t, .M = 1, .N = N, .K = K, .n_mats = 1, .W = Wl, .x = x, .y = y, .scr = scr, .sb = sb};
                char name[96];
                double tq = bench_best_time(b, run_qm, &c);
                snprintf(name, sizeof name, "%dT GEMV %-4s %5d x %-4d (%.2f MB)", th, mattn_gguf_type_name(t), N, K, wb * 1e-6);
                if ((rc = tq < 0)) break;
                b->sgemm = 0;
                bench_report(b, "quant", name, tq, 2.0 * N * K, "GB/s", wb / tq * 1e-9);
                fprintf(b->tab, "  %-44s %10.2f of the measured bandwidth\n", "", wb / tq * 1e-9 / bw);
                if (si != 3 || t == MATTN_GGML_Q8_0) { /* GEMM: the head in prefill only for Q8_0 */
                    c.M = Mg;
                    tq = bench_timed(b, run_qm, &c);
                    snprintf(name, sizeof name, "%dT GEMM %-4s M=%d %5d x %-4d", th, mattn_gguf_type_name(t), Mg, N, K);
                    if (!(rc = tq < 0)) bench_report(b, "quant", name, tq, 2.0 * Mg * N * K, NULL, 0);
                }
                free(W);
            }
        if (!rc) rc = bench_decode_sweep(b, x, y, scr, sb, bw);
    }
    cli_set_threads(nthreads);
    free(big), free(x), free(y), mattn_afree(scr);
    return rc;
}

// ----------------------------------------------------------------------------
// the decode step over a LLaMA-style cache (group "kvdecode", not by default)

/* One decode step's attention: 30 layers x 4096 keys of SmolLM2's heads (9
 * query heads on 3 K/V heads of 64), the cache as rows of all heads (fp32),
 * head by head (fp32) and head by head in halves (the LLaMA decoder's
 * default), each layer's K and V its own memory (cap 8192 positions); then
 * in halves a step at 8064 as the original model takes it (every key) and
 * as a routed local token does (4 sinks + the 1253 keys of the window that
 * surgery-w512-d1-8192 uses): GB/s of the two is the short streams' cost. */
typedef struct { const void *K, *V; int f16, heads; const float *q; float *o; int sinks, lo, hi; } kvd_ctx;
enum { KVD_L = 30, KVD_N = 4096, KVD_CAP = 8192, KVD_H = 9, KVD_G = 3, KVD_DH = 64 };

static int run_kvd(void *p) {
    const kvd_ctx *c = p;
    const int64_t dkv = (int64_t)KVD_H / KVD_G * KVD_DH, per = (int64_t)KVD_CAP * dkv, es = c->f16 ? 2 : 4;
    for (int l = 0; l < KVD_L; l++) {
        const mattn_kv kv = {(const char *)c->K + l * per * es, (const char *)c->V + l * per * es,
                             c->heads ? KVD_DH : dkv, c->heads ? (int64_t)KVD_CAP * KVD_DH : KVD_DH, c->f16};
        mattn_attn_softmax_decode_kv(c->q, &kv, KVD_H, KVD_G, KVD_DH, c->sinks, c->lo, c->hi, 0, c->o);
    }
    return 0;
}

static int bench_kvdecode(bench *b) {
    const size_t n = (size_t)KVD_L * KVD_CAP * (KVD_H / KVD_G) * KVD_DH;
    float *K = bench_randn(n, 11, 1.0), *V = bench_randn(n, 12, 1.0), *q = bench_randn(KVD_H * KVD_DH, 13, 0.1);
    float *o = bench_floats(KVD_H * KVD_DH);
    uint16_t *Kh = malloc(n * 2), *Vh = malloc(n * 2);
    if (!K || !V || !q || !o || !Kh || !Vh) return cli_fail(1, "bench: out of memory for kvdecode");
    for (size_t i = 0; i < n; i++) Kh[i] = mattn_f32_to_f16(K[i]), Vh[i] = mattn_f32_to_f16(V[i]);
    const int N = KVD_N - 1, at = 8063, lo = at - 1252;
    const kvd_ctx cases[5] = {{K, V, 0, 0, q, o, 0, 0, N},       {K, V, 0, 1, q, o, 0, 0, N},
                              {Kh, Vh, 1, 1, q, o, 0, 0, N},     {Kh, Vh, 1, 1, q, o, 0, 0, at},
                              {Kh, Vh, 1, 1, q, o, 4, lo, at}};
    static const char *names[5] = {"30 x 4096 keys, fp32 rows of all heads", "30 x 4096 keys, fp32 head by head",
                                   "30 x 4096 keys, f16 head by head", "30 x 8064 keys, f16 (full at 8064)",
                                   "30 x 4+1253 keys, f16 (local at 8064)"};
    int rc = 0;
    for (int i = 0; i < 5 && !rc; i++) {
        const double t = bench_best_time(b, run_kvd, (void *)&cases[i]);
        const int keys = cases[i].hi - cases[i].lo + 1 + cases[i].sinks;
        const double bytes = 2.0 * KVD_L * keys * (KVD_H / KVD_G) * KVD_DH * (cases[i].f16 ? 2 : 4);
        if (!(rc = t < 0)) {
            b->sgemm = 0;
            bench_report(b, "kvdecode", names[i], t, 4.0 * KVD_L * keys * KVD_H * KVD_DH, "GB/s", bytes / t * 1e-9);
        }
    }
    free(K), free(V), free(q), free(o), free(Kh), free(Vh);
    return rc;
}

// ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    static const bench_group groups[] = {
        {"sgemm", group_sgemm, 1}, {"kernels", bench_kernels, 1}, {"layer", bench_layer_soft, 1},
        {"quant", bench_quant, 0}, {"kvdecode", bench_kvdecode, 0}};
    const bench_program p = {
        .cmd = NULL, .title = "bench_kernels", .usage = usage, .groups = groups, .n_groups = 5,
        .setup = bench_sgemm, .teardown = free_sgemm};
    cli_prog = "bench_kernels";
    return bench_main(&p, argc - 1, argv + 1);
}
