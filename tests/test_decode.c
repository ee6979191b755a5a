/*
 * test_decode.c — decoding with a cache: step-by-step logits equal the full
 * forward over the same prefix (both controllers, soft and hard routing,
 * per-expert and shared projections, a window shorter than the sequence so
 * the local ring wraps), also with every allocation filled with NaN; the
 * length-normalised position mode refuses a cache.  The public sampler:
 * with top_p = 1 it picks what `metaattn generate`'s own sampler picked
 * before it moved into the library (the reference copy below), the nucleus
 * keeps the smallest run of likely tokens, bad arguments are named.
 */
#include "test_util.h"

static void run(int controller, int hard, int share) {
    mattn_lm_config cfg = test_lm_config(13, 12, 1, 11);
    cfg.attn.controller_hidden = 6;
    cfg.attn.controller = controller;
    cfg.attn.hard_routing = hard;
    cfg.attn.share_qkv = share;
    cfg.attn.uncertainty_threshold = 1e9; /* Bayesian: every token hard when hard_routing */
    mattn_model *m;
    assert_int_equal(mattn_model_init(&cfg, &m), MATTN_OK);
    /* stronger weights than the init, so routing is not uniform */
    mattn_rng r;
    mattn_rng_seed(&r, 8);
    for (int i = 0; i < mattn_model_n_params(m); i++) {
        mattn_tensor t;
        mattn_model_param(m, i, &t);
        size_t n = (size_t)t.shape[0] * (t.ndim > 1 ? (size_t)t.shape[1] : 1);
        for (size_t j = 0; j < n; j++) t.data[j] += (float)(0.5 * mattn_rng_normal(&r));
    }
    mattn_model_set_training(m, 0);
    enum { B = 2, T = 12, V = 13 };
    int32_t seq[B * T];
    for (int i = 0; i < B * T; i++) seq[i] = (i * 7 + i / 5) % V;
    mattn_model_cache *c;
    assert_int_equal(mattn_model_cache_init(m, B, &c), MATTN_OK);
    float logits[B * V];
    double worst = 0.0;
    int hard_mixed = 0;
    for (int t = 0; t < T; t++) {
        int32_t tok[B] = {seq[t], seq[T + t]};
        assert_int_equal(mattn_model_decode(m, c, tok, logits), MATTN_OK);
        mattn_stats s;
        mattn_model_layer_stats(m, 0, &s);
        if (hard && s.exec_frac[0] + s.exec_frac[1] + s.exec_frac[2] < 1.5) hard_mixed = 1;
        /* full forward over the prefix [0, t] of both sequences */
        int32_t pre[B * T];
        for (int b = 0; b < B; b++) memcpy(pre + b * (t + 1), seq + b * T, sizeof(int32_t) * (t + 1));
        assert_int_equal(mattn_model_forward(m, pre, NULL, B, t + 1, NULL, NULL), MATTN_OK);
        const float *full = mattn_model_logits(m);
        for (int b = 0; b < B; b++)
            for (int v = 0; v < V; v++)
                worst = fmax(worst, fabs(logits[b * V + v] - full[((size_t)b * (t + 1) + t) * V + v]));
    }
    if (!(worst <= 1e-4))
        fail_msg("controller %d hard %d share %d: cached decode differs from the full forward by %.3g", controller, hard,
                 share, worst);
    if (hard) assert_true(hard_mixed); /* hard decode ran one expert per token */
    int32_t tok[B] = {1, 2};
    assert_int_equal(mattn_model_decode(m, c, tok, logits), MATTN_ERR_INVALID_ARG); /* position 12 = max_seq_len */
    assert_non_null(strstr(mattn_model_errmsg(m), "max_seq_len"));
    mattn_model_cache_reset(c);
    assert_int_equal(mattn_model_cache_length(c), 0);
    assert_int_equal(mattn_model_decode(m, c, tok, logits), MATTN_OK);
    mattn_model_cache_free(c);
    mattn_model_free(m);
}

