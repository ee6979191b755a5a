/*
 * test_layer.c — the Meta-Attention layer: soft output = sum_k alpha_k E_k,
 * a one-hot alpha reproduces that expert alone, eval-mode hard routing runs
 * sparsely yet equals the masked dense result (per-expert and shared
 * projections) with the FLOPs the routed share implies, training-mode noise
 * is reproducible from the seed, Gumbel weights are top-k, bad input gives
 * clear errors, stats and weights round-trip, and nothing reads memory it
 * did not write (allocations filled with NaN change no result).
 */
#include <unistd.h>

#include "test_util.h"

enum { B = 2, T = 19 };

static mattn_config small_cfg(void) { return test_layer_config(12, 3, 3, 8, 11); }

static float *param(mattn_layer *l, const char *name) {
    for (int i = 0; i < mattn_layer_n_params(l); i++) {
        mattn_tensor t;
        mattn_layer_param(l, i, &t);
        if (!strcmp(t.name, name)) return t.data;
    }
    fail_msg("no parameter %s", name);
    return NULL;
}

/* Random controller weights so routing differs from token to token. */
static void randomise_controller(mattn_layer *l, const mattn_config *c, uint64_t seed, double std) {
    fill_normal(param(l, "controller.net.0.weight"), (size_t)c->controller_hidden * (c->d_model + 2), seed, std);
    fill_normal(param(l, "controller.net.0.bias"), (size_t)c->controller_hidden, seed + 1, std);
    fill_normal(param(l, "controller.net.3.weight"), (size_t)c->n_experts * c->controller_hidden, seed + 2, std);
    fill_normal(param(l, "controller.net.3.bias"), (size_t)c->n_experts, seed + 3, std);
}

/* Dense outputs of each built-in expert with the layer's weights (for
 * share_qkv: per-expert copies of the shared projections). */
static void dense_experts(mattn_layer *l, const mattn_config *cfg, const float *x,
                          const mattn_masks *m, float *Y[3]) {
    static const char *names[3] = {"full", "linear", "local"};
    mattn_config c = *cfg;
    c.share_qkv = 0;
    const int D = c.d_model;
    for (int k = 0; k < 3; k++) {
        mattn_expert *e;
        assert_int_equal(mattn_expert_build(names[k], &c, &e), MATTN_OK);
        mattn_builtin *b = e->state;
        char n1[64], n2[64];
        snprintf(n1, sizeof n1, cfg->share_qkv ? "qkv.weight" : "experts.%d.qkv.weight", k);
        snprintf(n2, sizeof n2, cfg->share_qkv ? "out_proj.weight" : "experts.%d.out_proj.weight", k);
        memcpy(b->w_qkv, param(l, n1), sizeof(float) * 3 * D * D);
        memcpy(b->w_o, param(l, n2), sizeof(float) * D * D);
        b->expert_index = k;
        void *work = malloc(e->vt->workspace_size(e->state, B, T));
        mattn_expert_call call = {.x = x, .B = B, .T = T, .masks = m, .n_rows = B * T, .out = Y[k], .work = work};
        assert_int_equal(e->vt->forward(e->state, &call), MATTN_OK);
        free(work);
        mattn_expert_free(e);
    }
}

static void merged(const float *w, float *Y[3], float *out, int D) {
    for (int n = 0; n < B * T; n++)
        for (int d = 0; d < D; d++) {
            double s = 0;
            for (int k = 0; k < 3; k++) s += (double)w[n * 3 + k] * (w[n * 3 + k] != 0 ? Y[k][n * D + d] : 0);
            out[n * D + d] = (float)s;
        }
}

// ----------------------------------------------------------------------------

