/*
 * test_distill.c — distilling the routing of a pretrained model
 * (mattn_distill_*) on the tiny random LLaMA of
 * tests/fixtures/gen_llama_fixtures.py (2 blocks, d 64, 4 query heads on 2
 * K/V heads of 16):
 *
 *  - the training forward's teacher equals the inference forward
 *    (mattn_llama_forward, fp32) to rounding, and fresh routing's KL is 0;
 *    its student, on mixed routes, the routed model's prefill and decode
 *    (the same routes; trained as deployed);
 *  - finite differences of the whole loss (KL + attention transfer +
 *    budget) against the backward: soft merge for every trained tensor
 *    (controllers, feature maps) and the input embeddings (the activation
 *    gradient through every frozen block: RMSNorm, RoPE, GQA softmax with
 *    window and sinks, the linear expert, SwiGLU, the head); hard routes
 *    for the embeddings and the feature maps;
 *  - training moves what it should (the maps' error down, the share of
 *    full to its budget); resume from the saved state is exact;
 *  - misuse refused by name.
 */
#include "test_util.h"

#include "surgery/surgery.h"

#define FIX "tests/fixtures/"
#define V 100
#define T 24

static mattn_llama *open_tiny(void) {
    mattn_llama *m = NULL;
    if (mattn_llama_open(FIX "llama_tiny_f32.gguf", &m) != MATTN_OK) fail_msg("%s", mattn_last_error());
    return m;
}

static void tokens(int32_t *tok, int n, uint64_t seed) {
    mattn_rng r;
    mattn_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(mattn_rng_next(&r) % V);
}

/* Routing of window 3, 1 sink, feature_dim 8, both blocks' controllers
 * perturbed so that every expert takes tokens, maps off the identity. */
static void mixed(mattn_llama *m) {
    mattn_llama_routing_config cfg = mattn_llama_routing_default();
    cfg.window = 3, cfg.sinks = 1, cfg.controller_hidden = 6, cfg.feature_dim = 8, cfg.seed = 3;
    assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_OK);
    for (int l = 0; l < 2; l++) {
        mattn_llama_route_layer *ly = &m->routing->layers[l];
        const size_t nq = (size_t)4 * 16 * 8, nk = (size_t)2 * 16 * 8;
        float *noise = falloc(nq);
        fill_normal(noise, nq, 40 + l, 0.3);
        for (size_t i = 0; i < nq; i++) ly->fq[i] += noise[i];
        for (size_t i = 0; i < nk; i++) ly->fk[i] -= noise[i];
        free(noise);
        fill_normal(ly->ctrl.w1, (size_t)6 * 66, 50 + l, 0.5);
        fill_normal(ly->ctrl.w2, 18, 60 + l, 1.0);
        ly->ctrl.b2[0] = 0.0f;
    }
}

static void test_teacher_is_the_model(void **st) {
    (void)st;
    mattn_llama *m = open_tiny();
    assert_int_equal(mattn_llama_set_activations(m, MATTN_LLAMA_ACT_F32), MATTN_OK);
    mattn_llama_routing_config cfg = mattn_llama_routing_default();
    assert_int_equal(mattn_llama_routing_new(m, &cfg), MATTN_OK);
    int32_t tok[T];
    tokens(tok, T, 1);
    mattn_distill *d = NULL;
    mattn_distill_config dc = mattn_distill_default();
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    mattn_distill_stats s;
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s), MATTN_OK);
    assert_true(s.kl == 0.0 && fabs(s.share[MATTN_ROUTE_FULL] - 1.0) < 1e-12); /* fresh routing: the student is the teacher */
    /* the teacher's logits against the inference forward's */
    float *want = falloc((size_t)T * V), *got = falloc((size_t)T * V);
    mattn_llama_cache *c = NULL;
    assert_int_equal(mattn_llama_cache_init_kv(m, 64, MATTN_LLAMA_KV_F32, &c), MATTN_OK);
    assert_int_equal(mattn_llama_forward(m, c, tok, T, want), MATTN_OK);
    mattn_gemm(0, 1, T, V, d->D, 1.0f, d->teacher, d->D, d->head, d->D, 0.0f, got, V);
    double e = 0.0, sc = 0.0;
    for (int i = 0; i < T * V; i++) e = fmax(e, fabs((double)got[i] - want[i])), sc = fmax(sc, fabs((double)want[i]));
    print_message("  teacher vs mattn_llama_forward: %.2g of the largest logit\n", e / sc);
    assert_true(e / sc <= 1e-5);
    mattn_llama_cache_free(c);
    free(want), free(got);
    mattn_distill_free(d);
    mattn_llama_free(m);
}

