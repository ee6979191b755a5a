/*
 * test_llama_model.c — the LLaMA decoder on the real SmolLM2-135M-Instruct
 * (Q4_1 GGUF, 98 MB, not in the repository: $METAATTN_GGUF_MODEL, else
 * models/SmolLM2-135M-Instruct.Q4_1.gguf; absent: skipped, exit 77) against
 * tests/fixtures/llama_smollm2_ref.safetensors, written by
 * gen_llama_model_ref.py from two references on the dequantised weights —
 * a float64 numpy LLaMA on the GGUF layout (stored) and transformers'
 * LlamaForCausalLM loading the GGUF itself in float32:
 *
 *  - logits of a 256-token text (prefilled in calls of 64), with fp32
 *    activations: at each position's 16 largest reference logits and the
 *    log-sum-exp of all 49152, within the bounds below; the argmax wherever
 *    the reference's top two are apart by more than those bounds; peak RSS
 *    after loading and the prefill; with the default 8-bit activations: no
 *    further from the reference than llama.cpp's logits (its own 8-bit
 *    activations on the same file, stored by the generator);
 *  - greedy continuations of 5 prompts, 64 tokens each (fp32 activations),
 *    the reference's token for token: the first 8 by decode steps (each the
 *    argmax of the step's logits), the rest teacher-forced in one call (the
 *    argmax after each reference token is the next one — the same condition
 *    as greedy decoding giving the same tokens, at a prefill's cost); all 64
 *    by decode steps with METAATTN_LLAMA_GREEDY_STEPS=64;
 *  - the perplexity of a held-out text of 1024 tokens in both modes within
 *    0.5 % of the reference's.
 * Under AddressSanitizer (make asan), where the decoder runs many
 * times slower, the same checks on less: 64 positions, one prompt, 8 greedy
 * tokens of which 2 by decode steps, 128 tokens of perplexity.
 */
#include "test_util.h"

#include <sys/resource.h>
#include <unistd.h>

#include "llama/llama.h"

#define REF "tests/fixtures/llama_smollm2_ref.safetensors"
#define NPOS 256
#define TOPK 16
#define NPROMPT 5
#define PMAX 48
#define NGREEDY 64
#define NPPL 1024
/* Measured on x86-64 (AVX-512, 1 or 2 threads), fp32 activations: C vs the
 * float64 reference 5.2e-5 absolute on logits up to 30.7 (1.7e-6 of the
 * scale), log-sum-exp 3.0e-5; transformers' float32 vs the same reference
 * 3.2e-5.  The bounds are four times the measurement; the argmax is checked
 * where the reference's top two are further apart than twice the bound. */
#define LOGIT_TOL 2e-4
#define LSE_TOL 2e-4

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static const char *g_path;
#ifdef UNDER_ASAN
static const int g_npos = 64, g_nprompt = 1, g_ngreedy = 8, g_steps = 2, g_nppl = 128;
#else
static const int g_npos = NPOS, g_nprompt = NPROMPT, g_ngreedy = NGREEDY, g_steps = 8, g_nppl = NPPL;
#endif

static float *ref_tensor(const char *name, int64_t n) {
    return read_ref_tensor(REF, name, n);
}

static int32_t *ref_ids(const char *name, int64_t n) {
    float *x = ref_tensor(name, n);
    int32_t *id = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) id[i] = (int32_t)x[i];
    free(x);
    return id;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double lse(const float *x, int n) {
    double m = x[argmax(x, n)], s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    return m + log(s);
}

/* A cache of each type for `context` positions (0: the model's). */
static void open_caches(mattn_llama *m, int context, mattn_llama_cache **c32, mattn_llama_cache **c16) {
    assert_int_equal(mattn_llama_cache_init_kv(m, context, MATTN_LLAMA_KV_F32, c32), MATTN_OK);
    assert_int_equal(mattn_llama_cache_init(m, context, c16), MATTN_OK);
}