static void test_soft_is_weighted_sum(void **st) {
    (void)st;
    for (int v = 0; v < 8; v++) {
        mattn_config c = small_cfg();
        c.controller = v & 1 ? MATTN_CONTROLLER_PRIOR_FREE : MATTN_CONTROLLER_BAYESIAN;
        c.causal = (v >> 1) & 1;
        c.share_qkv = (v >> 2) & 1;
        mattn_layer *l;
        assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
        randomise_controller(l, &c, 5, 0.5);
        mattn_layer_set_training(l, 0);
        const int D = c.d_model, N = B * T;
        float *x = falloc(N * D), *out = falloc(N * D), *ref = falloc(N * D), *Y[3];
        for (int k = 0; k < 3; k++) Y[k] = falloc(N * D);
        fill_normal(x, N * D, 1, 1.0);
        uint8_t kp[B * T];
        for (int i = 0; i < N; i++) kp[i] = i % 7 != 3;
        mattn_masks m = {.key_padding = kp};
        float aux;
        mattn_stats s;
        assert_int_equal(mattn_layer_forward(l, x, B, T, &m, out, &aux, &s), MATTN_OK);
        dense_experts(l, &c, x, &m, Y);
        merged(mattn_layer_alpha(l), Y, ref, D);
        assert_close(out, ref, N * D, 2e-6, "soft = sum alpha E");
        assert_memory_equal(mattn_layer_alpha(l), mattn_layer_merge_weights(l), sizeof(float) * N * 3);
        double ws = s.weight[0] + s.weight[1] + s.weight[2];
        assert_true(fabs(ws - 1) < 1e-5 && s.exec_frac[0] == 1 && s.exec_frac[2] == 1);
        assert_true((mattn_layer_beta_hat(l) != NULL) == (c.controller == MATTN_CONTROLLER_BAYESIAN));
        for (int k = 0; k < 3; k++) free(Y[k]);
        free(x); free(out); free(ref);
        mattn_layer_free(l);
    }
}

static void test_one_hot_alpha_is_that_expert(void **st) {
    (void)st;
    mattn_config c = small_cfg();
    c.controller = MATTN_CONTROLLER_PRIOR_FREE;
    for (int k = 0; k < 3; k++) {
        mattn_layer *l;
        assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
        mattn_layer_set_training(l, 0);
        float *b2 = param(l, "controller.net.3.bias");
        memset(param(l, "controller.net.3.weight"), 0, sizeof(float) * 3 * c.controller_hidden);
        for (int i = 0; i < 3; i++) b2[i] = i == k ? 80.0f : -80.0f;
        const int D = c.d_model, N = B * T;
        float *x = falloc(N * D), *out = falloc(N * D), *Y[3];
        for (int i = 0; i < 3; i++) Y[i] = falloc(N * D);
        fill_normal(x, N * D, 2, 1.0);
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, NULL), MATTN_OK);
        dense_experts(l, &c, x, NULL, Y);
        assert_close(out, Y[k], N * D, 1e-6, "one-hot alpha");
        for (int i = 0; i < 3; i++) free(Y[i]);
        free(x); free(out);
        mattn_layer_free(l);
    }
}

/* Eval hard routing: output equals the masked dense merge, and each expert's
 * FLOPs are exactly those of its routed tokens. */