/* Trained as deployed: the student's logits (mixed routes, every expert)
 * against the inference forward of the same routing (chunked prefill and
 * token-by-token decode), and the same routes. */
static void test_student_is_the_routed_model(void **st) {
    (void)st;
    mattn_llama *m = open_tiny();
    assert_int_equal(mattn_llama_set_activations(m, MATTN_LLAMA_ACT_F32), MATTN_OK);
    mixed(m);
    int32_t tok[T];
    tokens(tok, T, 9);
    mattn_distill *d = NULL;
    mattn_distill_config dc = mattn_distill_default();
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    mattn_distill_stats s;
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s), MATTN_OK);
    float *got = falloc((size_t)T * V), *want = falloc((size_t)T * V);
    mattn_gemm(0, 1, T, V, d->D, 1.0f, d->hf, d->D, d->head, d->D, 0.0f, got, V);
    for (int decode = 0; decode <= 1; decode++) {
        mattn_llama_cache *c = NULL;
        assert_int_equal(mattn_llama_cache_init_kv(m, 64, MATTN_LLAMA_KV_F32, &c), MATTN_OK);
        if (decode)
            for (int i = 0; i < T; i++) assert_int_equal(mattn_llama_decode(m, c, tok[i], want + i * V), MATTN_OK);
        else
            assert_int_equal(mattn_llama_forward(m, c, tok, T, want), MATTN_OK);
        const uint8_t *routes;
        assert_int_equal(mattn_llama_cache_routing(c, NULL, NULL, NULL, &routes), MATTN_OK);
        for (int l = 0; l < 2; l++)
            for (int t = 0; t < T; t++)
                if (d->acts[l].w[t * 3 + routes[t * 2 + l]] != 1.0f)
                    fail_msg("block %d position %d: inference routed to %d, training otherwise", l, t, routes[t * 2 + l]);
        double e = 0.0, sc = 0.0;
        for (int i = 0; i < T * V; i++) e = fmax(e, fabs((double)got[i] - want[i])), sc = fmax(sc, fabs((double)want[i]));
        print_message("  student vs the routed model's %s: %.2g of the largest logit (shares %.2f / %.2f / %.2f)\n",
                      decode ? "decode" : "prefill", e / sc, s.share[0], s.share[1], s.share[2]);
        assert_true(e / sc <= 1e-5);
        mattn_llama_cache_free(c);
    }
    free(got), free(want);
    mattn_distill_free(d);
    mattn_llama_free(m);
}

typedef struct { mattn_distill *d; const int32_t *tok; const float *w; } fd_ctx;
static double loss_of(void *p) {
    fd_ctx *c = p;
    mattn_distill_stats s;
    assert_int_equal(mattn_distill_eval(c->d, c->tok, c->w, T, &s), MATTN_OK);
    return s.loss;
}

static void freeze_norms(mattn_distill *d, int on) {
    for (int l = 0; l < d->L; l++) d->m->routing->layers[l].ctrl.freeze_norm = on;
}

/* The backward's gradients of every trained tensor and of the embeddings
 * against central differences of the loss. */
