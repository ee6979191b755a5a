/*
 * test_llama.c — the LLaMA-family decoder on the tiny random models of
 * tests/fixtures/gen_llama_fixtures.py (2 blocks, d 64, 4 query heads on 2
 * K/V heads of 16, SwiGLU 96, vocabulary 100), one GGUF per weight type:
 *
 *  - logits of 80 tokens against an independent float64 reference on the
 *    same dequantised weights (numpy, checked against transformers'
 *    LlamaForCausalLM by the script), for F32, F16, BF16, Q8_0, Q4_0, Q4_1
 *    and an untied output head;
 *  - one call == calls of other lengths (chunks) == token-by-token decode;
 *  - RoPE (GGUF's adjacent pairs) and GQA attention against Hugging Face's
 *    formulas (rotate_half on the un-permuted head; repeat_kv);
 *  - the matmul: exact dequantisation + float dots against double, the
 *    same bits for any thread count and any M;
 *  - refusals by name (architecture, missing key or tensor, shape, RoPE
 *    scaling, biases, head counts), API misuse, every allocation failing.
 */
#include "test_util.h"

#include <limits.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "llama/llama.h"

#define FIX "tests/fixtures/"
#define REF FIX "llama_tiny_ref.safetensors"
#define NTOK 80
#define VOCAB 100

