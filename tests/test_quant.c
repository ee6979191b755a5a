/*
 * test_quant.c — the quantised products (src/kernels/quant.c) against their
 * reference: random weights written in every format by small C quantisers
 * that follow ggml's quantize_row_*_ref (checked byte for byte against the
 * gguf package's, tests/fixtures/quant_ref.gguf), and random block bytes
 * (every nibble and int8 value, -128 too; shapes with M <= 5); ragged shapes; the error bound
 * of quant.h, with 8-bit and with fp32 activations (mattn_qmatmul_f32x);
 * bit-identical outputs across runs and thread counts; several matrices of
 * one x in one call (mattn_qmatmul_n) = their own calls; the -1
 * cases; simd.h's half loads (every half) and 8-bit dot product (every
 * byte pair).  `test_quant --model` (ctest quant_model, label model) runs a real
 * Q4_1 matrix and the Q8_0 token embedding of SmolLM2-135M-Instruct
 * (models/ or $METAATTN_GGUF_MODEL; exit 77 = skipped when absent).
 */
#include "test_util.h"

#include <unistd.h>

#include "io/io.h"
#include "kernels/kernels.h"
#include "kernels/simd.h"

/* 32-byte vectors pass between static inline functions only (simd.h) */
#pragma GCC diagnostic ignored "-Wpsabi"

#ifdef _OPENMP
#include <omp.h>
#endif

static const mattn_ggml_type all_types[] = {MATTN_GGML_F32, MATTN_GGML_F16, MATTN_GGML_BF16,
                                            MATTN_GGML_Q8_0, MATTN_GGML_Q4_0, MATTN_GGML_Q4_1};
#define N_TYPES 6

// ---------------------------------------------------------------- quantisers (ggml's *_ref)

/* A float rounded through a store: keeps x * id + 0.5f from being fused
 * into one FMA (-ffp-contract=fast), which ggml's and numpy's code is not. */
static float rnd(float x) {
    volatile float v = x;
    return v;
}

static uint16_t f2h(float f) {
    _Float16 h = (_Float16)f; /* round to nearest even, as numpy's astype(float16) and ggml */
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

static uint16_t f2bf(float f) { /* ggml_compute_fp32_to_bf16 */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

/* n uniform values of standard deviation std (SplitMix64; the normal
 * sampler's cos and log would dominate the test's time). */
static void fill_uniform(float *x, size_t n, uint64_t seed, double std) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = (z += 0x9E3779B97F4A7C15ULL);
        v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ULL;
        v = (v ^ (v >> 27)) * 0x94D049BB133111EBULL;
        x[i] = (float)(std * 1.7320508075688772 * ((double)((v ^ (v >> 31)) >> 11) * 0x1p-52 - 1.0));
    }
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* One row of k floats into type t (k a multiple of 32 for the quantised types). */
static void quantize_row(mattn_ggml_type t, const float *x, uint8_t *o, int k) {
    if (t == MATTN_GGML_F32) { memcpy(o, x, sizeof(float) * k); return; }
    if (t == MATTN_GGML_F16 || t == MATTN_GGML_BF16) {
        for (int i = 0; i < k; i++) put16(o + 2 * i, t == MATTN_GGML_F16 ? f2h(x[i]) : f2bf(x[i]));
        return;
    }
    for (int b = 0; b < k / 32; b++, x += 32) {
        if (t == MATTN_GGML_Q4_0) { /* quantize_row_q4_0_ref */
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < 32; j++)
                if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
            const float d = max / -8, id = d ? 1.0f / d : 0.0f;
            put16(o, f2h(d));
            for (int j = 0; j < 16; j++) {
                int a = (int8_t)(rnd(x[j] * id) + 8.5f), c = (int8_t)(rnd(x[j + 16] * id) + 8.5f);
                o[2 + j] = (uint8_t)((a < 15 ? a : 15) | (c < 15 ? c : 15) << 4);
            }
            o += 18;
        } else if (t == MATTN_GGML_Q4_1) { /* quantize_row_q4_1_ref */
            float min = INFINITY, max = -INFINITY;
            for (int j = 0; j < 32; j++) min = x[j] < min ? x[j] : min, max = x[j] > max ? x[j] : max;
            const float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
            put16(o, f2h(d));
            put16(o + 2, f2h(min));
            for (int j = 0; j < 16; j++) {
                int a = (int8_t)(rnd((x[j] - min) * id) + 0.5f), c = (int8_t)(rnd((x[j + 16] - min) * id) + 0.5f);
                o[4 + j] = (uint8_t)((a < 15 ? a : 15) | (c < 15 ? c : 15) << 4);
            }
            o += 20;
        } else { /* quantize_row_q8_0_ref */
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
            const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
            put16(o, f2h(d));
            for (int j = 0; j < 32; j++) o[2 + j] = (uint8_t)(int8_t)roundf(rnd(x[j] * id));
            o += 34;
        }
    }
}