static void check_all(mattn_distill *d, const int32_t *tok, const float *w, int params, int embeddings,
                      const char *what) {
    mattn_distill_stats s;
    assert_int_equal(sg_run(d, tok, w, T, 1, &s), MATTN_OK);
    freeze_norms(d, 1); /* the controller's norm feature is a stop-gradient (docs/bayes-math.md §10.2) */
    fd_ctx c = {d, tok, w};
    char name[96];
    const int64_t nm = (int64_t)(d->H + d->Hkv) * d->dh * 8;
    for (int l = 0; params && l < d->L; l++) {
        mattn_controller *k = &d->m->routing->layers[l].ctrl;
        struct { float *w, *g; size_t n; const char *n_; } t[] = {
            {k->w1, k->g_w1, (size_t)k->Hc * 66, "w1"}, {k->b1, k->g_b1, (size_t)k->Hc, "b1"},
            {k->w2, k->g_w2, (size_t)3 * k->Hc, "w2"}, {k->b2, k->g_b2, 3, "b2"},
            {d->m->routing->layers[l].fq, d->gfq + l * nm, (size_t)4 * 16 * 8, "fq"},
            {d->m->routing->layers[l].fk, d->gfq + l * nm + 4 * 16 * 8, (size_t)2 * 16 * 8, "fk"}};
        for (int i = params == 2 ? 4 : 0; i < 6; i++) {
            snprintf(name, sizeof name, "%s: block %d %s", what, l, t[i].n_);
            assert_true(fd_check(loss_of, &c, t[i].w, t[i].n, t[i].g, 6, 2, 1e-2, 3e-2, 2e-4, 7 + i, name) <= 1.0);
        }
    }
    snprintf(name, sizeof name, "%s: the embeddings", what);
    if (embeddings)
        assert_true(fd_check(loss_of, &c, d->x0_delta, (size_t)T * d->D, d->g_x0, 8, 3, 1e-2, 3e-2, 2e-4, 99, name) <= 1.0);
    freeze_norms(d, 0);
}

/* soft and hard merges: the KL and the budget (the attention transfer's
 * gradient stops at the maps: map_weight 0 here, its own check below),
 * the soft one with the KL weighted by position; the layer-local stage:
 * the attention transfer's gradient of the maps, exact there (the stream
 * is the original model's). */
static void test_fd(void **st) {
    (void)st;
    int32_t tok[T];
    tokens(tok, T, 2);
    float w[T];
    for (int t = 0; t < T; t++) w[t] = (float)(t % 4 == 1 ? 0 : 1 + 3 * (t % 3));
    for (int mode = 2; mode >= 0; mode--) { /* 2 soft, 1 hard, 0 layer-local */
        mattn_llama *m = open_tiny();
        mixed(m);
        /* hard: routes drawn token-independently, so that the loss is smooth where the gradient is taken (the
         * straight-through gradient of a controller is no derivative of the hard-routed loss, nor is what it
         * passes on to the blocks below) */
        if (mode == 1) assert_int_equal(mattn_llama_routing_fix(m, -1, (double[3]){0.4, 0.3, 0.3}), MATTN_OK);
        mattn_distill_config dc = mattn_distill_default();
        dc.soft = mode == 2, dc.full_share = 0.2, dc.map_weight = mode ? 0.0 : 1.0, dc.kl_weight = mode ? 1.0 : 0.0;
        mattn_distill *d = NULL;
        assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
        d->dual = 0.3;
        d->budget_grad_x = 1; /* the whole derivative */
        mattn_distill_stats s;
        assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s), MATTN_OK);
        const char *what = mode == 2 ? "soft" : mode ? "hard" : "layer-local";
        print_message("  %s: loss %.4f (KL %.4f, map %.4f), shares %.2f / %.2f / %.2f\n", what, s.loss, s.kl,
                      s.map_mse, s.share[0], s.share[1], s.share[2]);
        if (mode) assert_true(s.kl > 1e-3 && s.share[0] > 0.1 && s.share[1] > 0.1 && s.share[2] > 0.1);
        check_all(d, tok, mode == 2 ? w : NULL, mode == 2 ? 1 : 2, mode != 0, what);
        mattn_distill_free(d);
        mattn_llama_free(m);
    }
}

