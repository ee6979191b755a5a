/*
 * test_kernels.c — the production kernels against their plain references on
 * odd shapes (T = 1, 7, 65, 130; dh not a multiple of the SIMD width), every
 * mask and mode; causality; local with w >= T equals full; GEMM vs the
 * triple loop; the tiled softmax kernels on multi-tile ragged shapes, forward
 * and backward, bit-identical across thread counts (grouped-query heads and
 * KV caches: test_kernels_gqa.c).
 */
#include "test_util.h"
#include "kernels/simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// ---------------------------------------------------------------- GEMM
static void test_gemm(void **st) {
    (void)st;
    const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {17, 33, 65}, {64, 48, 96}, {130, 31, 17}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                float *A = falloc((size_t)M * K), *Bm = falloc((size_t)K * N);
                float *C = falloc((size_t)M * N), *R = falloc((size_t)M * N);
                fill_normal(A, (size_t)M * K, 1, 1.0);
                fill_normal(Bm, (size_t)K * N, 2, 1.0);
                fill_normal(C, (size_t)M * N, 3, 1.0);
                memcpy(R, C, sizeof(float) * M * N);
                int lda = tA ? M : K, ldb = tB ? K : N;
                mattn_gemm(tA, tB, M, N, K, 0.5f, A, lda, Bm, ldb, 0.25f, C, N);
                mattn_gemm_ref(tA, tB, M, N, K, 0.5f, A, lda, Bm, ldb, 0.25f, R, N);
                assert_close(C, R, (size_t)M * N, 1e-4 * sqrt(K), "gemm");
                free(A); free(Bm); free(C); free(R);
            }
}

// ---------------------------------------------------------------- attention
typedef struct {
    int B, T, H, dh;
    float *qkv, *out, *ref, *lse, *lse_ref;
    uint8_t *kp;
    float *add;
} case_t;

static void case_init(case_t *c, int B, int T, int H, int dh, uint64_t seed) {
    c->B = B; c->T = T; c->H = H; c->dh = dh;
    size_t N = (size_t)B * T, D = (size_t)H * dh;
    c->qkv = falloc(N * 3 * D);
    c->out = falloc(N * D);
    c->ref = falloc(N * D);
    c->lse = falloc((size_t)B * H * T);
    c->lse_ref = falloc((size_t)B * H * T);
    c->kp = malloc(N);
    c->add = falloc((size_t)B * T * T);
    fill_normal(c->qkv, N * 3 * D, seed, 1.0);
    for (size_t i = 0; i < N; i++) c->kp[i] = (i * 7919 + seed) % 5 != 0;
    fill_normal(c->add, (size_t)B * T * T, seed + 1, 0.5);
}

static void case_free(case_t *c) {
    free(c->qkv); free(c->out); free(c->ref); free(c->lse); free(c->lse_ref);
    free(c->kp); free(c->add);
}

static mattn_attn_args args(case_t *c, float *out, float *lse, int causal, int window,
                            const mattn_masks *m, const int32_t *rows, int64_t n) {
    int D = c->H * c->dh;
    mattn_attn_args a = {.B = c->B, .T = c->T, .H = c->H, .dh = c->dh, .q = c->qkv,
                         .k = c->qkv + D, .v = c->qkv + 2 * D, .ld = 3 * D, .out = out, .ldo = D,
                         .rows = rows, .n_rows = n, .masks = m, .causal = causal, .window = window,
                         .dropout = 0.0f, .dropout_key = 42, .lse = lse};
    set_attn_scratch(&a);
    return a;
}