/* N rows of K: quantised normal values (mode 0), or for the quantised types
 * random block bytes with random finite scales of either sign (mode 1). */
static uint8_t *random_weights(mattn_ggml_type t, int N, int K, int mode, uint64_t seed) {
    const size_t rb = mattn_qmatmul_row_bytes(t, K);
    uint8_t *W = malloc(rb * (size_t)N + 1);
    float *row = falloc((size_t)K);
    assert_non_null(W);
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    for (int n = 0; n < N; n++) {
        uint8_t *o = W + (size_t)n * rb;
        fill_uniform(row, (size_t)K, seed * 7919 + (uint64_t)n, 0.5 + (n % 5));
        quantize_row(t, row, o, K);
        if (mode == 0 || mattn_gguf_block_size(t) == 1) continue;
        const size_t bb = mattn_gguf_block_bytes(t);
        for (size_t i = 0; i < rb; i++) o[i] = (uint8_t)(mattn_rng_next(&r) >> 56);
        for (size_t b = 0; b < rb; b += bb) { /* scales in ±[2^-12, 2]; Q4_1's offset too */
            put16(o + b, f2h((float)((mattn_rng_u01(&r) < 0.5 ? -1 : 1) * ldexp(1.0 + mattn_rng_u01(&r), -(int)(mattn_rng_next(&r) % 13)))));
            if (t == MATTN_GGML_Q4_1) put16(o + b + 2, f2h((float)(2.0 * mattn_rng_u01(&r) - 1.0)));
        }
    }
    free(row);
    return W;
}

// ---------------------------------------------------------------- checks

/* The bound of quant.h: |y - ref| <= A + 1e-5 B with
 *   A = Σ_b 0.5001 d_x,b Σ_{k in b} |w_k|   (quantised types: x's 8-bit blocks, d_x,b = max_b |x| / 127)
 *   B = Σ_k |x_k| (|w_k| + |c_b|)           (c_b = m_b for Q4_1, 8 d_b for Q4_0, 128 d_b for Q8_0, else 0)
 * (f32x: mattn_qmatmul_f32x, x in fp32: A = 0 and c_b = 0 for every type.)
 * Returns the worst |y - ref| / (A + 1e-5 B) over the outputs (fails above 1)
 * and in *rel the worst |y - ref| / Σ|x||w|. */