static void test_sparse_hard_equals_dense(void **st) {
    (void)st;
    for (int v = 0; v < 8; v++) {
        mattn_config c = small_cfg();
        c.hard_routing = 1;
        c.controller = v & 1 ? MATTN_CONTROLLER_PRIOR_FREE : MATTN_CONTROLLER_BAYESIAN;
        c.hard_top_k = (v >> 1) & 1 ? 2 : 1;
        c.share_qkv = (v >> 2) & 1;
        c.causal = v % 3 == 0;
        c.uncertainty_threshold = -2.0; /* Bayesian: a mix of gated and soft tokens */
        mattn_layer *l;
        assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
        randomise_controller(l, &c, 9, 1.0);
        mattn_layer_set_training(l, 0);
        const int D = c.d_model, N = B * T;
        float *x = falloc(N * D), *out = falloc(N * D), *ref = falloc(N * D), *Y[3];
        for (int k = 0; k < 3; k++) Y[k] = falloc(N * D);
        fill_normal(x, N * D, 3, 1.0);
        mattn_stats s;
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, &s), MATTN_OK);
        dense_experts(l, &c, x, NULL, Y);
        const float *w = mattn_layer_merge_weights(l), *al = mattn_layer_alpha(l);
        merged(w, Y, ref, D);
        assert_close(out, ref, N * D, 2e-6, "sparse hard = masked dense");
        int hard_tokens = 0, ran[3] = {0};
        for (int n = 0; n < N; n++) {
            int nz = 0;
            double sum = 0;
            for (int k = 0; k < 3; k++) { nz += w[n * 3 + k] != 0; sum += w[n * 3 + k]; ran[k] += w[n * 3 + k] != 0; }
            assert_true(fabs(sum - 1) < 1e-6);
            hard_tokens += nz <= c.hard_top_k;
            if (c.hard_top_k == 1 && nz == 1) { /* the argmax of alpha */
                int am = 0;
                for (int k = 1; k < 3; k++) if (al[n * 3 + k] > al[n * 3 + am]) am = k;
                assert_true(w[n * 3 + am] == 1.0f);
            }
        }
        assert_true(hard_tokens > 0);
        for (int k = 0; k < 3; k++) assert_true(fabs(s.exec_frac[k] - (double)ran[k] / N) < 1e-12);
        assert_true(s.seconds > 0.0 && s.seconds < 60.0); /* measured wall-clock of the call */
        if (!c.share_qkv && !c.causal) {
            /* full, bidirectional: Q and W_o for its n tokens, K/V for all N, n*T keys */
            double n = ran[0];
            double want = n > 0 ? 2 * n * D * D * 2 + 2.0 * N * 2 * D * D + n * T * 4 * D : 0;
            assert_true(fabs(s.flops[0] - want) <= 1e-9 * want);
        }
        for (int k = 0; k < 3; k++) free(Y[k]);
        free(x); free(out); free(ref);
        mattn_layer_free(l);
    }
}


/* Forced routes: each position runs exactly its forced expert, the output is
 * that expert's dense output there, and bad routes are refused. */
static void test_forced_routes(void **st) {
    (void)st;
    for (int share = 0; share < 2; share++) {
        mattn_config c = small_cfg();
        c.hard_routing = 1;
        c.share_qkv = share;
        c.causal = 1;
        mattn_layer *l;
        assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
        mattn_layer_set_training(l, 0);
        const int D = c.d_model, N = B * T;
        uint8_t route[T];
        for (int t = 0; t < T; t++) route[t] = (uint8_t)((t * 7 + 1) % 3);
        assert_int_equal(mattn_layer_force_routes(l, route, T), MATTN_OK);
        float *x = falloc(N * D), *out = falloc(N * D), *Y[3];
        for (int k = 0; k < 3; k++) Y[k] = falloc(N * D);
        fill_normal(x, N * D, 5, 1.0);
        mattn_stats s;
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, &s), MATTN_OK);
        dense_experts(l, &c, x, NULL, Y);
        float *ref = falloc(N * D);
        merged(mattn_layer_merge_weights(l), Y, ref, D);
        assert_close(out, ref, N * D, 2e-6, "forced routes = that expert's dense output");
        int cnt[3] = {0};
        for (int t = 0; t < T; t++) cnt[route[t]]++;
        for (int k = 0; k < 3; k++) {
            assert_true(fabs(s.exec_frac[k] - (double)cnt[k] / T) < 1e-12);
            for (int n = 0; n < N; n++) assert_true(mattn_layer_merge_weights(l)[n * 3 + k] == (route[n % T] == k));
        }
        /* T beyond the routes, an expert index out of range */
        assert_int_equal(mattn_layer_force_routes(l, route, T - 1), MATTN_OK);
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, NULL), MATTN_ERR_INVALID_ARG);
        assert_non_null(strstr(mattn_layer_errmsg(l), "forced routes cover"));
        route[2] = 3;
        assert_int_equal(mattn_layer_force_routes(l, route, T), MATTN_ERR_INVALID_ARG);
        assert_int_equal(mattn_layer_force_routes(l, NULL, 0), MATTN_OK);
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, NULL), MATTN_OK);
        for (int k = 0; k < 3; k++) free(Y[k]);
        free(x); free(out); free(ref);
        mattn_layer_free(l);
    }
}