static void test_softmax_vs_ref(void **st) {
    (void)st;
    const int T_list[] = {1, 7, 65, 130};
    for (size_t ti = 0; ti < 4; ti++)
        for (int causal = 0; causal < 2; causal++)
            for (int wi = 0; wi < 3; wi++)
                for (int mi = 0; mi < 4; mi++) {
                    const int T = T_list[ti], window = wi == 0 ? -1 : wi == 1 ? 3 : 1000;
                    case_t c;
                    case_init(&c, 2, T, 3, 5, 10 + ti);
                    mattn_masks m = {.key_padding = (mi & 1) ? c.kp : NULL,
                                     .additive = (mi & 2) ? c.add : NULL, .additive_batched = 1};
                    mattn_attn_args a = args(&c, c.out, c.lse, causal, window, mi ? &m : NULL, NULL, 0);
                    mattn_attn_args r = args(&c, c.ref, c.lse_ref, causal, window, mi ? &m : NULL, NULL, 0);
                    if (mi == 3) a.dropout = r.dropout = 0.25f;
                    double f1 = mattn_attn_softmax_forward(&a), f2 = mattn_attn_softmax_forward_ref(&r);
                    size_t n = (size_t)2 * T * 15;
                    assert_close(c.out, c.ref, n, 2e-5, "softmax vs ref");
                    for (size_t i = 0; i < (size_t)2 * 3 * T; i++)
                        if (isfinite(c.lse_ref[i])) assert_true(fabsf(c.lse[i] - c.lse_ref[i]) < 1e-4f);
                        else assert_true(c.lse[i] == -INFINITY);
                    assert_true(f1 == f2 && f1 > 0);
                    case_free(&c);
                }
}

static void test_softmax_rows_subset(void **st) {
    (void)st;
    case_t c;
    case_init(&c, 2, 65, 2, 7, 3);
    int32_t rows[] = {0, 5, 64, 65, 66, 100, 129};
    for (int causal = 0; causal < 2; causal++) {
        mattn_attn_args a = args(&c, c.out, NULL, causal, -1, NULL, NULL, 0);
        mattn_attn_softmax_forward(&a);
        memset(c.ref, 0, sizeof(float) * 2 * 65 * 14);
        mattn_attn_args r = args(&c, c.ref, NULL, causal, -1, NULL, rows, 7);
        mattn_attn_softmax_forward(&r);
        for (int i = 0; i < 7; i++)
            assert_close(c.ref + rows[i] * 14, c.out + rows[i] * 14, 14, 0, "rows subset == dense rows");
        /* FLOPs of the subset: visible keys of exactly these rows */
        double want = 0;
        for (int i = 0; i < 7; i++) want += causal ? rows[i] % 65 + 1 : 65;
        assert_true(mattn_attn_softmax_forward(&r) == want * 4 * 2 * 7);
    }
    case_free(&c);
}

static void test_local_wide_equals_full_and_causality(void **st) {
    (void)st;
    case_t c;
    case_init(&c, 1, 33, 2, 4, 5);
    for (int causal = 0; causal < 2; causal++) {
        mattn_attn_args full = args(&c, c.out, NULL, causal, -1, NULL, NULL, 0);
        mattn_attn_args local = args(&c, c.ref, NULL, causal, 33, NULL, NULL, 0);
        mattn_attn_softmax_forward(&full);
        mattn_attn_softmax_forward(&local);
        assert_close(c.out, c.ref, 33 * 8, 0, "local w >= T == full");
    }
    /* causal: changing tokens after t leaves rows <= t unchanged (all three cores) */
    for (int kind = 0; kind < 3; kind++) {
        mattn_attn_args a = args(&c, c.out, NULL, 1, kind == 1 ? 4 : -1, NULL, NULL, 0);
        kind == 2 ? mattn_attn_linear_forward(&a) : mattn_attn_softmax_forward(&a);
        float *before = falloc(33 * 8);
        memcpy(before, c.out, sizeof(float) * 33 * 8);
        for (int i = 20 * 24; i < 33 * 24; i++) c.qkv[i] += 1.0f; /* tokens 20.. */
        kind == 2 ? mattn_attn_linear_forward(&a) : mattn_attn_softmax_forward(&a);
        assert_close(c.out, before, 20 * 8, 0, "causal prefix unchanged");
        assert_true(max_abs_diff(c.out + 20 * 8, before + 20 * 8, 13 * 8, 1e30, "") > 0);
        free(before);
    }
    case_free(&c);
}