static double check_bound(mattn_ggml_type t, int f32x, const uint8_t *W, const float *x, const float *y,
                          const float *ref, int M, int N, int K, const char *what, double *rel) {
    const size_t rb = mattn_qmatmul_row_bytes(t, K), bb = mattn_gguf_block_bytes(t);
    const int quant = mattn_gguf_block_size(t) > 1 && !f32x; /* fp32 x: the float types' bound */
    float *w = falloc((size_t)K), *wc = falloc((size_t)K), *dx = falloc((size_t)K / 32 + 1);
    double worst = 0.0;
    *rel = 0.0;
    for (int n = 0; n < N; n++) {
        const uint8_t *row = W + (size_t)n * rb;
        assert_int_equal(mattn_gguf_dequant_ref(t, row, w, K), MATTN_OK);
        for (int k = 0; k < K; k++) {
            double c = 0.0;
            if (quant) {
                const uint8_t *p = row + bb * (size_t)(k / 32);
                const double d = fabs(mattn_f16_to_f32((uint16_t)(p[0] | p[1] << 8)));
                c = t == MATTN_GGML_Q4_1 ? fabs(mattn_f16_to_f32((uint16_t)(p[2] | p[3] << 8)))
                                         : (t == MATTN_GGML_Q4_0 ? 8.0 : 128.0) * d;
            }
            w[k] = fabsf(w[k]), wc[k] = (float)(w[k] + c);
        }
        for (int i = 0; i < M; i++) {
            const float *xi = x + (size_t)i * K;
            double pa[8] = {0}, pb[8] = {0}, a = 0.0, bsum = 0.0, s = 0.0; /* 8 partial sums: vectorises */
            int k = 0;
            for (; k + 8 <= K; k += 8)
                for (int j = 0; j < 8; j++) pa[j] += fabs((double)xi[k + j]) * w[k + j], pb[j] += fabs((double)xi[k + j]) * wc[k + j];
            for (; k < K; k++) s += fabs((double)xi[k]) * w[k], bsum += fabs((double)xi[k]) * wc[k];
            for (int j = 0; j < 8; j++) s += pa[j], bsum += pb[j];
            if (quant)
                for (int b = 0; b < K / 32; b++) {
                    double amax = 0.0, sw = 0.0;
                    for (int j = 0; j < 32; j++) amax = fmax(amax, fabs((double)xi[32 * b + j])), sw += w[32 * b + j];
                    a += 0.5001 * amax / 127.0 * sw;
                }
            const double tol = a + 1e-5 * bsum, e = fabs((double)y[(size_t)i * N + n] - ref[(size_t)i * N + n]);
            const double r = tol > 0 ? e / tol : (e > 0 ? INFINITY : 0.0);
            if (!(r <= 1.0))
                fail_msg("%s: y[%d][%d] = %.9g, ref %.9g: |diff| %.3g > bound %.3g", what, i, n,
                         (double)y[(size_t)i * N + n], (double)ref[(size_t)i * N + n], e, tol);
            worst = r > worst ? r : worst;
            if (s > 0 && e / s > *rel) *rel = e / s;
        }
    }
    free(w), free(wc), free(dx);
    return worst;
}

static void *scratch_for(mattn_ggml_type t, int f32x, int M, int K, int threads, size_t *bytes) {
    *bytes = f32x ? mattn_qmatmul_scratch_f32x(t, M, K, threads) : mattn_qmatmul_scratch(t, M, K, threads);
    return *bytes ? mattn_amalloc(*bytes) : NULL;
}

static int product(int f32x, float *y, const float *x, const void *W, mattn_ggml_type t, int M, int N, int K,
                   void *s, size_t sb) {
    return f32x ? mattn_qmatmul_f32x(y, x, W, t, M, N, K, s, sb) : mattn_qmatmul(y, x, W, t, M, N, K, s, sb);
}

/* fast vs ref on one shape, 8-bit x (f32x 0) or fp32 x (1); returns the
 * worst error / bound, *rel the worst error / Σ|x||w| */
static double run_case(mattn_ggml_type t, int f32x, int M, int N, int K, int mode, uint64_t seed, double *rel) {
    uint8_t *W = random_weights(t, N, K, mode, seed);
    float *x = falloc((size_t)M * K), *y = falloc((size_t)M * N), *ref = falloc((size_t)M * N);
    fill_uniform(x, (size_t)M * K, seed + 1, 1.0);
    size_t sb;
    void *s = scratch_for(t, f32x, M, K, 8, &sb);
    assert_int_equal(product(f32x, y, x, W, t, M, N, K, s, sb), 0);
    assert_int_equal(mattn_qmatmul_ref(ref, x, W, t, M, N, K), 0);
    char what[96];
    snprintf(what, sizeof what, "%s%s M=%d N=%d K=%d mode %d", mattn_gguf_type_name(t), f32x ? " f32x" : "", M, N,
             K, mode);
    const double worst = check_bound(t, f32x, W, x, y, ref, M, N, K, what, rel);
    mattn_afree(s);
    free(W), free(x), free(y), free(ref);
    return worst;
}