/* The weighted KL: uniform weights are no weights; the KL weighted by one
 * position is that position's, and their mean is the unweighted KL. */
static void test_weights(void **st) {
    (void)st;
    mattn_llama *m = open_tiny();
    mixed(m);
    int32_t tok[T];
    tokens(tok, T, 5);
    mattn_distill_config dc = mattn_distill_default();
    mattn_distill *d = NULL;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    mattn_distill_stats s0, s;
    float w[T];
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s0), MATTN_OK);
    for (int t = 0; t < T; t++) w[t] = 2.5f;
    assert_int_equal(mattn_distill_eval(d, tok, w, T, &s), MATTN_OK);
    assert_true(s0.kl > 1e-3 && fabs(s.kl - s0.kl) <= 1e-12 * s0.kl);
    double mean = 0.0, lo = 1e300, hi = 0.0;
    for (int i = 0; i < T; i++) {
        for (int t = 0; t < T; t++) w[t] = t == i ? 7.0f : 0.0f;
        assert_int_equal(mattn_distill_eval(d, tok, w, T, &s), MATTN_OK);
        mean += s.kl / T, lo = fmin(lo, s.kl), hi = fmax(hi, s.kl);
    }
    print_message("  KL by position: %.4f .. %.4f, mean %.6f, unweighted %.6f\n", lo, hi, mean, s0.kl);
    assert_true(fabs(mean - s0.kl) <= 1e-9 * s0.kl && hi > 2 * lo);
    w[0] = -1.0f;
    assert_int_equal(mattn_distill_eval(d, tok, w, T, &s), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_distill_errmsg(d), "weights[0] = -1 is outside [0, 1e6]"));
    memset(w, 0, sizeof w);
    assert_int_equal(mattn_distill_step(d, tok, w, T, &s), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_distill_errmsg(d), "the weights are all 0"));
    assert_int_equal(mattn_distill_steps(d), 0);
    mattn_distill_free(d);
    mattn_llama_free(m);
}

/* The routing target (route_weight): its gradient by central differences,
 * block 0 fixed (full or local) so that block 1's target (the far share of
 * its attention, a stop-gradient) does not move with the trained weights;
 * soft merge. */
static void test_route_target(void **st) {
    (void)st;
    int32_t tok[T];
    tokens(tok, T, 4);
    mattn_llama *m = open_tiny();
    mixed(m);
    assert_int_equal(mattn_llama_routing_fix(m, 0, (double[3]){0.5, 0.0, 0.5}), MATTN_OK);
    mattn_distill_config dc = mattn_distill_default();
    dc.soft = 1, dc.route_weight = 0.7, dc.map_weight = 0.0;
    mattn_distill *d = NULL;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    mattn_distill_stats s;
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s), MATTN_OK);
    print_message("  route target: BCE %.4f, KL %.4f, loss %.4f\n", s.route, s.kl, s.loss);
    assert_true(s.route > 0.05 && fabs(s.loss - s.kl - 0.7 * s.route) < 1e-9);
    check_all(d, tok, NULL, 1, 0, "route target");
    mattn_distill_free(d);
    mattn_llama_free(m);
}

/* The straight-through gradient at a temperature: at 1 (by the tempered
 * path, tau a hair above 1) it is the controller's own softmax's; at 4 it
 * is another, larger where the controller is sure. */