static void test_fully_masked_row_is_zero(void **st) {
    (void)st;
    case_t c;
    case_init(&c, 1, 4, 1, 3, 9);
    uint8_t kp[4] = {0, 0, 1, 1}; /* causal query 0 and 1 see only padding */
    mattn_masks m = {.key_padding = kp};
    mattn_attn_args a = args(&c, c.out, c.lse, 1, -1, &m, NULL, 0);
    mattn_attn_softmax_forward(&a);
    for (int i = 0; i < 6; i++) assert_true(c.out[i] == 0.0f);
    assert_true(c.lse[0] == -INFINITY && c.lse[1] == -INFINITY && isfinite(c.lse[2]));
    mattn_attn_linear_forward(&a);
    for (int i = 0; i < 6; i++) assert_true(c.out[i] == 0.0f);
    case_free(&c);
}


/* The tiled kernels on shapes that cut into several ragged tiles (T not a
 * multiple of the tile sizes, dh not a multiple of the vector width, windows
 * narrower and wider than a tile), forward and backward against the
 * references, and bit-identical results with 1 and 2 threads. */
static void run_tiled(int T, int dh, int causal, int window, int masks, float dropout, int sub) {
    case_t c;
    case_init(&c, 2, T, 2, dh, (uint64_t)T * 31 + (uint64_t)dh);
    const int D = 2 * dh;
    const size_t N = (size_t)2 * T;
    mattn_masks m = {.key_padding = c.kp, .additive = masks > 1 ? c.add : NULL, .additive_batched = 1};
    int32_t *rows = malloc(sizeof(int32_t) * N);
    int64_t n = 0;
    for (size_t i = 0; i < N; i++)
        if (!sub || (i * 2654435761u) % 4 == 0) rows[n++] = (int32_t)i;
    mattn_attn_args a = args(&c, c.out, c.lse, causal, window, masks ? &m : NULL, sub ? rows : NULL, n);
    mattn_attn_args r = args(&c, c.ref, c.lse_ref, causal, window, masks ? &m : NULL, sub ? rows : NULL, n);
    a.dropout = r.dropout = dropout;
    char what[128];
    snprintf(what, sizeof what, "tiled T=%d dh=%d causal=%d window=%d masks=%d dropout=%.1f sub=%d", T, dh,
             causal, window, masks, (double)dropout, sub);
    assert_true(mattn_attn_softmax_forward(&a) == mattn_attn_softmax_forward_ref(&r));
    for (int64_t i = 0; i < n; i++) {
        int tok = rows[i];
        assert_close(c.out + (size_t)tok * D, c.ref + (size_t)tok * D, (size_t)D, 2e-5, what);
        for (int h = 0; h < 2; h++) {
            size_t li = ((size_t)(tok / T) * 2 + h) * T + tok % T;
            if (isfinite(c.lse_ref[li])) assert_true(fabsf(c.lse[li] - c.lse_ref[li]) < 1e-4f);
            else assert_true(c.lse[li] == -INFINITY);
        }
    }
#ifdef _OPENMP
    float *one = falloc(N * D);
    memcpy(one, c.out, sizeof(float) * N * D);
    omp_set_num_threads(1);
    mattn_attn_softmax_forward(&a);
    omp_set_num_threads(2);
    assert_memory_equal(one, c.out, sizeof(float) * N * D);
    free(one);
#endif
    if (!sub) {
        float *go = falloc(N * D), *g = falloc(N * 3 * D), *gr = falloc(N * 3 * D);
        fill_normal(go, N * D, 77, 1.0);
        mattn_attn_grad gg = {.gout = go, .ldgo = D, .gq = g, .gk = g + D, .gv = g + 2 * D, .ldg = 3 * D};
        mattn_attn_grad gref = gg;
        gref.gq = gr, gref.gk = gr + D, gref.gv = gr + 2 * D;
        mattn_attn_softmax_backward(&a, &gg);
        mattn_attn_softmax_backward_ref(&a, &gref);
        assert_close(g, gr, N * 3 * D, 1e-4, what);
#ifdef _OPENMP
        float *g1 = falloc(N * 3 * D);
        omp_set_num_threads(1);
        mattn_attn_softmax_backward(&a, &(mattn_attn_grad){.gout = go, .ldgo = D, .gq = g1, .gk = g1 + D,
                                                           .gv = g1 + 2 * D, .ldg = 3 * D});
        omp_set_num_threads(2);
        memset(g, 0, sizeof(float) * N * 3 * D);
        mattn_attn_softmax_backward(&a, &gg);
        assert_memory_equal(g1, g, sizeof(float) * N * 3 * D);
        free(g1);
#endif
        free(go); free(g); free(gr);
    }
    free(rows);
    case_free(&c);
}