static void test_cached_decode_equals_forward(void **st) {
    (void)st;
    for (int controller = 0; controller < 2; controller++)
        for (int hard = 0; hard < 2; hard++)
            for (int share = 0; share < 2; share++) run(controller, hard, share);
}

/* the same with every new allocation filled with NaN floats: nothing reads
 * memory it did not write */
static void test_decode_poisoned_allocations(void **st) {
    (void)st;
    mattn_alloc_fill(0xff);
    for (int controller = 0; controller < 2; controller++)
        for (int hard = 0; hard < 2; hard++)
            for (int share = 0; share < 2; share++) run(controller, hard, share);
    mattn_alloc_fill(-1);
}

static void test_length_positions_refuse_cache(void **st) {
    (void)st;
    mattn_lm_config cfg = mattn_lm_config_default();
    cfg.vocab_size = 5;
    cfg.n_layers = 1;
    cfg.max_seq_len = 4;
    cfg.attn.d_model = 4;
    cfg.attn.n_heads = 1;
    cfg.attn.controller_hidden = 2;
    mattn_model *m;
    assert_int_equal(mattn_model_init(&cfg, &m), MATTN_OK);
    mattn_model_cache *c;
    assert_int_equal(mattn_model_cache_init(m, 1, &c), MATTN_ERR_UNSUPPORTED);
    assert_non_null(strstr(mattn_model_errmsg(m), "position_norm"));
    mattn_model_free(m);
}

/* `metaattn generate`'s sampler before the public one (tools/generate.c up
 * to 0.1.0), verbatim: the public sampler with top_p = 1 must pick the same. */
static int sample_ref(const float *lg, int V, double temp, int top_k, mattn_rng *r) {
    int best = 0;
    for (int v = 1; v < V; v++) if (lg[v] > lg[best]) best = v;
    if (temp <= 0.0) return best;
    float kth = -INFINITY;
    if (top_k > 0 && top_k < V) {
        float prev = INFINITY;
        int taken = 0;
        while (taken < top_k) {
            float mx = -INFINITY;
            int cnt = 0;
            for (int v = 0; v < V; v++) if (lg[v] < prev && lg[v] > mx) mx = lg[v];
            for (int v = 0; v < V; v++) cnt += lg[v] == mx;
            taken += cnt;
            kth = mx;
            prev = mx;
        }
    }
    double Z = 0.0;
    for (int v = 0; v < V; v++) if (lg[v] >= kth) Z += exp((lg[v] - lg[best]) / temp);
    double u = mattn_rng_u01(r) * Z, acc = 0.0;
    int pick = best;
    for (int v = 0; v < V; v++) {
        if (lg[v] < kth) continue;
        acc += exp((lg[v] - lg[best]) / temp);
        pick = v;
        if (acc >= u) break;
    }
    return pick;
}

static void test_sampler_matches_reference(void **st) {
    (void)st;
    static const struct { double temp; int top_k, V; } cases[] = {
        {0.8, 40, 256}, {1.0, 0, 256}, {0.0, 40, 256}, {2.5, 1, 13}, {0.3, 300, 13}, {1.0, 5, 13}};
    float lg[256];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int V = cases[c].V;
        mattn_sampler_config sc = mattn_sampler_config_default();
        sc.temperature = cases[c].temp, sc.top_k = cases[c].top_k, sc.seed = 7 + c;
        mattn_sampler *s;
        assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_OK);
        mattn_rng r;
        mattn_rng_seed(&r, mattn_stream_seed(sc.seed, 0, 0, MATTN_PURPOSE_SAMPLE));
        for (int k = 0; k < 300; k++) {
            fill_normal(lg, V, 100 + k, 2.0);
            if (k % 3 == 0) lg[k % V] = lg[(k + 1) % V]; /* ties */
            if (k % 5 == 0) lg[(k + 2) % V] = -INFINITY; /* a masked token */
            int32_t tok;
            assert_int_equal(mattn_sampler_sample(s, lg, V, &tok), MATTN_OK);
            assert_int_equal(tok, sample_ref(lg, V, sc.temperature, sc.top_k, &r));
        }
        mattn_sampler_free(s);
    }
    mattn_sampler_free(NULL);
}