static void test_quantisers_match_gguf(void **st) {
    (void)st;
    char err[MATTN_ERRMSG_LEN];
    mattn_gguf_file *f = NULL;
    if (mattn_gguf_open("tests/fixtures/quant_ref.gguf", &f, err, sizeof err) != MATTN_OK) fail_msg("%s", err);
    const mattn_gguf_tensor *src = mattn_gguf_find_tensor(f, "src");
    assert_non_null(src);
    const int K = (int)src->ne[0], R = (int)src->ne[1];
    static const struct { const char *name; mattn_ggml_type t; } q[] = {
        {"q4_0", MATTN_GGML_Q4_0}, {"q4_1", MATTN_GGML_Q4_1}, {"q8_0", MATTN_GGML_Q8_0},
        {"f16", MATTN_GGML_F16}, {"bf16", MATTN_GGML_BF16}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        const mattn_gguf_tensor *ref = mattn_gguf_find_tensor(f, q[i].name);
        assert_non_null(ref);
        assert_int_equal(ref->type, q[i].t);
        const size_t rb = mattn_qmatmul_row_bytes(q[i].t, K);
        uint8_t *o = malloc(rb);
        for (int r = 0; r < R; r++) {
            quantize_row(q[i].t, (const float *)src->data + (size_t)r * K, o, K);
            const uint8_t *want = (const uint8_t *)ref->data + (size_t)r * rb;
            for (size_t b = 0; b < rb; b++)
                if (o[b] != want[b]) fail_msg("%s row %d byte %zu: 0x%02x, gguf package 0x%02x", q[i].name, r, b, o[b], want[b]);
        }
        free(o);
    }
    mattn_gguf_close(f);
}

/* Every type on the ragged shapes (products above 6e7 multiply-adds left
 * out to keep the reference's time down: they are the big-M, big-N, big-K
 * corners, which the model test and the smaller shapes cover). */