static void test_st_temperature(void **st) {
    (void)st;
    int32_t tok[T];
    tokens(tok, T, 3);
    float *g[3];
    double norm[3];
    size_t n = 0;
    const double taus[3] = {1.0, 1.0 + 1e-9, 4.0};
    for (int k = 0; k < 3; k++) {
        mattn_llama *m = open_tiny();
        mixed(m);
        mattn_distill_config dc = mattn_distill_default();
        dc.st_temperature = taus[k];
        mattn_distill *d = NULL;
        assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
        mattn_distill_stats s;
        assert_int_equal(sg_run(d, tok, NULL, T, 1, &s), MATTN_OK);
        const mattn_controller *c = &m->routing->layers[1].ctrl;
        n = (size_t)c->Hc * 66;
        g[k] = falloc(n);
        memcpy(g[k], c->g_w1, sizeof(float) * n);
        norm[k] = 0.0;
        for (size_t i = 0; i < n; i++) norm[k] += (double)g[k][i] * g[k][i];
        norm[k] = sqrt(norm[k]);
        mattn_distill_free(d);
        mattn_llama_free(m);
    }
    double e = 0.0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)g[1][i] - g[0][i]));
    print_message("  block 1's w1 gradient: |g| %.3g at tau 1, tempered path at 1 off by %.2g, |g| %.3g at tau 4\n",
                  norm[0], e / norm[0], norm[2]);
    assert_true(norm[0] > 0.0 && e <= 1e-5 * norm[0] && fabs(norm[2] - norm[0]) > 1e-3 * norm[0]);
    for (int k = 0; k < 3; k++) free(g[k]);
    mattn_llama *m = open_tiny();
    mixed(m);
    mattn_distill_config dc = mattn_distill_default();
    dc.st_temperature = 0.0;
    mattn_distill *d = NULL;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "st_temperature = 0 is outside [0.001, 1000]"));
    mattn_llama_free(m);
}

static void test_training(void **st) {
    (void)st;
    mattn_llama *m = open_tiny();
    mixed(m);
    int32_t tok[T];
    mattn_distill_config dc = mattn_distill_default();
    dc.kl_weight = 0.0, dc.map_lr = 3e-2; /* the layer-local stage: the maps alone */
    mattn_distill *d = NULL;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    mattn_distill_stats s0, s;
    tokens(tok, T, 100);
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s0), MATTN_OK);
    for (int i = 0; i < 120; i++) {
        tokens(tok, T, 200 + i);
        assert_int_equal(mattn_distill_step(d, tok, NULL, T, &s), MATTN_OK);
    }
    tokens(tok, T, 100);
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s), MATTN_OK);
    print_message("  layer-local stage: attention transfer %.4f -> %.4f on a held-out sequence\n", s0.map_mse, s.map_mse);
    assert_true(s.map_mse < 0.75 * s0.map_mse);
    mattn_distill_free(d);
    /* the end-to-end stage under a budget: the share of full goes to it and the KL down (the random tiny
     * model's routes do not carry over to other random sequences: one sequence, learnt) */
    dc = mattn_distill_default();
    dc.full_share = 0.1, dc.lr = 5e-3, dc.dual_lr = 0.5;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    tokens(tok, T, 100);
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s0), MATTN_OK);
    for (int i = 0; i < 60; i++) /* one sequence, over and over: the routing learns it under the budget */
        assert_int_equal(mattn_distill_step(d, tok, NULL, T, &s), MATTN_OK);
    tokens(tok, T, 100);
    assert_int_equal(mattn_distill_eval(d, tok, NULL, T, &s), MATTN_OK);
    print_message("  end to end, budget 0.1, one sequence 60 times: share of full %.2f -> %.2f, KL %.4f -> %.4f, "
                  "multiplier %.3f\n", s0.share[0], s.share[0], s0.kl, s.kl, s.dual);
    assert_true(s.share[0] <= 0.12 && s.kl < 0.2 * s0.kl);
    mattn_distill_free(d);
    /* calibrated: each step's share of full lands near the budget (exactly on it for the block inputs the
     * calibration saw; they move with the routes below them) */
    dc.calibrate = 1, dc.dual_lr = 0.0, dc.full_share = 0.3;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(mattn_distill_step(d, tok, NULL, T, &s), MATTN_OK);
        if (i > 0 && fabs(s.share[0] - 0.3) > 0.1) fail_msg("step %d: share of full %.4f, budget 0.3", i, s.share[0]);
    }
    print_message("  calibrated to 0.3: share of full %.3f at the 10th step, dual %.3f\n", s.share[0], s.dual);
    assert_true(s.dual == 0.0);
    mattn_distill_free(d);
    mattn_llama_free(m);
}