static const char *const TYPES[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q8_0_untied"};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

/* A tensor of the reference file as floats (n of them). */
static float *ref_tensor(const char *name, int64_t n) {
    return read_ref_tensor(REF, name, n);
}

static void ref_tokens(int32_t *tok) {
    float *t = ref_tensor("tokens", NTOK);
    for (int i = 0; i < NTOK; i++) tok[i] = (int32_t)t[i];
    free(t);
}

static mattn_llama *open_tiny(const char *type) {
    char path[256];
    snprintf(path, sizeof path, FIX "llama_tiny_%s.gguf", type);
    mattn_llama *m = NULL;
    if (mattn_llama_open(path, &m) != MATTN_OK) fail_msg("%s: %s", path, mattn_last_error());
    return m;
}

/* max |a - b| / max |b|: the error relative to the logits' scale. */
static double rel_err(const float *a, const float *b, size_t n) {
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return e / s;
}

// ---------------------------------------------------------------- logits vs the reference
/* The bound on max|C - ref| / max|ref|: rounding (1e-5) for the float types
 * and for fp32 activations; for the quantised types' default 8-bit
 * activations, what x's rounding to 8-bit blocks of 32 costs on these
 * random models (measured 1.5e-2 Q8_0, 1.4e-2 Q4_0, 1.5e-2 Q4_1 relative to
 * the largest logit, whose spread is small: logits of random weights are
 * near-uniform), bounded at 5e-2.  The kernels' per-output
 * bound is checked in test_quant.c. */
static double tiny_tol(const char *type, int f32x) {
    if (f32x || type[0] != 'q') return 1e-5;
    return 5e-2;
}
/* With the default f16 cache, the keys and values rounded to halves (2^-11
 * relative) on top: bounded at 2e-3 for the float types and fp32
 * activations (measured at most 6.4e-4), the same 5e-2 with 8-bit ones. */
static double tiny_tol_kv(const char *type, int f32x, int f16) {
    const double t = tiny_tol(type, f32x);
    return f16 && t < 2e-3 ? 2e-3 : t;
}

static void test_tiny_logits(void **st) {
    (void)st;
    int32_t tok[NTOK];
    ref_tokens(tok);
    for (int ti = 0; ti < NTYPES; ti++) {
        mattn_llama *m = open_tiny(TYPES[ti]);
        mattn_llama_info info;
        assert_int_equal(mattn_llama_get_info(m, &info), MATTN_OK);
        assert_int_equal(info.n_layers, 2);
        assert_int_equal(info.d_model, 64);
        assert_int_equal(info.n_heads, 4);
        assert_int_equal(info.n_kv_heads, 2);
        assert_int_equal(info.head_dim, 16);
        assert_int_equal(info.ffn_dim, 96);
        assert_int_equal(info.vocab_size, VOCAB);
        assert_int_equal(info.context_length, 128);
        assert_true(info.rms_eps == 1e-6f && info.rope_base == 50000.0f);
        const int untied = strstr(TYPES[ti], "untied") != NULL;
        assert_int_equal(info.tied_output, !untied);
        assert_int_equal(info.n_params, 2 * (64 * 64 * 2 + 2 * 32 * 64 + 3 * 96 * 64 + 2 * 64) + 64 + 100 * 64 *
                                                                                                  (1 + untied));
        /* the matrices a token reads (the head once, tied or not), bytes per 32 elements of each type */
        static const int bytes32[NTYPES] = {128, 64, 64, 34, 18, 20, 34};
        assert_int_equal(info.weight_bytes, (2 * (64 * 64 * 2 + 2 * 32 * 64 + 3 * 96 * 64) + 100 * 64) / 32 *
                                                bytes32[ti]);
        float *lg = falloc((size_t)NTOK * VOCAB);
        char name[64];
        snprintf(name, sizeof name, "logits.%s", TYPES[ti]);
        float *want = ref_tensor(name, (int64_t)NTOK * VOCAB);
        for (int f16 = 0; f16 < 2; f16++) {
            mattn_llama_cache *c = NULL;
            assert_int_equal(mattn_llama_cache_init_kv(m, 0, f16 ? MATTN_LLAMA_KV_F16 : MATTN_LLAMA_KV_F32, &c),
                             MATTN_OK);
            assert_int_equal(mattn_llama_cache_context(c), 128);
            for (int f32x = 0; f32x < 2; f32x++) {
                assert_int_equal(mattn_llama_set_activations(m, f32x ? MATTN_LLAMA_ACT_F32 : MATTN_LLAMA_ACT_Q8),
                                 MATTN_OK);
                mattn_llama_cache_reset(c);
                assert_int_equal(mattn_llama_forward(m, c, tok, NTOK, lg), MATTN_OK);
                assert_int_equal(mattn_llama_cache_length(c), NTOK);
                const double e = rel_err(lg, want, (size_t)NTOK * VOCAB), tol = tiny_tol_kv(TYPES[ti], f32x, f16);
                print_message("  %-12s %s activations, %s cache: max|C - ref| / max|ref| = %.2e (bound %.0e)\n",
                              TYPES[ti], f32x ? "f32" : "q8 ", f16 ? "f16" : "f32", e, tol);
                if (!(e <= tol)) fail_msg("%s: relative error %.3g > %.3g", TYPES[ti], e, tol);
            }
            mattn_llama_cache_free(c);
        }
        free(want);
        free(lg);
        mattn_llama_free(m);
    }
}

// ---------------------------------------------------------------- chunks and decode
/* Calls of lengths 1, 2, 7, 13, 57 (the last crosses a chunk boundary) give
 * what one call gives: the same bits with 8-bit activations (x's blocks and
 * every product are computed alike whatever else is in the call), rounding
 * with fp32 ones (a GEMV and a panel GEMM sum in other orders); token-by-
 * token decode (the decode step of the attention kernels) agrees to
 * rounding — except with 8-bit activations, where a decode step's
 * attention rounding differently by ~1e-7 moves a few x values across a
 * boundary of their 8-bit rounding (up to 1.2e-2 of the largest logit
 * measured): there decode is held to the reference's bound (tiny_tol) as
 * the one call is.  Both activation modes, both cache types, every type. */
static void test_chunks_and_decode(void **st) {
    (void)st;
    int32_t tok[NTOK];
    ref_tokens(tok);
    for (int ti = 0; ti < 4 * NTYPES; ti++) {
        const char *type = TYPES[ti % NTYPES];
        const int f32x = ti / NTYPES % 2, f16 = ti >= 2 * NTYPES, q8 = type[0] == 'q' && !f32x;
        /* an f16 cache rounds keys and values that a GEMV and a GEMM computed ~1e-7 apart (fp32 activations):
         * a few cross a half's rounding boundary, so prefill and decode agree to tiny_tol_kv only */
        const double agree = f16 ? tiny_tol_kv(type, f32x, 1) : 2e-6;
        mattn_llama *m = open_tiny(type);
        assert_int_equal(mattn_llama_set_activations(m, f32x ? MATTN_LLAMA_ACT_F32 : MATTN_LLAMA_ACT_Q8), MATTN_OK);
        mattn_llama_cache *c = NULL;
        assert_int_equal(mattn_llama_cache_init_kv(m, 100, f16 ? MATTN_LLAMA_KV_F16 : MATTN_LLAMA_KV_F32, &c),
                         MATTN_OK);
        float *one = falloc((size_t)NTOK * VOCAB), *parts = falloc((size_t)NTOK * VOCAB);
        float *dec = falloc((size_t)NTOK * VOCAB);
        assert_int_equal(mattn_llama_forward(m, c, tok, NTOK, one), MATTN_OK);
        mattn_llama_cache_reset(c);
        assert_int_equal(mattn_llama_cache_length(c), 0);
        const int lens[] = {1, 2, 7, 13, 57};
        for (int i = 0, at = 0; i < 5; at += lens[i++])
            assert_int_equal(mattn_llama_forward(m, c, tok + at, lens[i], parts + (size_t)at * VOCAB), MATTN_OK);
        assert_int_equal(mattn_llama_cache_length(c), NTOK);
        if (q8)
            assert_memory_equal(one, parts, sizeof(float) * NTOK * VOCAB);
        else if (!(rel_err(parts, one, (size_t)NTOK * VOCAB) <= agree))
            fail_msg("%s f32 activations, %s cache: chunks vs one call %.3g > %.0e", type, f16 ? "f16" : "f32",
                     rel_err(parts, one, (size_t)NTOK * VOCAB), agree);
        mattn_llama_cache_reset(c);
        for (int i = 0; i < NTOK; i++)
            assert_int_equal(mattn_llama_decode(m, c, tok[i], dec + (size_t)i * VOCAB), MATTN_OK);
        char name[64];
        snprintf(name, sizeof name, "logits.%s", type);
        float *want = q8 ? ref_tensor(name, (int64_t)NTOK * VOCAB) : one;
        const double tol = q8 ? tiny_tol_kv(type, 0, f16) : agree, e = rel_err(dec, want, (size_t)NTOK * VOCAB);
        if (!(e <= tol))
            fail_msg("%s%s, %s cache: decode vs %s %.3g > %.0e", type, f32x ? " f32x" : "", f16 ? "f16" : "f32",
                     q8 ? "ref" : "prefill", e, tol);
        /* a prefill without logits, then decode: the last logits of the prefill */
        mattn_llama_cache_reset(c);
        assert_int_equal(mattn_llama_forward(m, c, tok, NTOK - 1, NULL), MATTN_OK);
        assert_int_equal(mattn_llama_decode(m, c, tok[NTOK - 1], dec), MATTN_OK);
        assert_true(rel_err(dec, want + (size_t)(NTOK - 1) * VOCAB, VOCAB) <= tol);
        if (want != one) free(want);
        free(one); free(parts); free(dec);
        mattn_llama_cache_free(c);
        mattn_llama_free(m);
    }
}

// ---------------------------------------------------------------- RoPE, GQA
static void check_rope(const char *x_name, const char *out_name, int M, int H, int dh, int pos0, double base) {
    float *x = ref_tensor(x_name, (int64_t)M * H * dh), *want = ref_tensor(out_name, (int64_t)M * H * dh);
    float *tab = falloc((size_t)M * dh);
    mattn_llama_rope_table(tab, pos0, M, dh, base);
    mattn_llama_rope(x, M, H * dh, H, dh, tab);
    assert_close(x, want, (size_t)M * H * dh, 2e-6, out_name);
    free(x); free(want); free(tab);
}

/* 3 heads of 10 (5 pairs) at positions 5..11; 2 heads of 64 at 8189..8191,
 * base 100000 (SmolLM2's), where float angles would be off by ~1e-3. */
static void test_rope_vs_hf(void **st) {
    (void)st;
    check_rope("rope.x", "rope.out", 7, 3, 10, 5, 10000.0);
    check_rope("rope64.x", "rope64.out", 3, 2, 64, 8189, 100000.0);
}

/* 7 queries at positions 5..11 over 12 keys, 9 query heads on 3 K/V heads
 * of 16: the prefill kernel (a query chunk at the end of the keys), its
 * reference and the decode step per query against HF's repeat_kv attention. */
static void test_gqa_vs_hf(void **st) {
    (void)st;
    const int Tq = 7, Tk = 12, H = 9, Hkv = 3, dh = 16, Dq = H * dh, Dkv = Hkv * dh;
    float *q = ref_tensor("gqa.q", Tq * Dq), *k = ref_tensor("gqa.k", Tk * Dkv), *v = ref_tensor("gqa.v", Tk * Dkv);
    float *want = ref_tensor("gqa.out", Tq * Dq), *out = falloc((size_t)Tq * Dq);
    mattn_attn_args a = {.B = 1, .T = Tq, .Tk = Tk, .H = H, .dh = dh, .q = q, .ld = Dq, .k = k, .v = v,
                         .ldkv = Dkv, .kv_group = H / Hkv, .out = out, .ldo = Dq, .causal = 1, .window = -1};
    set_attn_scratch(&a);
    assert_true(mattn_attn_softmax_forward(&a) > 0);
    assert_close(out, want, (size_t)Tq * Dq, 2e-6, "GQA prefill vs HF");
    memset(out, 0, sizeof(float) * Tq * Dq);
    mattn_attn_softmax_forward_ref(&a);
    assert_close(out, want, (size_t)Tq * Dq, 2e-6, "GQA prefill reference vs HF");
    for (int t = 0; t < Tq; t++) {
        mattn_attn_softmax_decode_gqa(q + t * Dq, k, v, Dkv, H, H / Hkv, dh, 0, Tk - Tq + t, 0, out + t * Dq);
        assert_close(out + t * Dq, want + t * Dq, (size_t)Dq, 2e-6, "GQA decode vs HF");
    }
    free(q); free(k); free(v); free(want); free(out);
}

// ---------------------------------------------------------------- the matmul
/* A Q8_0 matrix of K 256 x N 700 in memory (scales 2^-7 .. 2^-4, every int8),
 * M 24 rows of x, both activation modes: against the dequantised matrix in
 * double — fp32 x to rounding, 8-bit x within kernels/quant.h's bound —
 * and with 1 and 2 threads and (8-bit x) one row of x at a time: the same
 * bits. */
static void test_matmul(void **st) {
    (void)st;
    const int K = 256, N = 700, M = 24;
    const size_t rb = mattn_gguf_nbytes(MATTN_GGML_Q8_0, K);
    unsigned char *q = malloc(rb * N);
    mattn_rng r;
    mattn_rng_seed(&r, 5);
    for (size_t b = 0; b < rb * N / 34; b++) {
        const uint16_t d = (uint16_t)(0x2000 + (mattn_rng_next(&r) % 0xC00)); /* f16 in [2^-7, 2^-4) */
        q[b * 34] = (unsigned char)(d & 0xff), q[b * 34 + 1] = (unsigned char)(d >> 8);
        for (int j = 0; j < 32; j++) q[b * 34 + 2 + j] = (unsigned char)mattn_rng_next(&r);
    }
    mattn_gguf_tensor W = {.type = MATTN_GGML_Q8_0, .n_dims = 2, .ne = {K, N, 1, 1}, .n_elements = (int64_t)K * N,
                           .nbytes = rb * N, .data = q};
    float *x = falloc((size_t)M * K), *y = falloc((size_t)M * N), *y1 = falloc((size_t)M * N);
    float *w = falloc((size_t)K * N);
    fill_normal(x, (size_t)M * K, 6, 1.0);
    assert_int_equal(mattn_gguf_dequant_ref(MATTN_GGML_Q8_0, q, w, (int64_t)K * N), MATTN_OK);
    const size_t wsb = mattn_llama_matmul_scratch(K, M, 8);
    void *ws = mattn_amalloc(wsb);
    for (int f32x = 0; f32x < 2; f32x++) {
        mattn_llama_matmul(&W, x, M, y, ws, wsb, f32x);
        double worst = 0.0;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double s = 0.0, a = 0.0, bound = 0.0;
                for (int b = 0; b < K / 32; b++) {
                    double amax = 0.0, sw = 0.0;
                    const double d = mattn_f16_to_f32((uint16_t)(q[((size_t)n * K / 32 + b) * 34] |
                                                                 q[((size_t)n * K / 32 + b) * 34 + 1] << 8));
                    for (int i = 32 * b; i < 32 * b + 32; i++) {
                        const double xi = x[m * K + i], wi = w[(size_t)n * K + i];
                        s += xi * wi, a += fabs(xi * wi), amax = fmax(amax, fabs(xi)), sw += fabs(wi);
                        bound += 1e-5 * fabs(xi) * (fabs(wi) + (f32x ? 0.0 : 128.0 * d));
                    }
                    if (!f32x) bound += 0.5001 * amax / 127.0 * sw;
                }
                const double e = fabs(y[(size_t)m * N + n] - s);
                if (!(e <= (f32x ? 1e-6 * a : bound)))
                    fail_msg("%s x: y[%d][%d] off by %.3g > %.3g", f32x ? "fp32" : "8-bit", m, n, e,
                             f32x ? 1e-6 * a : bound);
                worst = fmax(worst, e / a);
            }
        print_message("  Q8_0 matmul, %s x: max |y - y_double| / sum|x w| = %.2e\n", f32x ? "fp32 " : "8-bit", worst);
        if (!f32x) {
            for (int m = 0; m < M; m++) mattn_llama_matmul(&W, x + (size_t)m * K, 1, y1 + (size_t)m * N, ws, wsb, 0);
            assert_memory_equal(y, y1, sizeof(float) * M * N);
        }
#ifdef _OPENMP
        const int nt = omp_get_max_threads();
        omp_set_num_threads(1);
        mattn_llama_matmul(&W, x, M, y1, ws, wsb, f32x);
        omp_set_num_threads(2);
        memset(y1 + N, 0, sizeof(float) * N);
        mattn_llama_matmul(&W, x, M, y1, ws, wsb, f32x);
        omp_set_num_threads(nt);
        assert_memory_equal(y, y1, sizeof(float) * M * N);
#endif
    }
    mattn_afree(ws);
    free(q); free(x); free(y); free(y1); free(w);
}