/* expert_costs = [1.0]: a layer of the built-in full expert alone (the
 * all-full baseline).  Expert 0's weights come first from the init stream,
 * so it equals a three-expert layer of the same seed forced to full, in
 * training and eval mode; more than 3 built-ins is an error. */
static void test_single_expert_layer(void **st) {
    (void)st;
    for (int share = 0; share < 2; share++) {
        mattn_config c3 = small_cfg(), c1 = small_cfg();
        c3.causal = c1.causal = 1;
        c3.dropout = c1.dropout = 0.0;
        c3.share_qkv = c1.share_qkv = share;
        c3.hard_routing = 1;
        c1.n_experts = 1;
        c1.expert_costs[0] = 1.0;
        mattn_layer *l1, *l3;
        assert_int_equal(mattn_layer_init(&c1, NULL, &l1), MATTN_OK);
        assert_int_equal(mattn_layer_init(&c3, NULL, &l3), MATTN_OK);
        mattn_layer_set_training(l3, 0);
        uint8_t route[T] = {0};
        assert_int_equal(mattn_layer_force_routes(l3, route, T), MATTN_OK);
        const int D = c1.d_model, N = B * T;
        float *x = falloc(N * D), *o1 = falloc(N * D), *o3 = falloc(N * D);
        fill_normal(x, N * D, 8, 1.0);
        for (int training = 0; training < 2; training++) {
            mattn_layer_set_training(l1, training);
            assert_int_equal(mattn_layer_forward(l1, x, B, T, NULL, o1, NULL, NULL), MATTN_OK);
            assert_int_equal(mattn_layer_forward(l3, x, B, T, NULL, o3, NULL, NULL), MATTN_OK);
            assert_close(o1, o3, N * D, 1e-6, "one-expert layer = three-expert layer forced to full");
            for (int n = 0; n < N; n++) assert_true(mattn_layer_alpha(l1)[n] == 1.0f);
        }
        free(x); free(o1); free(o3);
        mattn_layer_free(l1);
        mattn_layer_free(l3);
    }
}

/* Gradients off: the same outputs in every routing mode (experts share one
 * workspace and merge as they go), and no backward after such a forward. */
static void test_no_grad_same_output(void **st) {
    (void)st;
    for (int v = 0; v < 4; v++) {
        mattn_config c = small_cfg();
        c.share_qkv = v & 1;
        c.hard_routing = (v >> 1) & 1;
        c.causal = 1;
        mattn_layer *l;
        assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
        randomise_controller(l, &c, 4, 1.0);
        mattn_layer_set_training(l, 0);
        const int D = c.d_model, N = B * T;
        float *x = falloc(N * D), *o1 = falloc(N * D), *o2 = falloc(N * D), *g = falloc(N * D);
        fill_normal(x, N * D, 8, 1.0);
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, o1, NULL, NULL), MATTN_OK);
        mattn_layer_set_grad(l, 0);
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, o2, NULL, NULL), MATTN_OK);
        assert_close(o1, o2, N * D, 0.0, "no-grad forward == forward");
        assert_int_equal(mattn_layer_backward(l, x, NULL, o1, 0.0f, NULL), MATTN_ERR_MISUSE);
        assert_non_null(strstr(mattn_layer_errmsg(l), "gradients off"));
        mattn_layer_set_grad(l, 1);
        free(x); free(o1); free(o2); free(g);
        mattn_layer_free(l);
    }
}