static mattn_llama *open_model(mattn_llama_info *info) {
    mattn_llama *m = NULL;
    const double t0 = mattn_now();
    if (mattn_llama_open(g_path, &m) != MATTN_OK) fail_msg("%s", mattn_last_error());
    assert_int_equal(mattn_llama_get_info(m, info), MATTN_OK);
    print_message("  %s: opened in %.0f ms\n", g_path, (mattn_now() - t0) * 1e3);
    assert_int_equal(info->n_layers, 30);
    assert_int_equal(info->d_model, 576);
    assert_int_equal(info->n_heads, 9);
    assert_int_equal(info->n_kv_heads, 3);
    assert_int_equal(info->head_dim, 64);
    assert_int_equal(info->ffn_dim, 1536);
    assert_int_equal(info->vocab_size, 49152);
    assert_int_equal(info->context_length, 8192);
    assert_true(info->rope_base == 100000.0f && info->rms_eps == 1e-5f && info->tied_output);
    assert_int_equal(info->n_params, 134515008);
    assert_int_equal(info->weight_bytes, 96436224); /* 210 Q4_1 matrices and the Q8_0 head (gguf package) */
    return m;
}

/* Logits of the 256-token text under one activation mode: the worst and
 * mean |C - reference| over each position's top 16, the worst log-sum-exp
 * error, the argmax agreement: argmax_all counts the positions where the
 * largest of C's logits at the reference's top-16 ids is at its top-1 id
 * (the statistic the stored llama.cpp logits give too); argmax_ok those of
 * argmax_checked (the reference's top two apart by more than 2 LOGIT_TOL)
 * where C's argmax over the whole vocabulary is the reference's. */
typedef struct logit_err {
    double worst, mean, lse, secs;
    int argmax_all, argmax_ok, argmax_checked;
} logit_err;

static logit_err run_logits(mattn_llama *m, mattn_llama_cache *c, int V, const int32_t *tok, const int32_t *idx,
                            const float *val) {
    float *ref_lse = ref_tensor("lse", NPOS), *lg = falloc((size_t)64 * V);
    logit_err e = {0};
    mattn_llama_cache_reset(c);
    for (int p0 = 0; p0 < g_npos; p0 += 64) {
        const double t0 = mattn_now();
        if (mattn_llama_forward(m, c, tok + p0, 64, lg) != MATTN_OK) fail_msg("%s", mattn_llama_errmsg(m));
        e.secs += mattn_now() - t0;
        for (int i = 0; i < 64; i++) {
            const int p = p0 + i;
            const float *l = lg + (size_t)i * V;
            int best = 0;
            for (int k = 0; k < TOPK; k++) {
                const double d = fabs((double)l[idx[p * TOPK + k]] - val[p * TOPK + k]);
                e.worst = fmax(e.worst, d), e.mean += d / (g_npos * TOPK);
                if (l[idx[p * TOPK + k]] > l[idx[p * TOPK + best]]) best = k;
            }
            e.lse = fmax(e.lse, fabs(lse(l, V) - ref_lse[p]));
            e.argmax_all += best == 0;
            if (val[p * TOPK] - val[p * TOPK + 1] > 2 * LOGIT_TOL) {
                e.argmax_checked++;
                e.argmax_ok += argmax(l, V) == idx[p * TOPK];
            }
        }
    }
    free(ref_lse); free(lg);
    return e;
}

/* The four settings of activations x cache against the fp64 reference:
 *   fp32 activations, fp32 cache: the reference to rounding (LOGIT_TOL);
 *   fp32 activations, f16 cache: the halves' rounding alone, within
 *     F16KV_TOL (measured 1.1e-2);
 *   8-bit activations, fp32 cache: no further from it than llama.cpp (its
 *     own 8-bit activations and f16 cache, the same file; stored by the
 *     generator) — worst and mean top-16 error at most 1.25x llama.cpp's,
 *     top-1 agreement at most 3 positions fewer;
 *   8-bit activations, f16 cache (the default, llama.cpp's own setting):
 *     mean error at most 1.25x llama.cpp's, worst 1.5x, top-1 at most 8
 *     positions fewer.  Measured: mean 0.131 in both caches (llama.cpp
 *     0.125), worst 0.627 / 0.922 (0.713), top-1 249 / 243 (247): the worst
 *     of 4096 errors and the top-1 on near-ties move with any perturbation
 *     of the 8-bit rounding, while the mean and the perplexity
 *     (test_perplexity) do not. */