static void test_sampler_top_p(void **st) {
    (void)st;
    /* probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1 */
    const float lg[4] = {(float)log(0.05), (float)log(0.5), (float)log(0.15), (float)log(0.3)};
    mattn_sampler_config sc = {.temperature = 1.0, .top_k = 0, .top_p = 0.75, .seed = 3};
    mattn_sampler *s;
    assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_OK);
    int count[4] = {0};
    for (int k = 0; k < 4000; k++) {
        int32_t tok;
        assert_int_equal(mattn_sampler_sample(s, lg, 4, &tok), MATTN_OK);
        count[tok]++;
    }
    mattn_sampler_free(s);
    /* the nucleus of 0.75 is {0.5, 0.3}: renormalised 0.625 / 0.375 */
    assert_int_equal(count[0] + count[2], 0);
    assert_true(fabs(count[1] / 4000.0 - 0.625) < 0.03);
    /* a tiny nucleus is greedy; top_k 2 + top_p 0.9 is still {0.5, 0.3} */
    sc.top_p = 1e-6;
    assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_OK);
    for (int k = 0; k < 50; k++) {
        int32_t tok;
        assert_int_equal(mattn_sampler_sample(s, lg, 4, &tok), MATTN_OK);
        assert_int_equal(tok, 1);
    }
    mattn_sampler_free(s);
    sc.top_p = 0.9, sc.top_k = 2;
    assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_OK);
    for (int k = 0; k < 200; k++) {
        int32_t tok;
        assert_int_equal(mattn_sampler_sample(s, lg, 4, &tok), MATTN_OK);
        assert_true(tok == 1 || tok == 3);
    }
    mattn_sampler_free(s);
}

static void test_sampler_errors(void **st) {
    (void)st;
    mattn_sampler_config sc = mattn_sampler_config_default();
    mattn_sampler *s = (mattn_sampler *)&sc;
    sc.top_p = 0.0;
    assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_ERR_INVALID_ARG);
    assert_null(s);
    assert_non_null(strstr(mattn_last_error(), "top_p must be in (0, 1] (1 = off), got 0"));
    sc = mattn_sampler_config_default(), sc.temperature = -1;
    assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "temperature must be finite and >= 0 (0 = greedy), got -1"));
    sc = mattn_sampler_config_default(), sc.top_k = -2;
    assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "top_k must be >= 0 (0 = all tokens), got -2"));
    sc = mattn_sampler_config_default();
    assert_int_equal(mattn_sampler_init(&sc, &s), MATTN_OK);
    float lg[3] = {0.0f, NAN, 1.0f};
    int32_t tok = -1;
    assert_int_equal(mattn_sampler_sample(s, lg, 3, &tok), MATTN_ERR_NUMERIC);
    assert_non_null(strstr(mattn_last_error(), "non-finite value (nan) at 1"));
    lg[1] = -INFINITY, lg[0] = -INFINITY, lg[2] = -INFINITY;
    assert_int_equal(mattn_sampler_sample(s, lg, 3, &tok), MATTN_ERR_NUMERIC);
    assert_int_equal(mattn_sampler_sample(s, lg, 0, &tok), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "V must be >= 1, got 0"));
    assert_int_equal(mattn_sampler_sample(s, NULL, 3, &tok), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "logits is NULL"));
    assert_int_equal(tok, -1);
    mattn_sampler_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_decode_equals_forward),
        cmocka_unit_test(test_decode_poisoned_allocations),
        cmocka_unit_test(test_length_positions_refuse_cache),
        cmocka_unit_test(test_sampler_matches_reference),
        cmocka_unit_test(test_sampler_top_p),
        cmocka_unit_test(test_sampler_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