static void test_training_noise_reproducible(void **st) {
    (void)st;
    for (int hard = 0; hard < 2; hard++) {
        mattn_config c = small_cfg();
        c.hard_routing = hard;
        c.hard_top_k = 2;
        mattn_layer *l1, *l2;
        assert_int_equal(mattn_layer_init(&c, NULL, &l1), MATTN_OK);
        assert_int_equal(mattn_layer_init(&c, NULL, &l2), MATTN_OK);
        const int D = c.d_model, N = B * T;
        float *x = falloc(N * D), *o1 = falloc(N * D), *o2 = falloc(N * D), *o3 = falloc(N * D);
        fill_normal(x, N * D, 4, 1.0);
        assert_int_equal(mattn_layer_forward(l1, x, B, T, NULL, o1, NULL, NULL), MATTN_OK);
        assert_int_equal(mattn_layer_forward(l2, x, B, T, NULL, o2, NULL, NULL), MATTN_OK);
        assert_memory_equal(o1, o2, sizeof(float) * N * D);
        assert_int_equal(mattn_layer_forward(l1, x, B, T, NULL, o3, NULL, NULL), MATTN_OK);
        assert_true(memcmp(o1, o3, sizeof(float) * N * D) != 0); /* next step, new noise */
        if (hard) { /* Gumbel top-2: two non-zero weights summing to 1 */
            const float *w = mattn_layer_merge_weights(l1);
            for (int n = 0; n < N; n++) {
                int nz = (w[3 * n] != 0) + (w[3 * n + 1] != 0) + (w[3 * n + 2] != 0);
                assert_int_equal(nz, 2);
                assert_true(fabs(w[3 * n] + w[3 * n + 1] + w[3 * n + 2] - 1) < 1e-6);
            }
        }
        /* eval mode has no noise */
        mattn_layer_set_training(l1, 0);
        mattn_layer_set_training(l2, 0);
        mattn_layer_forward(l1, x, B, T, NULL, o1, NULL, NULL);
        mattn_layer_forward(l2, x, B, T, NULL, o2, NULL, NULL);
        mattn_layer_forward(l2, x, B, T, NULL, o3, NULL, NULL);
        assert_memory_equal(o1, o2, sizeof(float) * N * D);
        assert_memory_equal(o2, o3, sizeof(float) * N * D);
        free(x); free(o1); free(o2); free(o3);
        mattn_layer_free(l1);
        mattn_layer_free(l2);
    }
}

static void test_errors(void **st) {
    (void)st;
    mattn_config c = small_cfg();
    mattn_layer *l = (mattn_layer *)1;
    c.n_heads = 5;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_ERR_INVALID_ARG);
    assert_null(l);
    c = small_cfg();
    c.n_experts = 4;
    for (int k = 0; k < 4; k++) c.expert_costs[k] = 0.5;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "1 to 3 costs"));
    c = small_cfg();
    mattn_config other = c;
    other.d_model = 16;
    other.n_heads = 4;
    mattn_expert *ex[3];
    assert_int_equal(mattn_expert_build("full", &c, &ex[0]), MATTN_OK);
    assert_int_equal(mattn_expert_build("linear", &other, &ex[1]), MATTN_OK);
    assert_int_equal(mattn_expert_build("local", &c, &ex[2]), MATTN_OK);
    assert_int_equal(mattn_layer_init(&c, ex, &l), MATTN_ERR_INVALID_ARG);
    for (int k = 0; k < 3; k++) mattn_expert_free(ex[k]); /* still ours after failure */
    assert_int_equal(mattn_expert_build("nope", &c, &ex[0]), MATTN_ERR_NOT_FOUND);
    assert_non_null(strstr(mattn_last_error(), "nope"));

    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    float x[B * T * 12] = {0}, out[B * T * 12];
    assert_int_equal(mattn_layer_forward(l, NULL, B, T, NULL, out, NULL, NULL), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_layer_errmsg(l), "x"));
    assert_int_equal(mattn_layer_forward(l, x, 0, T, NULL, out, NULL, NULL), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_layer_errmsg(l), "B=0"));
    x[5 * 12 + 4] = NAN;
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, NULL), MATTN_ERR_NUMERIC);
    assert_non_null(strstr(mattn_layer_errmsg(l), "token 5"));
    x[5 * 12 + 4] = 0;
    assert_int_equal(mattn_layer_forward(l, x, B, 1, NULL, out, NULL, NULL), MATTN_OK); /* T = 1 */
    mattn_layer_free(l);
    mattn_layer_free(NULL);
    mattn_expert_free(NULL);
}