static void test_fast_vs_ref(void **st) {
    (void)st;
    static const int Ks[] = {32, 64, 576, 1536}, Ns[] = {1, 3, 17, 576, 1000}, Ms[] = {1, 2, 5, 64, 67};
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int f32x = 0; f32x < (mattn_gguf_block_size(all_types[ti]) > 1 ? 2 : 1); f32x++) {
            const mattn_ggml_type t = all_types[ti];
            double worst = 0.0, wrel = 0.0, rel;
            int cases = 0;
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 5; b++)
                    for (int c = 0; c < 5; c++) {
                        const int K = Ks[a], N = Ns[b], M = Ms[c];
                        if ((double)M * N * K > 6e7) continue;
                        for (int mode = 0; mode < (mattn_gguf_block_size(t) > 1 && M <= 5 ? 2 : 1); mode++) {
                            const unsigned seed = 100u * (unsigned)(a * 25 + b * 5 + c) + (unsigned)ti;
                            const double w = run_case(t, f32x, M, N, K, mode, seed, &rel);
                            worst = w > worst ? w : worst, wrel = rel > wrel ? rel : wrel;
                            cases++;
                        }
                    }
            if (mattn_gguf_block_size(t) == 1) /* the float types take any K: tails shorter than a block */
                for (int K = 1; K <= 100; K += 11) {
                    const double w = run_case(t, 0, K % 3 ? 5 : 1, 7, K, 0, 7000u + (unsigned)K, &rel);
                    worst = w > worst ? w : worst, wrel = rel > wrel ? rel : wrel;
                    cases++;
                }
            print_message("  %-5s%s %3d shapes: worst |y - ref| / bound = %.3f, / sum|x||w| = %.2e\n",
                          mattn_gguf_type_name(t), f32x ? " f32x" : "     ", cases, worst, wrel);
        }
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Same inputs, 1 and 2 threads, twice each: bit-identical (and, since every
 * output is one thread's fixed-order sum, identical across the counts too). */
static void test_deterministic(void **st) {
    (void)st;
    static const int shapes[][3] = {{1, 1000, 576}, {1, 1536, 576}, {64, 576, 576}, {5, 577, 64}};
    for (int ti = 0; ti < 2 * N_TYPES; ti++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const mattn_ggml_type t = all_types[ti % N_TYPES];
            const int f32x = ti >= N_TYPES; /* the second pass: fp32 x */
            const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            uint8_t *W = random_weights(t, N, K, 0, 31 + s);
            float *x = falloc((size_t)M * K), *y[4];
            fill_normal(x, (size_t)M * K, 32 + s, 1.0);
            size_t sb;
            void *scr = scratch_for(t, f32x, M, K, 2, &sb);
            for (int r = 0; r < 4; r++) {
                y[r] = falloc((size_t)M * N);
                set_threads(r < 2 ? 1 : 2);
                assert_int_equal(product(f32x, y[r], x, W, t, M, N, K, scr, sb), 0);
            }
            set_threads(mattn_max_threads());
            for (int r = 1; r < 4; r++)
                if (memcmp(y[0], y[r], sizeof(float) * M * N))
                    fail_msg("%s%s M=%d N=%d K=%d: run %d (%d threads) differs from run 0 (1 thread)",
                             mattn_gguf_type_name(t), f32x ? " f32x" : "", M, N, K, r, r < 2 ? 1 : 2);
            for (int r = 0; r < 4; r++) free(y[r]);
            mattn_afree(scr);
            free(W), free(x);
        }
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
}

/* mattn_qmatmul_n: three matrices of one x (q, k, v shapes, and ragged N)
 * give the bits of three mattn_qmatmul / _f32x calls, 1 and 2 threads. */
static void test_multi(void **st) {
    (void)st;
    static const int Ns[3] = {576, 192, 37};
    const int K = 576;
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int f32x = 0; f32x < 2; f32x++)
            for (int M = 1; M <= 5; M += 4) {
                const mattn_ggml_type t = all_types[ti];
                uint8_t *W[3];
                float *y[3], *y1[3];
                float *x = falloc((size_t)M * K);
                fill_normal(x, (size_t)M * K, 90 + ti, 1.0);
                for (int i = 0; i < 3; i++)
                    W[i] = random_weights(t, Ns[i], K, 0, 80 + 3 * ti + i), y[i] = falloc((size_t)M * Ns[i]),
                    y1[i] = falloc((size_t)M * Ns[i]);
                size_t sb;
                void *scr = scratch_for(t, f32x, M, K, 2, &sb);
                for (int i = 0; i < 3; i++) assert_int_equal(product(f32x, y[i], x, W[i], t, M, Ns[i], K, scr, sb), 0);
                for (int nt = 1; nt <= 2; nt++) {
                    set_threads(nt);
                    for (int i = 0; i < 3; i++) memset(y1[i], 0xff, sizeof(float) * M * Ns[i]);
                    const void *Wc[3] = {W[0], W[1], W[2]};
                    assert_int_equal(mattn_qmatmul_n(3, y1, Wc, Ns, t, x, M, K, scr, sb, f32x), 0);
                    for (int i = 0; i < 3; i++)
                        if (memcmp(y[i], y1[i], sizeof(float) * M * Ns[i]))
                            fail_msg("%s%s M=%d, %d threads: matrix %d differs from its own call",
                                     mattn_gguf_type_name(t), f32x ? " f32x" : "", M, nt, i);
                }
                set_threads(mattn_max_threads());
                const void *Wc[3] = {W[0], W[1], W[2]};
                assert_int_equal(mattn_qmatmul_n(0, y1, Wc, Ns, t, x, M, K, scr, sb, f32x), -1);
                assert_int_equal(mattn_qmatmul_n(MATTN_QMATMUL_MAX + 1, y1, Wc, Ns, t, x, M, K, scr, sb, f32x), -1);
                for (int i = 0; i < 3; i++) free(W[i]), free(y[i]), free(y1[i]);
                mattn_afree(scr);
                free(x);
            }
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
}