#define F16KV_TOL 5e-2
static void test_logits_256(void **st) {
    (void)st;
    if (!g_path) skip();
    mattn_llama_info info;
    mattn_llama *m = open_model(&info);
    const int V = info.vocab_size;
    mattn_llama_cache *c32 = NULL, *c16 = NULL;
    open_caches(m, 0, &c32, &c16);
    int32_t *tok = ref_ids("tokens", NPOS), *idx = ref_ids("top_idx", NPOS * TOPK);
    float *val = ref_tensor("top_val", NPOS * TOPK), *hf = ref_tensor("top_val_hf", NPOS * TOPK);
    float *lc = ref_tensor("top_val_lcpp", NPOS * TOPK);
    double hf_ref = 0.0, scale = 0.0, lc_worst = 0.0, lc_mean = 0.0;
    int lc_argmax = 0;
    for (int p = 0; p < g_npos; p++) {
        int best = 0;
        for (int k = 0; k < TOPK; k++) {
            const double r = val[p * TOPK + k];
            hf_ref = fmax(hf_ref, fabs((double)hf[p * TOPK + k] - r));
            lc_worst = fmax(lc_worst, fabs((double)lc[p * TOPK + k] - r));
            lc_mean += fabs((double)lc[p * TOPK + k] - r) / (g_npos * TOPK);
            scale = fmax(scale, fabs(r));
            if (lc[p * TOPK + k] > lc[p * TOPK + best]) best = k;
        }
        lc_argmax += best == 0; /* as run_logits' argmax_all */
    }
    assert_int_equal(mattn_llama_set_activations(m, MATTN_LLAMA_ACT_F32), MATTN_OK);
    const logit_err f = run_logits(m, c32, V, tok, idx, val), fh = run_logits(m, c16, V, tok, idx, val);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double rss = (double)ru.ru_maxrss * 1024.0, file = (double)mattn_gguf_file_size(m->f);
    const double kv = 2.0 * info.n_layers * 8192.0 * info.n_kv_heads * info.head_dim * (sizeof(float) + 2);
    assert_int_equal(mattn_llama_set_activations(m, MATTN_LLAMA_ACT_Q8), MATTN_OK);
    const logit_err q = run_logits(m, c32, V, tok, idx, val), qh = run_logits(m, c16, V, tok, idx, val);
    print_message("  prefill of %d tokens in calls of 64 (%d threads): %.2f s fp32 activations, %.2f s 8-bit (f16 "
                  "cache)\n", g_npos, mattn_max_threads(), fh.secs, qh.secs);
    print_message("  top-%d logits vs numpy f64 (|logit| <= %.1f; transformers f32: %.2e):\n", TOPK, scale, hf_ref);
    print_message("    fp32 activations, fp32 cache: max %.2e, mean %.2e; log-sum-exp %.2e; top-1 %d/%d (argmax %d/%d "
                  "where the top two differ by > %.0e)\n", f.worst, f.mean, f.lse, f.argmax_all, g_npos, f.argmax_ok,
                  f.argmax_checked, 2 * LOGIT_TOL);
    print_message("    fp32 activations, f16 cache:  max %.2e, mean %.2e; log-sum-exp %.2e; top-1 %d/%d\n", fh.worst,
                  fh.mean, fh.lse, fh.argmax_all, g_npos);
    print_message("    8-bit activations, fp32 cache: max %.3f, mean %.4f; log-sum-exp %.3f; top-1 %d/%d\n", q.worst,
                  q.mean, q.lse, q.argmax_all, g_npos);
    print_message("    8-bit activations, f16 cache:  max %.3f, mean %.4f; log-sum-exp %.3f; top-1 %d/%d\n", qh.worst,
                  qh.mean, qh.lse, qh.argmax_all, g_npos);
    print_message("    llama.cpp (8-bit, f16 cache):  max %.3f, mean %.4f;                      top-1 %d/%d\n",
                  lc_worst, lc_mean, lc_argmax, g_npos);
    print_message("  peak RSS %.1f MB (file %.1f MB, full-context KV caches of both types %.1f MB)\n", rss / 1e6,
                  file / 1e6, kv / 1e6);
    if (!(f.worst <= LOGIT_TOL)) fail_msg("fp32 activations: logits off by %.3g > %.3g", f.worst, LOGIT_TOL);
    if (!(f.lse <= LSE_TOL)) fail_msg("fp32 activations: log-sum-exp off by %.3g > %.3g", f.lse, LSE_TOL);
    assert_int_equal(f.argmax_ok, f.argmax_checked);
    assert_true(f.argmax_checked > g_npos / 2);
    if (!(fh.worst <= F16KV_TOL && fh.lse <= F16KV_TOL))
        fail_msg("fp32 activations, f16 cache: logits off by %.3g, log-sum-exp by %.3g > %.3g", fh.worst, fh.lse,
                 F16KV_TOL);
#ifndef UNDER_ASAN /* the sanitizer's shadow memory is not the library's; llama.cpp's figures are for 256 positions */
    assert_true(rss <= file + kv + 100e6);
    if (!(q.worst <= 1.25 * lc_worst && q.mean <= 1.25 * lc_mean && q.argmax_all >= lc_argmax - 3))
        fail_msg("8-bit activations, fp32 cache, further from the reference than llama.cpp: max %.3f (llama.cpp "
                 "%.3f), mean %.4f (%.4f), top-1 %d (%d)", q.worst, lc_worst, q.mean, lc_mean, q.argmax_all,
                 lc_argmax);
    if (!(qh.worst <= 1.5 * lc_worst && qh.mean <= 1.25 * lc_mean && qh.argmax_all >= lc_argmax - 8))
        fail_msg("8-bit activations, f16 cache, further from the reference than llama.cpp: max %.3f (llama.cpp "
                 "%.3f), mean %.4f (%.4f), top-1 %d (%d)", qh.worst, lc_worst, qh.mean, lc_mean, qh.argmax_all,
                 lc_argmax);
#endif
    free(tok); free(idx); free(val); free(hf); free(lc);
    mattn_llama_cache_free(c32);
    mattn_llama_cache_free(c16);
    mattn_llama_free(m);
}