/* The decode step's team (llama_forward.c): whether a step ran on the full
 * team or on half of it (the probes), 100 steps of 4, 2 and 1 threads give
 * the same bits, and the caller's thread count is left as it was. */
static void test_decode_team(void **st) {
    (void)st;
#ifdef _OPENMP
    mattn_llama *m = open_tiny("q4_1");
    const int n = 100, nt = omp_get_max_threads();
    float *lg[3];
    for (int i = 0; i < 3; i++) {
        const int threads = 4 >> i;
        omp_set_num_threads(threads);
        mattn_llama_cache *c = NULL;
        assert_int_equal(mattn_llama_cache_init(m, n, &c), MATTN_OK);
        lg[i] = falloc((size_t)n * VOCAB);
        for (int t = 0; t < n; t++) {
            assert_int_equal(mattn_llama_decode(m, c, (int32_t)(t * 37 % VOCAB), lg[i] + (size_t)t * VOCAB), MATTN_OK);
            assert_int_equal(omp_get_max_threads(), threads);
        }
        mattn_llama_cache_free(c);
    }
    omp_set_num_threads(nt);
    assert_memory_equal(lg[0], lg[1], sizeof(float) * n * VOCAB);
    assert_memory_equal(lg[0], lg[2], sizeof(float) * n * VOCAB);
    for (int i = 0; i < 3; i++) free(lg[i]);
    mattn_llama_free(m);
#else
    skip();
#endif
}