static void test_bad_args(void **st) {
    (void)st;
    float x[64] = {0}, y[4];
    uint8_t W[4 * 40] = {0};
    _Alignas(64) static char scr[1 << 16];
    assert_int_equal(mattn_qmatmul(y, x, W, (mattn_ggml_type)12, 1, 1, 32, NULL, 0), -1);       /* Q4_K: unsupported */
    assert_int_equal(mattn_qmatmul_ref(y, x, W, (mattn_ggml_type)12, 1, 1, 32), -1);
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_Q4_1, 1, 1, 48, NULL, 0), -1);           /* K not whole blocks */
    assert_int_equal(mattn_qmatmul_ref(y, x, W, MATTN_GGML_Q8_0, 1, 1, 40), -1);
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_F32, -1, 1, 32, NULL, 0), -1);
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_Q4_0, 2, 1, 32, NULL, 0), -1);           /* GEMM, no scratch */
    const size_t need = mattn_qmatmul_scratch(MATTN_GGML_Q4_0, 2, 32, 1);
    assert_true(need > 0 && need <= sizeof scr);
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_Q4_0, 2, 1, 32, scr, need - 1), -1);
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_Q4_0, 2, 1, 32, scr, need), 0);
    assert_int_equal(mattn_qmatmul_scratch(MATTN_GGML_F16, 1, 1536, 8), 0);                   /* float GEMV: none */
    assert_true(mattn_qmatmul_scratch(MATTN_GGML_Q4_1, 1, 1536, 8) >= 1536 + 2 * 4 * 48);      /* x's 8-bit blocks */
    assert_int_equal(mattn_qmatmul_scratch(MATTN_GGML_Q4_1, 1, 1536, 8), mattn_qmatmul_scratch(MATTN_GGML_Q4_1, 1, 1536, 1));
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_Q8_0, 1, 1, 32, NULL, 0), -1);          /* quantised GEMV, no scratch */
    y[0] = 5.0f;
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_F16, 1, 1, 0, NULL, 0), 0);             /* K = 0: zeros */
    assert_true(y[0] == 0.0f);
    assert_int_equal(mattn_qmatmul(y, x, W, MATTN_GGML_F16, 0, 5, 32, NULL, 0), 0);            /* nothing to do */
}

// ---------------------------------------------------------------- simd.h's pieces

/* Every half through vload_f16 and mattn_h2f: the value of mattn_f16_to_f32
 * (NaNs as NaNs: F16C quiets signalling ones). */
static void test_half_loads(void **st) {
    (void)st;
    uint16_t h[MATTN_VL];
    for (uint32_t u0 = 0; u0 < 65536; u0 += MATTN_VL) {
        for (int l = 0; l < MATTN_VL; l++) h[l] = (uint16_t)(u0 + (uint32_t)l);
        const mattn_vf v = vload_f16(h);
        for (int l = 0; l < MATTN_VL; l++) {
            const float want = mattn_f16_to_f32(h[l]), s = mattn_h2f(h[l]);
            if (isnan(want) ? !(isnan(v[l]) && isnan(s)) : (memcmp(&want, &v[l], 4) || memcmp(&want, &s, 4)))
                fail_msg("half 0x%04x: %a, vload_f16 %a, mattn_h2f %a", h[l], (double)want, (double)v[l], (double)s);
        }
    }
}

/* mattn_f32_to_f16: every half back to itself; a million floats of every
 * magnitude against the naive formula (the nearest multiple of the half's
 * spacing at that binade, ties to even, in double) and, where the build has
 * F16C, against vcvtps2ph. */
static void test_half_store(void **st) {
    (void)st;
    for (uint32_t u = 0; u < 65536; u++) {
        const float f = mattn_f16_to_f32((uint16_t)u);
        const uint16_t back = mattn_f32_to_f16(f);
        if (isnan(f) ? !isnan(mattn_f16_to_f32(back)) : back != u)
            fail_msg("half 0x%04x -> %a -> 0x%04x", u, (double)f, back);
    }
    for (uint64_t b = 0; b < (1ull << 32); b += 4093) {
        const uint32_t bits = (uint32_t)b;
        float f;
        memcpy(&f, &bits, 4);
        const uint16_t h = mattn_f32_to_f16(f);
        const float got = mattn_f16_to_f32(h);
        if (isnan(f)) {
            if (!isnan(got)) fail_msg("NaN %08x -> 0x%04x", bits, h);
            continue;
        }
        const double a = fabs((double)f);
        int e = a > 0.0 ? (int)floor(log2(a)) : -14;
        e = e < -14 ? -14 : e;
        double want = nearbyint(a / ldexp(1.0, e - 10)) * ldexp(1.0, e - 10);
        if (want >= 65520.0 || isinf(a)) want = INFINITY;
        want = signbit(f) ? -want : want;
        if (got != (float)want || signbit(got) != signbit(f))
            fail_msg("%a -> 0x%04x = %a, expected %a", (double)f, h, (double)got, want);
#if defined(__F16C__)
        if (h != _cvtss_sh(f, 0)) fail_msg("%a -> 0x%04x, vcvtps2ph 0x%04x", (double)f, h, _cvtss_sh(f, 0));
#endif
    }
}