static void test_greedy(void **st) {
    (void)st;
    if (!g_path) skip();
    mattn_llama_info info;
    mattn_llama *m = open_model(&info);
    assert_int_equal(mattn_llama_set_activations(m, MATTN_LLAMA_ACT_F32), MATTN_OK);
    const int V = info.vocab_size;
    const char *env = getenv("METAATTN_LLAMA_GREEDY_STEPS");
    const int steps = env ? atoi(env) : g_steps;
    assert_true(steps >= 0 && steps <= g_ngreedy);
    mattn_llama_cache *c = NULL;
    assert_int_equal(mattn_llama_cache_init_kv(m, PMAX + NGREEDY, MATTN_LLAMA_KV_F32, &c), MATTN_OK);
    int32_t *prompt = ref_ids("prompt", NPROMPT * PMAX), *plen = ref_ids("prompt_len", NPROMPT);
    int32_t *greedy = ref_ids("greedy", NPROMPT * NGREEDY);
    float *margin = ref_tensor("greedy_margin", NPROMPT * NGREEDY), *lg = falloc((size_t)64 * V);
    int32_t seq[PMAX + NGREEDY];
    double tf_secs = 0.0, dec_secs = 0.0, min_margin = 1e30;
    for (int i = 0; i < g_nprompt; i++) {
        const int n = plen[i];
        const int32_t *g = greedy + i * NGREEDY;
        memcpy(seq, prompt + i * PMAX, sizeof(int32_t) * n);
        memcpy(seq + n, g, sizeof(int32_t) * (g_ngreedy - 1));
        for (int j = 0; j < g_ngreedy; j++) min_margin = fmin(min_margin, margin[i * NGREEDY + j]);
        /* the prompt but its last token, then the first steps tokens by decode steps (each picks the next
         * greedy token), then the rest teacher-forced: the logits after seq[0..n-1+j] must pick g[j] */
        mattn_llama_cache_reset(c);
        double t0 = mattn_now();
        if (mattn_llama_forward(m, c, seq, n - 1, NULL) != MATTN_OK) fail_msg("%s", mattn_llama_errmsg(m));
        for (int j = 0; j < steps; j++) {
            if (mattn_llama_decode(m, c, seq[n - 1 + j], lg) != MATTN_OK) fail_msg("%s", mattn_llama_errmsg(m));
            const int got = argmax(lg, V);
            if (got != g[j]) fail_msg("prompt %d, decode step %d: C picks %d, the reference %d", i, j, got, g[j]);
        }
        dec_secs += mattn_now() - t0;
        t0 = mattn_now();
        for (int j0 = steps; j0 < g_ngreedy; j0 += 64) {
            const int len = g_ngreedy - j0 < 64 ? g_ngreedy - j0 : 64;
            if (mattn_llama_forward(m, c, seq + n - 1 + j0, len, lg) != MATTN_OK)
                fail_msg("%s", mattn_llama_errmsg(m));
            for (int j = 0; j < len; j++) {
                const int got = argmax(lg + (size_t)j * V, V);
                if (got != g[j0 + j])
                    fail_msg("prompt %d, greedy token %d: C picks %d, the reference %d (reference margin %.4f)", i,
                             j0 + j, got, g[j0 + j], (double)margin[i * NGREEDY + j0 + j]);
            }
        }
        tf_secs += mattn_now() - t0;
    }
    print_message("  %d prompts x %d greedy tokens equal to the reference (the prompt and the first %d by decode "
                  "steps: %.2f s; the rest teacher-forced: %.2f s); smallest reference top-2 margin on the way %.4f\n",
                  g_nprompt, g_ngreedy, steps, dec_secs, tf_secs, min_margin);
    free(prompt); free(plen); free(greedy); free(margin); free(lg);
    mattn_llama_cache_free(c);
    mattn_llama_free(m);
}