// ---------------------------------------------------------------- refusals and misuse
static void expect_refused(const char *file, mattn_status want, const char *text) {
    char path[256];
    snprintf(path, sizeof path, FIX "%s", file);
    mattn_llama *m = (mattn_llama *)&m; /* must be set to NULL */
    const mattn_status st = mattn_llama_open(path, &m);
    assert_null(m);
    if (st != want || !strstr(mattn_last_error(), text))
        fail_msg("%s: status %d (%s), message '%s'; expected status %d and '%s'", file, st, mattn_status_str(st),
                 mattn_last_error(), want, text);
    print_message("  %-28s %s\n", file, mattn_last_error());
}

static void test_refusals(void **st) {
    (void)st;
    expect_refused("llama_bad_arch.gguf", MATTN_ERR_UNSUPPORTED, "general.architecture is 'qwen2'");
    expect_refused("llama_bad_no_eps.gguf", MATTN_ERR_FORMAT, "llama.attention.layer_norm_rms_epsilon is missing");
    expect_refused("llama_bad_no_ffn_down.gguf", MATTN_ERR_FORMAT, "tensor 'blk.0.ffn_down.weight' is missing");
    expect_refused("llama_bad_k_shape.gguf", MATTN_ERR_FORMAT,
                   "tensor 'blk.0.attn_k.weight' has shape [32, 8] (ggml order), expected [32, 16]");
    expect_refused("llama_bad_rope_scaling.gguf", MATTN_ERR_UNSUPPORTED, "llama.rope.scaling.type = 'linear'");
    expect_refused("llama_bad_bias.gguf", MATTN_ERR_UNSUPPORTED, "tensor 'blk.0.attn_q.bias': biases");
    expect_refused("llama_bad_kv_heads.gguf", MATTN_ERR_FORMAT, "head_count_kv 3 does not divide head_count 2");
    expect_refused("gguf_tensors.gguf", MATTN_ERR_UNSUPPORTED, "general.architecture is 'testarch'");
    expect_refused("no_such_file.gguf", MATTN_ERR_IO, "no_such_file.gguf");
    expect_refused("tokenizer_text.txt", MATTN_ERR_FORMAT, "tokenizer_text.txt");
}