static void test_tiled_shapes(void **st) {
    (void)st;
    const int Ts[] = {50, 130, 200}, dhs[] = {5, 20, 64}, windows[] = {-1, 16, 64};
    for (int ti = 0; ti < 3; ti++)
        for (int di = 0; di < 3; di++)
            for (int causal = 0; causal < 2; causal++)
                for (int wi = 0; wi < 3; wi++)
                    for (int sub = 0; sub < 2; sub++) run_tiled(Ts[ti], dhs[di], causal, windows[wi], 0, 0.0f, sub);
    run_tiled(130, 20, 1, -1, 2, 0.0f, 0);
    run_tiled(130, 20, 0, 16, 2, 0.0f, 1);
    run_tiled(130, 64, 1, -1, 1, 0.2f, 0);
    run_tiled(200, 64, 0, 64, 2, 0.2f, 0);
}


/* The chunked linear kernels on several chunks (T past the chunk length,
 * ragged), forward and backward against the quadratic references, key
 * padding, 1 vs 2 threads bit-identical. */
static void run_linear_chunked(int T, int dh, int causal, int masks) {
    case_t c;
    case_init(&c, 2, T, 2, dh, (uint64_t)T * 7 + (uint64_t)dh);
    const int D = 2 * dh;
    const size_t N = (size_t)2 * T;
    mattn_masks m = {.key_padding = c.kp};
    mattn_attn_args a = args(&c, c.out, NULL, causal, -1, masks ? &m : NULL, NULL, 0);
    mattn_attn_args r = args(&c, c.ref, NULL, causal, -1, masks ? &m : NULL, NULL, 0);
    char what[96];
    snprintf(what, sizeof what, "linear T=%d dh=%d causal=%d masks=%d", T, dh, causal, masks);
    assert_true(mattn_attn_linear_forward(&a) > 0);
    mattn_attn_linear_forward_ref(&r);
    assert_close(c.out, c.ref, N * D, 2e-5, what);
    float *go = falloc(N * D), *g = falloc(N * 3 * D), *gr = falloc(N * 3 * D);
    float *st = falloc(mattn_attn_linear_backward_scratch(2, T, 2, dh) / sizeof(float));
    fill_normal(go, N * D, 78, 1.0);
    mattn_attn_grad gg = {.gout = go, .ldgo = D, .gq = g, .gk = g + D, .gv = g + 2 * D, .ldg = 3 * D, .state = st};
    mattn_attn_grad gref = gg;
    gref.gq = gr, gref.gk = gr + D, gref.gv = gr + 2 * D;
    assert_int_equal(mattn_attn_linear_backward(&a, &gg), 0);
    mattn_attn_linear_backward_ref(&a, &gref);
    assert_close(g, gr, N * 3 * D, 1e-4, what);
#ifdef _OPENMP
    float *g1 = falloc(N * 3 * D);
    omp_set_num_threads(1);
    mattn_attn_grad g1a = gg;
    g1a.gq = g1, g1a.gk = g1 + D, g1a.gv = g1 + 2 * D;
    mattn_attn_linear_backward(&a, &g1a);
    omp_set_num_threads(2);
    assert_memory_equal(g1, g, sizeof(float) * N * 3 * D);
    free(g1);
#endif
    free(go); free(g); free(gr); free(st);
    case_free(&c);
}