/* vdot4_u8s8 (vpdpbusd, or its portable form) against the scalar sum, every
 * byte value on both sides. */
static void test_vdot4(void **st) {
    (void)st;
    for (int a = 0; a < 256; a++)
        for (int b = -128; b < 128; b++) {
            mattn_v32u8 va;
            mattn_v32s8 vb;
            for (int i = 0; i < 32; i++) va[i] = (uint8_t)(a + 37 * i), vb[i] = (int8_t)(b + 11 * i);
            const mattn_v8i acc = vdot4_u8s8((mattn_v8i){1, -2, 3, -4, 5, -6, 7, -8}, va, vb);
            for (int l = 0; l < 8; l++) {
                int s = l % 2 ? -(l + 1) : l + 1;
                for (int j = 0; j < 4; j++) s += va[4 * l + j] * vb[4 * l + j];
                if (s != acc[l]) fail_msg("vdot4_u8s8 a %d b %d lane %d: %d, expected %d", a, b, l, acc[l], s);
            }
        }
}

// ---------------------------------------------------------------- the real model

static const char *g_model;

static void model_case(mattn_gguf_file *f, const char *name, mattn_ggml_type type, int M, int f32x) {
    const mattn_gguf_tensor *t = mattn_gguf_find_tensor(f, name);
    if (!t) fail_msg("%s: no tensor %s", mattn_gguf_path(f), name);
    assert_int_equal(t->type, type);
    const int K = (int)t->ne[0], N = (int)t->ne[1];
    float *x = falloc((size_t)M * K), *y = falloc((size_t)M * N), *ref = falloc((size_t)M * N);
    fill_normal(x, (size_t)M * K, 77, 1.0);
    size_t sb;
    void *s = scratch_for(type, f32x, M, K, 8, &sb);
    const double t0 = mattn_now();
    assert_int_equal(product(f32x, y, x, t->data, type, M, N, K, s, sb), 0);
    const double t1 = mattn_now();
    assert_int_equal(mattn_qmatmul_ref(ref, x, t->data, type, M, N, K), 0);
    const double t2 = mattn_now();
    char what[96];
    snprintf(what, sizeof what, "%s (%s%s %d x %d), M = %d", name, mattn_gguf_type_name(type), f32x ? " f32x" : "",
             N, K, M);
    double rel;
    const double worst = check_bound(type, f32x, t->data, x, y, ref, M, N, K, what, &rel);
    print_message("  %s: worst |y - ref| / bound = %.3f, / sum|x||w| = %.2e; fast %.2f ms, ref %.0f ms\n", what,
                  worst, rel, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
    mattn_afree(s);
    free(x), free(y), free(ref);
}

static void test_model(void **st) {
    (void)st;
    char err[MATTN_ERRMSG_LEN];
    mattn_gguf_file *f = NULL;
    if (mattn_gguf_open(g_model, &f, err, sizeof err) != MATTN_OK) fail_msg("%s", err);
    for (int f32x = 0; f32x < 2; f32x++) {
        model_case(f, "blk.0.ffn_down.weight", MATTN_GGML_Q4_1, 1, f32x);
        model_case(f, "blk.0.ffn_down.weight", MATTN_GGML_Q4_1, 5, f32x);
        model_case(f, "blk.0.attn_q.weight", MATTN_GGML_Q4_1, 64, f32x);
        model_case(f, "token_embd.weight", MATTN_GGML_Q8_0, 1, f32x);
    }
    mattn_gguf_close(f);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--model")) {
        g_model = getenv("METAATTN_GGUF_MODEL");
        if (!g_model) g_model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
        if (access(g_model, R_OK)) {
            printf("test_quant --model: %s not found, skipped (scripts/get-model.sh smollm2)\n", g_model);
            return 77;
        }
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_model)};
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_loads),
        cmocka_unit_test(test_half_store),
        cmocka_unit_test(test_vdot4),
        cmocka_unit_test(test_quantisers_match_gguf),
        cmocka_unit_test(test_fast_vs_ref),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_multi),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