static void test_stats_format(void **st) {
    (void)st;
    mattn_stats s = {.n_experts = 3, .weight = {0.341, 0.381, 0.278}, .entropy = 1.094,
                     .expected_cost = 0.474, .collapsed = 0.0, .uncertainty = -2.1, .has_uncertainty = 1};
    char buf[256];
    mattn_stats_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "RoutingStats(E1=0.341 | E2=0.381 | E3=0.278  entropy=1.0940  cost=0.4740  "
                             "collapsed=0.00%  uncertainty=-2.1000)");
    char tiny[8];
    int n = mattn_stats_format(&s, tiny, sizeof tiny);
    assert_true(n > 8 && strlen(tiny) == 7);
}

static void test_save_load(void **st) {
    (void)st;
    char dir[] = "/tmp/mattn_layer_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    for (int share = 0; share < 2; share++) {
        mattn_config c = small_cfg();
        c.share_qkv = share;
        mattn_layer *a, *b;
        assert_int_equal(mattn_layer_init(&c, NULL, &a), MATTN_OK);
        randomise_controller(a, &c, 7, 0.3);
        assert_int_equal(mattn_layer_save(a, path), MATTN_OK);
        c.seed = 99;
        assert_int_equal(mattn_layer_init(&c, NULL, &b), MATTN_OK);
        assert_int_equal(mattn_layer_load(b, path), MATTN_OK);
        for (int i = 0; i < mattn_layer_n_params(a); i++) {
            mattn_tensor ta, tb;
            mattn_layer_param(a, i, &ta);
            mattn_layer_param(b, i, &tb);
            assert_string_equal(ta.name, tb.name);
            size_t n = 1;
            for (int d = 0; d < ta.ndim; d++) n *= (size_t)ta.shape[d];
            assert_memory_equal(ta.data, tb.data, n * sizeof(float));
        }
        mattn_layer_free(b);
        /* another config: shapes or names differ -> clear error, weights untouched */
        c.d_model = 16;
        c.n_heads = 4;
        assert_int_equal(mattn_layer_init(&c, NULL, &b), MATTN_OK);
        float before = param(b, "controller.net.0.bias")[0];
        assert_int_not_equal(mattn_layer_load(b, path), MATTN_OK);
        assert_non_null(strstr(mattn_layer_errmsg(b), "w.safetensors"));
        assert_true(param(b, "controller.net.0.bias")[0] == before);
        mattn_layer_free(b);
        c = small_cfg();
        c.share_qkv = share;
        c.beta_0 = 2.0; /* prior_beta buffer disagrees */
        assert_int_equal(mattn_layer_init(&c, NULL, &b), MATTN_OK);
        assert_int_equal(mattn_layer_load(b, path), MATTN_ERR_INVALID_ARG);
        assert_non_null(strstr(mattn_layer_errmsg(b), "prior_beta"));
        mattn_layer_free(b);
        mattn_layer_free(a);
    }
    assert_int_equal(mattn_layer_load((mattn_layer *)NULL, path), MATTN_ERR_INVALID_ARG);
    remove(path);
    rmdir(dir);
}

/* Every new allocation filled with 0xff (each float a NaN until written):
 * no variant may read memory it did not write — the results must be finite
 * and bit-identical to a run on ordinary allocations.  Eval hard routing
 * (sparse token subsets: the kernels' tiles reach keys nobody projected),
 * gradients off, and training forward + backward; both controllers, shared
 * and per-expert projections, causal and not. */