static void test_linear_chunked(void **st) {
    (void)st;
    const int Ts[] = {50, 130, 200}, dhs[] = {5, 20, 64};
    for (int ti = 0; ti < 3; ti++)
        for (int di = 0; di < 3; di++)
            for (int causal = 0; causal < 2; causal++)
                for (int masks = 0; masks < 2; masks++) run_linear_chunked(Ts[ti], dhs[di], causal, masks);
}

static void test_linear_vs_ref(void **st) {
    (void)st;
    const int T_list[] = {1, 7, 65, 130};
    int32_t rows[] = {0, 3, 6, 7, 100, 129};
    for (size_t ti = 0; ti < 4; ti++)
        for (int causal = 0; causal < 2; causal++)
            for (int mi = 0; mi < 3; mi++) {
                const int T = T_list[ti];
                case_t c;
                case_init(&c, 2, T, 3, 5, 20 + ti);
                mattn_masks m = {.key_padding = c.kp};
                int sub = mi == 2;
                int64_t n = 0;
                for (int i = 0; sub && i < 6; i++) n += rows[i] < 2 * T;
                mattn_attn_args a = args(&c, c.out, NULL, causal, -1, mi ? &m : NULL, sub ? rows : NULL, n);
                mattn_attn_args r = args(&c, c.ref, NULL, causal, -1, mi ? &m : NULL, sub ? rows : NULL, n);
                mattn_attn_linear_forward(&a);
                mattn_attn_linear_forward_ref(&r);
                assert_close(c.out, c.ref, (size_t)2 * T * 15, 2e-5, "linear vs ref");
                case_free(&c);
            }
}

// ---------------------------------------------------------------- decoding
static void fill(float *x, size_t n, uint64_t seed, float scale) {
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * mattn_rng_normal(&r));
}

/* One query against a flat or ring cache, odd head sizes, windows that start
 * past 0, a single key. */
static void test_softmax_decode_vs_ref(void **st) {
    (void)st;
    const int dhs[] = {1, 5, 16, 33, 64}, Hs[] = {1, 3};
    for (int di = 0; di < 5; di++)
        for (int hi_ = 0; hi_ < 2; hi_++)
            for (int ring = 0; ring <= 9; ring += 9) {
                const int dh = dhs[di], H = Hs[hi_], D = H * dh, cap = 150;
                float *K = malloc(sizeof(float) * cap * D), *V = malloc(sizeof(float) * cap * D);
                float q[3 * 64], o[3 * 64], r[3 * 64];
                fill(K, (size_t)cap * D, 11 + di, 1.0f);
                fill(V, (size_t)cap * D, 12 + di, 1.0f);
                fill(q, (size_t)D, 13 + di, 1.0f);
                const int spans[][2] = {{0, 0}, {0, 6}, {3, 70}, {0, 149}, {141, 149}};
                for (int si = 0; si < 5; si++) {
                    int lo = spans[si][0], hi = spans[si][1];
                    if (ring && hi - lo + 1 > ring) lo = hi - ring + 1;
                    const double f = mattn_attn_softmax_decode(q, K, V, D, H, dh, lo, hi, ring, o);
                    const double fr = mattn_attn_softmax_decode_ref(q, K, V, D, H, dh, lo, hi, ring, r);
                    assert_true(f == fr);
                    assert_close(o, r, (size_t)D, 2e-5, "softmax decode vs ref");
                }
                free(K);
                free(V);
            }
}