static void test_misuse(void **st) {
    (void)st;
    mattn_llama *m = open_tiny("q4_0"), *m2 = open_tiny("f16");
    mattn_llama *none = (mattn_llama *)&none;
    assert_int_equal(mattn_llama_open(NULL, &none), MATTN_ERR_INVALID_ARG);
    assert_null(none);
    assert_int_equal(mattn_llama_open(FIX "llama_tiny_f32.gguf", NULL), MATTN_ERR_INVALID_ARG);
    mattn_llama_free(NULL);
    mattn_llama_cache_free(NULL);
    mattn_llama_cache_reset(NULL);
    assert_int_equal(mattn_llama_cache_length(NULL), 0);
    assert_string_equal(mattn_llama_errmsg(NULL), "model is NULL");
    assert_int_equal(mattn_llama_get_info(m, NULL), MATTN_ERR_INVALID_ARG);
    mattn_llama_cache *c = NULL, *c2 = NULL;
    assert_int_equal(mattn_llama_cache_init(m, 129, &c), MATTN_ERR_INVALID_ARG);
    assert_null(c);
    assert_non_null(strstr(mattn_llama_errmsg(m), "context = 129 is outside [1, 128]"));
    assert_int_equal(mattn_llama_cache_init(m, -1, &c), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_cache_init(NULL, 4, &c), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_cache_init(m, 4, &c), MATTN_OK);
    assert_int_equal(mattn_llama_cache_init(m2, 4, &c2), MATTN_OK);
    float lg[4 * VOCAB];
    int32_t tok[5] = {1, 2, 3, 99, 100};
    assert_int_equal(mattn_llama_forward(m, c, tok, 0, lg), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "n = 0 tokens"));
    assert_int_equal(mattn_llama_forward(m, c, NULL, 1, lg), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_forward(m, c2, tok, 1, lg), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "another model"));
    assert_int_equal(mattn_llama_forward(m, c, tok + 1, 4, lg), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "tokens[3] = 100 is outside [0, 100)"));
    assert_int_equal(mattn_llama_cache_length(c), 0); /* refused calls leave the cache alone */
    assert_int_equal(mattn_llama_decode(m, c, -5, lg), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "tokens[0] = -5"));
    assert_int_equal(mattn_llama_decode(m, c, 5, NULL), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_forward(m, c, tok, 3, lg), MATTN_OK);
    assert_int_equal(mattn_llama_forward(m, c, tok, 2, lg), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "2 tokens at position 3 overflow the cache's context 4"));
    assert_int_equal(mattn_llama_decode(m, c, 7, lg), MATTN_OK);
    assert_int_equal(mattn_llama_decode(m, c, 7, lg), MATTN_ERR_INVALID_ARG);
    assert_int_equal(mattn_llama_cache_length(c), 4);
    mattn_llama_cache_free(c);
    mattn_llama_cache_free(c2);
    mattn_llama_free(m);
    mattn_llama_free(m2);
}

/* Every allocation of open, cache_init and a forward failing, once and from
 * then on: MATTN_ERR_NOMEM or success, nothing leaked. */
static mattn_status op_all(void) {
    mattn_llama *m = NULL;
    mattn_llama_cache *c = NULL;
    mattn_status st = mattn_llama_open(FIX "llama_tiny_q4_1.gguf", &m);
    if (st == MATTN_OK) st = mattn_llama_cache_init(m, 16, &c);
    if (st == MATTN_OK) {
        int32_t tok[3] = {4, 5, 6};
        float lg[3 * VOCAB];
        st = mattn_llama_forward(m, c, tok, 3, lg);
    }
    mattn_llama_cache_free(c);
    mattn_llama_free(m);
    return st;
}

static void test_faults(void **st) {
    (void)st;
    fault_sweep(op_all, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_logits),
        cmocka_unit_test(test_chunks_and_decode),
        cmocka_unit_test(test_rope_vs_hf),
        cmocka_unit_test(test_gqa_vs_hf),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_decode_team),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
