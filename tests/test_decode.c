/*
 * test_decode.c — decoding with a cache: step-by-step logits equal the full
 * forward over the same prefix (both controllers, soft and hard routing,
 * per-expert and shared projections, a window shorter than the sequence so
 * the local ring wraps), also with every allocation filled with NaN; the
 * length-normalised position mode refuses a cache.
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_decode_equals_forward),
        cmocka_unit_test(test_decode_poisoned_allocations),
        cmocka_unit_test(test_length_positions_refuse_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