static void test_linear_decode_vs_ref(void **st) {
    (void)st;
    const int dhs[] = {1, 7, 16, 40}, H = 3;
    for (int di = 0; di < 4; di++) {
        const int dh = dhs[di], D = H * dh;
        const size_t ns = (size_t)H * ((size_t)dh * dh + dh);
        float *S = calloc(ns, sizeof(float)), *Sr = calloc(ns, sizeof(float));
        float k[3 * 40], v[3 * 40], q[3 * 40], o[3 * 40], r[3 * 40];
        for (int t = 0; t < 20; t++) {
            fill(k, (size_t)D, 100 + t, 1.5f);
            fill(v, (size_t)D, 200 + t, 1.0f);
            fill(q, (size_t)D, 300 + t, 1.5f);
            assert_true(mattn_attn_linear_decode_update(S, k, v, H, dh) ==
                        mattn_attn_linear_decode_update_ref(Sr, k, v, H, dh));
            assert_close(S, Sr, ns, 1e-5, "linear state vs ref");
            mattn_attn_linear_decode_query(S, q, o, H, dh);
            mattn_attn_linear_decode_query_ref(Sr, q, r, H, dh);
            assert_close(o, r, (size_t)D, 2e-5, "linear decode query vs ref");
        }
        free(S);
        free(Sr);
    }
}

// ---------------------------------------------------------------- vector functions
/* The SIMD exp, erf-based GELU, its derivative and phi against libm in
 * double, over [-30, 30] (every lane, tails included). */
static void test_vector_functions_vs_libm(void **st) {
    (void)st;
    const int n = 6001 + 3; /* not a multiple of the vector width */
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *yr = malloc(sizeof(float) * n);
    float *g = malloc(sizeof(float) * n), *gr = malloc(sizeof(float) * n), *one = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) { x[i] = -30.0f + 60.0f * (float)i / (float)(n - 1); one[i] = 1.0f; }
    mattn_gelu_forward(y, x, n);
    mattn_gelu_forward_ref(yr, x, n);
    assert_close(y, yr, (size_t)n, 1e-5, "gelu vs erf");
    memset(g, 0, sizeof(float) * n);
    memset(gr, 0, sizeof(float) * n);
    mattn_gelu_backward(g, x, one, n);
    mattn_gelu_backward_ref(gr, x, one, n);
    assert_close(g, gr, (size_t)n, 1e-5, "gelu' vs erf");
    for (int i = 0; i + MATTN_VL <= n; i += MATTN_VL) {
        _Alignas(64) float e[MATTN_VL], p[MATTN_VL], xs[MATTN_VL];
        for (int j = 0; j < MATTN_VL; j++) xs[j] = 2.5f * x[i + j]; /* [-75, 75] */
        vstore(e, vexp(vload(xs)));
        vstore(p, vphi(vload(x + i)));
        for (int j = 0; j < MATTN_VL; j++) {
            const double xe = xs[j], re = exp(xe);
            assert_true(fabs(e[j] - re) <= 3e-7 * re); /* about 1 ulp */
            const double xp = x[i + j], rp = xp > 0 ? xp + 1.0 : exp(xp);
            assert_true(fabs(p[j] - rp) <= 4e-7 * rp + 1e-38);
        }
    }
    free(x); free(y); free(yr); free(g); free(gr); free(one);
}

/* The public build information reports what the kernels were compiled for. */
static void test_build_info(void **st) {
    (void)st;
    mattn_build_info b;
    assert_int_equal(mattn_build_info_get(&b), MATTN_OK);
    assert_int_equal(b.vector_bytes, MATTN_VBYTES);
    assert_string_equal(b.gemm, mattn_gemm_backend());
#ifdef _OPENMP
    assert_int_equal(b.openmp, 1);
#endif
    assert_int_equal(mattn_build_info_get(NULL), MATTN_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_build_info),
        cmocka_unit_test(test_softmax_vs_ref),
        cmocka_unit_test(test_softmax_rows_subset),
        cmocka_unit_test(test_local_wide_equals_full_and_causality),
        cmocka_unit_test(test_fully_masked_row_is_zero),
        cmocka_unit_test(test_tiled_shapes),
        cmocka_unit_test(test_linear_vs_ref),
        cmocka_unit_test(test_linear_chunked),
        cmocka_unit_test(test_softmax_decode_vs_ref),
        cmocka_unit_test(test_linear_decode_vs_ref),
        cmocka_unit_test(test_vector_functions_vs_libm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