static void run_variant(int v, float *res, size_t n_res) {
    mattn_config c = small_cfg();
    c.controller = v & 1 ? MATTN_CONTROLLER_PRIOR_FREE : MATTN_CONTROLLER_BAYESIAN;
    c.share_qkv = (v >> 1) & 1;
    c.causal = (v >> 2) & 1;
    c.hard_top_k = (v >> 3) & 1 ? 2 : 1;
    c.uncertainty_threshold = -2.0;
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    randomise_controller(l, &c, 9 + (uint64_t)v, 1.0);
    const int D = c.d_model, N = B * T;
    assert_true(n_res == (size_t)5 * N * D);
    float *x = falloc(N * D), *g = falloc(N * D);
    fill_normal(x, N * D, 3, 1.0);
    fill_normal(g, N * D, 4, 1.0);
    mattn_layer_cfg_mut(l)->hard_routing = 1;
    mattn_layer_set_training(l, 0);
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, res, NULL, NULL), MATTN_OK);
    mattn_layer_set_grad(l, 0);
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, res + N * D, NULL, NULL), MATTN_OK);
    mattn_layer_set_grad(l, 1);
    mattn_layer_cfg_mut(l)->hard_routing = 0;
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, res + 2 * N * D, NULL, NULL), MATTN_OK);
    mattn_layer_set_training(l, 1);
    float aux;
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, res + 3 * N * D, &aux, NULL), MATTN_OK);
    assert_int_equal(mattn_layer_backward(l, x, NULL, g, 1.0f, res + 4 * N * D), MATTN_OK);
    for (size_t i = 0; i < n_res; i++)
        if (!isfinite(res[i])) fail_msg("variant %d: result %zu is %g", v, i, (double)res[i]);
    free(x);
    free(g);
    mattn_layer_free(l);
}

static void test_poisoned_allocations(void **st) {
    (void)st;
    const size_t n = (size_t)5 * B * T * small_cfg().d_model;
    float *a = falloc(n), *b = falloc(n);
    for (int v = 0; v < 16; v++) {
        run_variant(v, a, n);
        mattn_alloc_fill(0xff);
        run_variant(v, b, n);
        mattn_alloc_fill(-1);
        if (memcmp(a, b, n * sizeof(float))) {
            size_t i = 0;
            while (a[i] == b[i]) i++;
            fail_msg("variant %d: result %zu differs with poisoned allocations (%g vs %g)", v, i, (double)a[i],
                     (double)b[i]);
        }
    }
    free(a);
    free(b);
}

/* The budget's multipliers: one dual-ascent step per training forward, from
 * what it measured of the merge weights; saved and loaded bit for bit. */
static void test_budget_duals(void **st) {
    (void)st;
    mattn_config c = small_cfg();
    c.controller = MATTN_CONTROLLER_PRIOR_FREE;
    c.cost_target = 0.1;
    c.full_share = 0.5;
    c.usage_floor = 0.05;
    c.dual_lr = 0.5;
    mattn_layer *l, *l2;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    assert_int_equal(mattn_layer_n_duals(l), 5);
    assert_int_equal(mattn_layer_update_duals(l), MATTN_ERR_MISUSE); /* nothing measured yet */
    const int D = c.d_model;
    float *x = malloc(sizeof(float) * B * T * D), *out = malloc(sizeof(float) * B * T * D);
    fill_normal(x, (size_t)B * T * D, 3, 1.0);
    mattn_stats s;
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, &s), MATTN_OK);
    assert_int_equal(mattn_layer_update_duals(l), MATTN_OK);
    const double *d = mattn_layer_duals(l);
    assert_true(fabs(d[0] - 0.5 * (s.expected_cost - 0.1)) < 1e-9 && d[0] > 0);
    assert_true(fabs(d[1] - 0.5 * (s.weight[0] - 0.5)) < 1e-9);
    for (int k = 0; k < 3; k++) assert_true(d[2 + k] == fmax(0.0, 0.5 * (0.05 - s.weight[k])));
    mattn_layer_set_training(l, 0); /* an eval forward measures nothing for the duals */
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, NULL), MATTN_OK);
    assert_int_equal(mattn_layer_update_duals(l), MATTN_ERR_MISUSE);
    mattn_layer_duals(l)[1] = -0.123456789012345; /* any double survives the file */
    const char *path = "/tmp/mattn_test_duals.safetensors";
    assert_int_equal(mattn_layer_save(l, path), MATTN_OK);
    assert_int_equal(mattn_layer_init(&c, NULL, &l2), MATTN_OK);
    assert_int_equal(mattn_layer_load(l2, path), MATTN_OK);
    assert_memory_equal(mattn_layer_duals(l2), mattn_layer_duals(l), 5 * sizeof(double));
    remove(path);
    mattn_layer_free(l2);
    mattn_layer_free(l);
    mattn_config plain = small_cfg();
    assert_int_equal(mattn_layer_init(&plain, NULL, &l), MATTN_OK);
    assert_int_equal(mattn_layer_n_duals(l), 0);
    assert_int_equal(mattn_layer_update_duals(l), MATTN_OK); /* no budget: nothing to do */
    mattn_layer_free(l);
    free(x);
    free(out);
}