/* Perplexity of the held-out text (1024 tokens of tokenizer_text.txt):
 * with fp32 activations and cache within 0.5 % of the reference's (numpy
 * f64; measured 1.00000x); with the defaults (8-bit activations, f16
 * cache) no further from it than 1.25x llama.cpp's distance (measured: C
 * 1.00474x, llama.cpp 1.00504x; 1.00516x with an fp32 cache — rounding the
 * activations to 8 bits costs this model half a percent of perplexity, in
 * both engines). */
static void test_perplexity(void **st) {
    (void)st;
    if (!g_path) skip();
    mattn_llama_info info;
    mattn_llama *m = open_model(&info);
    const int V = info.vocab_size;
    mattn_llama_cache *c32 = NULL, *c16 = NULL;
    open_caches(m, NPPL, &c32, &c16);
    int32_t *tok = ref_ids("ppl_tokens", NPPL);
    float *ref = ref_tensor("ppl_nll", NPPL - 1), *lc = ref_tensor("ppl_nll_lcpp", NPPL - 1), *lg = falloc((size_t)64 * V);
    double r = 0.0, l = 0.0;
    for (int i = 0; i < g_nppl - 1; i++) r += ref[i] / (g_nppl - 1), l += lc[i] / (g_nppl - 1);
    for (int f32x = 1; f32x >= 0; f32x--) {
        assert_int_equal(mattn_llama_set_activations(m, f32x ? MATTN_LLAMA_ACT_F32 : MATTN_LLAMA_ACT_Q8), MATTN_OK);
        mattn_llama_cache *c = f32x ? c32 : c16;
        double nll = 0.0;
        for (int p0 = 0; p0 < g_nppl - 1; p0 += 64) {
            const int n = g_nppl - 1 - p0 < 64 ? g_nppl - 1 - p0 : 64;
            if (mattn_llama_forward(m, c, tok + p0, n, lg) != MATTN_OK) fail_msg("%s", mattn_llama_errmsg(m));
            for (int i = 0; i < n; i++) nll += (lse(lg + (size_t)i * V, V) - lg[(size_t)i * V + tok[p0 + i + 1]]) / (g_nppl - 1);
        }
        const double ratio = exp(nll - r);
        print_message("  held-out %d tokens, %s: %.5f nats/token, perplexity %.3f = %.5fx the reference's "
                      "%.3f (llama.cpp %.5fx)\n", g_nppl, f32x ? "fp32 activations, fp32 cache" :
                      "8-bit activations, f16 cache ", nll, exp(nll), ratio, exp(r), exp(l - r));
        const double tol = f32x ? 0.005 : 1.25 * fabs(exp(l - r) - 1.0);
        if (!(fabs(ratio - 1.0) <= tol))
            fail_msg("%s activations: perplexity %.5fx the reference's: more than %.2f %% off", f32x ? "fp32" : "8-bit",
                     ratio, 100 * tol);
    }
    free(tok); free(ref); free(lc); free(lg);
    mattn_llama_cache_free(c32);
    mattn_llama_cache_free(c16);
    mattn_llama_free(m);
}

int main(void) {
    const char *env = getenv("METAATTN_GGUF_MODEL");
    g_path = env && *env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(g_path, R_OK) != 0) {
        fprintf(stderr, "test_llama_model: %s not found (scripts/get-model.sh smollm2): skipped\n", g_path);
        g_path = NULL;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_256),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_perplexity),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed ? failed : g_path ? 0 : 77; /* 77: ctest's SKIP_RETURN_CODE */
}