/* Two steps, save, two more; against a trainer resumed from the files:
 * the same weights bit for bit. */
static void test_resume(void **st) {
    (void)st;
    const char *rp = tmpdir_path("r.safetensors"), *sp = tmpdir_path("s.safetensors");
    float *w[2];
    int32_t tok[T];
    mattn_distill_config dc = mattn_distill_default();
    dc.full_share = 0.3;
    for (int run = 0; run < 2; run++) {
        mattn_llama *m = open_tiny();
        if (run == 0) mixed(m);
        else assert_int_equal(mattn_llama_routing_load(m, rp), MATTN_OK);
        mattn_distill *d = NULL;
        assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
        if (run == 1) assert_int_equal(mattn_distill_load_state(d, sp), MATTN_OK);
        mattn_distill_stats s;
        for (int i = run ? 2 : 0; i < 4; i++) {
            if (run == 0 && i == 2) {
                assert_int_equal(mattn_llama_routing_save(m, rp), MATTN_OK);
                assert_int_equal(mattn_distill_save_state(d, sp), MATTN_OK);
            }
            tokens(tok, T, 500 + i);
            assert_int_equal(mattn_distill_step(d, tok, NULL, T, &s), MATTN_OK);
        }
        assert_int_equal(mattn_distill_steps(d), 4);
        const size_t n = (size_t)6 * 66;
        w[run] = falloc(n + 4 * 16 * 8);
        memcpy(w[run], m->routing->layers[1].ctrl.w1, sizeof(float) * n);
        memcpy(w[run] + n, m->routing->layers[0].fq, sizeof(float) * 4 * 16 * 8);
        mattn_distill_free(d);
        mattn_llama_free(m);
    }
    assert_memory_equal(w[0], w[1], sizeof(float) * (6 * 66 + 4 * 16 * 8));
    free(w[0]), free(w[1]);
}

static void test_misuse(void **st) {
    (void)st;
    mattn_llama *m = open_tiny();
    mattn_distill *d = NULL;
    mattn_distill_config dc = mattn_distill_default();
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "no routing is attached"));
    mixed(m);
    assert_int_equal(mattn_distill_new(m, &dc, 1, &d), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "max_tokens = 1 is outside [2, 128]"));
    dc.lr = -1;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "lr = -1 is outside"));
    dc = mattn_distill_default();
    dc.full_share = 1.5;
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_llama_errmsg(m), "full_share = 1.5"));
    dc = mattn_distill_default();
    assert_int_equal(mattn_distill_new(m, &dc, T, &d), MATTN_OK);
    int32_t tok[T + 1] = {0};
    mattn_distill_stats s;
    assert_int_equal(mattn_distill_step(d, tok, NULL, T + 1, &s), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_distill_errmsg(d), "n = 25 tokens is outside [2, 24]"));
    tok[3] = V;
    assert_int_equal(mattn_distill_step(d, tok, NULL, T, &s), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_distill_errmsg(d), "tokens[3] = 100 is outside [0, 100)"));
    assert_int_equal(mattn_distill_load_state(d, FIX "llama_tiny_ref.safetensors"), MATTN_ERR_FORMAT);
    assert_non_null(strstr(mattn_distill_errmsg(d), "not a trainer state"));
    /* the routing replaced under the trainer: refused */
    assert_int_equal(mattn_llama_routing_fix(m, 0, (double[3]){1, 0, 0}), MATTN_OK);
    tok[3] = 1;
    assert_int_equal(mattn_distill_step(d, tok, NULL, T, &s), MATTN_ERR_INVALID_ARG);
    assert_non_null(strstr(mattn_distill_errmsg(d), "routing was replaced, fixed or dropped"));
    mattn_distill_free(d);
    mattn_llama_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher_is_the_model),
        cmocka_unit_test(test_student_is_the_routed_model),
        cmocka_unit_test(test_fd),
        cmocka_unit_test(test_weights),
        cmocka_unit_test(test_st_temperature),
        cmocka_unit_test(test_route_target),
        cmocka_unit_test(test_training),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_misuse),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