/* Route counts: routes forced by position half carry ln 2 nats about the
 * position bucket and none about a constant token. */
static void test_route_counts(void **st) {
    (void)st;
    mattn_config c = small_cfg();
    c.causal = 1;
    c.hard_routing = 1;
    c.uncertainty_threshold = INFINITY;
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&c, NULL, &l), MATTN_OK);
    mattn_layer_set_training(l, 0);
    const int D = c.d_model, TT = 16, BB = 64;
    uint8_t f[16];
    for (int t = 0; t < TT; t++) f[t] = t < TT / 2 ? 0 : 2;
    assert_int_equal(mattn_layer_force_routes(l, f, TT), MATTN_OK);
    float *x = malloc(sizeof(float) * BB * TT * D), *out = malloc(sizeof(float) * BB * TT * D);
    int32_t *tok = calloc((size_t)BB * TT, sizeof *tok);
    fill_normal(x, (size_t)BB * TT * D, 3, 1.0);
    mattn_route_counts *rc;
    assert_int_equal(mattn_route_counts_init(3, 256, 2, &rc), MATTN_OK);
    assert_int_equal(mattn_route_counts_add(rc, l, tok), MATTN_ERR_MISUSE); /* no forward yet */
    assert_int_equal(mattn_layer_forward(l, x, BB, TT, NULL, out, NULL, NULL), MATTN_OK);
    assert_int_equal(mattn_route_counts_add(rc, l, tok), MATTN_OK);
    assert_int_equal(mattn_route_counts_total(rc), BB * TT);
    const double n = BB * TT, want = log(2.0) + ((2 - 1) + (2 - 1) - (2 - 1)) / (2 * n);
    assert_true(fabs(mattn_route_counts_mi_position(rc) - want) < 1e-12);
    assert_true(mattn_route_counts_mi_token(rc) == 0.0);
    tok[5] = 300;
    assert_int_equal(mattn_route_counts_add(rc, l, tok), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_last_error(), "300"));
    mattn_route_counts_reset(rc);
    assert_int_equal(mattn_route_counts_total(rc), 0);
    mattn_route_counts_free(rc);
    assert_int_equal(mattn_route_counts_init(0, 256, 2, &rc), MATTN_ERR_INVALID_ARG);
    assert_null(rc);
    mattn_route_counts_free(NULL);
    mattn_layer_free(l);
    free(x), free(out), free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_counts),
        cmocka_unit_test(test_budget_duals),
        cmocka_unit_test(test_soft_is_weighted_sum),      cmocka_unit_test(test_one_hot_alpha_is_that_expert),
        cmocka_unit_test(test_sparse_hard_equals_dense),  cmocka_unit_test(test_training_noise_reproducible),
        cmocka_unit_test(test_errors),                    cmocka_unit_test(test_stats_format),
        cmocka_unit_test(test_save_load),                 cmocka_unit_test(test_forced_routes),
        cmocka_unit_test(test_no_grad_same_output),       cmocka_unit_test(test_single_expert_layer),
        cmocka_unit_test(test_poisoned_allocations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
