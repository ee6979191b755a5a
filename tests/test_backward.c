/*
 * test_backward.c — backward passes of the attention cores: the streaming
 * kernels against their reference twins, and both against central finite
 * differences of the forward (L = sum R .* out, accumulated in double), for
 * causal/bidirectional, windows, key padding, additive masks and dropout,
 * on odd shapes (T = 1, 7, 33; dh = 5).
 */
#include "test_util.h"

typedef struct {
    int B, T, H, dh, causal, window, linear;
    float dropout;
    mattn_masks m;
    int use_masks;
    float *qkv, *out, *lse, *state, *R;
} kcase;

static mattn_attn_args kargs(kcase *c) {
    const int D = c->H * c->dh;
    mattn_attn_args a = {.B = c->B, .T = c->T, .H = c->H, .dh = c->dh, .q = c->qkv, .k = c->qkv + D,
                         .v = c->qkv + 2 * D, .ld = 3 * D, .out = c->out, .ldo = D,
                         .masks = c->use_masks ? &c->m : NULL, .causal = c->causal,
                         .window = c->window, .dropout = c->dropout, .dropout_key = 7,
                         .lse = c->lse};
    set_attn_scratch(&a);
    return a;
}

static double kloss(void *ctx) {
    kcase *c = ctx;
    mattn_attn_args a = kargs(c);
    if (c->linear) mattn_attn_linear_forward_ref(&a);
    else mattn_attn_softmax_forward_ref(&a);
    double L = 0.0;
    for (size_t i = 0; i < (size_t)c->B * c->T * c->H * c->dh; i++) L += (double)c->R[i] * c->out[i];
    return L;
}

static void run_kernel_case(int linear, int T, int causal, int window, int masks, float dropout) {
    kcase c = {.B = 2, .T = T, .H = 2, .dh = 5, .causal = causal, .window = window, .linear = linear,
               .dropout = dropout, .use_masks = masks > 0};
    const int D = c.H * c.dh;
    const size_t N = (size_t)c.B * T;
    c.qkv = falloc(N * 3 * D);
    c.out = falloc(N * D);
    c.lse = falloc((size_t)c.B * c.H * T);
    c.state = falloc(mattn_attn_linear_backward_scratch(c.B, T, c.H, c.dh) / sizeof(float));
    c.R = falloc(N * D);
    uint8_t *kp = malloc(N);
    float *add = falloc((size_t)c.B * T * T);
    fill_normal(c.qkv, N * 3 * D, 100 + T, 0.7);
    fill_normal(c.R, N * D, 200 + T, 1.0);
    fill_normal(add, (size_t)c.B * T * T, 300 + T, 0.5);
    for (size_t i = 0; i < N; i++) kp[i] = (i * 7919 + 3) % 4 != 0;
    if (masks >= 1) c.m.key_padding = kp;
    if (masks >= 2) c.m.additive = add, c.m.additive_batched = 1;

    mattn_attn_args a = kargs(&c);
    if (linear) mattn_attn_linear_forward(&a);
    else mattn_attn_softmax_forward(&a);
    float *g = falloc(N * 3 * D), *gr = falloc(N * 3 * D);
    mattn_attn_grad gg = {.gout = c.R, .ldgo = D, .gq = g, .gk = g + D, .gv = g + 2 * D, .ldg = 3 * D,
                          .state = c.state};
    mattn_attn_grad gref = gg;
    gref.gq = gr, gref.gk = gr + D, gref.gv = gr + 2 * D;
    if (linear) {
        mattn_attn_linear_backward(&a, &gg);
        mattn_attn_linear_backward_ref(&a, &gref);
    } else {
        mattn_attn_softmax_backward(&a, &gg);
        mattn_attn_softmax_backward_ref(&a, &gref);
    }
    char what[160];
    snprintf(what, sizeof what, "%s T=%d causal=%d window=%d masks=%d dropout=%.1f", linear ? "linear" : "softmax",
             T, causal, window, masks, (double)dropout);
    assert_close(g, gr, N * 3 * D, 2e-5, what);
    double worst = fd_check(kloss, &c, c.qkv, N * 3 * D, g, 12, 3, 1e-2, 1e-2, 2e-3, T, what);
    assert_true(worst <= 1.0);
    free(c.qkv); free(c.out); free(c.lse); free(c.state); free(c.R); free(kp); free(add); free(g); free(gr);
}

static void test_softmax_backward(void **st) {
    (void)st;
    const int Ts[] = {1, 7, 33};
    for (int ti = 0; ti < 3; ti++)
        for (int causal = 0; causal < 2; causal++)
            for (int wi = 0; wi < 2; wi++)
                for (int masks = 0; masks < 3; masks++)
                    for (int dr = 0; dr < 2; dr++)
                        run_kernel_case(0, Ts[ti], causal, wi ? 2 : -1, masks, dr ? 0.2f : 0.0f);
}

static void test_linear_backward(void **st) {
    (void)st;
    const int Ts[] = {1, 7, 33};
    for (int ti = 0; ti < 3; ti++)
        for (int causal = 0; causal < 2; causal++)
            for (int masks = 0; masks < 2; masks++) run_kernel_case(1, Ts[ti], causal, -1, masks, 0.0f);
}


// ---------------------------------------------------------------- controller

typedef struct {
    mattn_controller c;
    mattn_config cfg;
    mattn_ctrl_act act;
    int B, T;
} ctl;

static void ctl_init(ctl *t, mattn_config cfg, int B, int T) {
    t->cfg = cfg;
    t->B = B;
    t->T = T;
    mattn_rng r;
    mattn_rng_seed(&r, 1);
    assert_int_equal(mattn_controller_init(&t->c, &cfg, &r), MATTN_OK);
    const size_t N = (size_t)B * T, K = (size_t)cfg.n_experts, Hc = (size_t)cfg.controller_hidden;
    t->act.f = falloc(N * (cfg.d_model + 2));
    t->act.z1 = falloc(N * Hc);
    t->act.h = falloc(N * Hc);
    t->act.logits = falloc(N * K);
    t->act.alpha = falloc(N * K);
    t->act.beta_hat = falloc(N * K);
    t->act.a = calloc(N * K, sizeof(double));
    t->act.logg = calloc(N * K, sizeof(double));
    t->act.unc = falloc(N);
    t->act.kl = calloc(N, sizeof(double));
}

static void ctl_free(ctl *t) {
    mattn_controller_free(&t->c);
    free(t->act.f); free(t->act.z1); free(t->act.h); free(t->act.logits); free(t->act.alpha);
    free(t->act.beta_hat); free(t->act.a); free(t->act.logg); free(t->act.unc); free(t->act.kl);
}

/* docs/bayes-math.md §9.4: end-to-end router, MEAN mode, L = sum R alpha + 0.1 mean KL */
static void test_controller_spec_vector(void **st) {
    (void)st;
    mattn_config cfg = mattn_config_default();
    cfg.d_model = 4;
    cfg.n_heads = 1;
    cfg.controller_hidden = 3;
    cfg.elbo_weight = 0.1;
    ctl t;
    ctl_init(&t, cfg, 1, 3);
    const float W1[18] = {0.20f, -0.10f, 0.05f, 0.30f, -0.25f, 0.40f, -0.15f, 0.35f, -0.20f,
                          0.10f, 0.50f,  -0.30f, 0.05f, 0.15f, 0.25f, -0.35f, 0.20f, 0.10f};
    const float b1[3] = {0.10f, -0.05f, 0.02f}, b2[3] = {-1.0f, 0.5f, 0.2f};
    const float W2[9] = {0.60f, -0.40f, 0.30f, -0.20f, 0.50f, 0.10f, 0.30f, 0.20f, -0.60f};
    const float x[12] = {1.0f, -2.0f, 0.5f, 0.3f, 0.0f, 0.4f, -1.2f, 2.0f, -0.7f, 0.1f, 0.9f, -0.4f};
    const float R[9] = {1.0f, -0.5f, 0.25f, -0.3f, 0.8f, -0.1f, 0.2f, 0.1f, -0.6f};
    memcpy(t.c.w1, W1, sizeof W1);
    memcpy(t.c.b1, b1, sizeof b1);
    memcpy(t.c.w2, W2, sizeof W2);
    memcpy(t.c.b2, b2, sizeof b2);
    double aux;
    assert_int_equal(mattn_controller_forward(&t.c, &cfg, &t.act, x, 1, 3, 0, 0, &aux), MATTN_OK);
    double L = aux;
    for (int i = 0; i < 9; i++) L += (double)R[i] * t.act.alpha[i];
    assert_true(fabs(L - 0.404733592342) <= 2e-6);
    float gx[12] = {0}, gz2[9], gh[9];
    assert_int_equal(mattn_controller_backward(&t.c, &cfg, &t.act, 1, 3, 0, 0, R, NULL, 1.0, gx, gz2, gh),
                     MATTN_OK);
    const float gW1[18] = {0.0685952302f, -0.1570502793f, 0.08474926282f, -0.0569860068f, 0.03862974297f,
                           -0.01578307613f, -0.01171480583f, 0.04269434608f, -0.05237343599f, 0.06595441757f,
                           0.0210622255f, 0.01290914567f, -0.03702548264f, 0.00769808973f, 0.04324751238f,
                           -0.01594646281f, 0.03349390175f, 0.05306201083f};
    const float gb1[3] = {0.03599574109f, 0.01538025949f, 0.053555327f};
    const float gW2[9] = {0.02154146217f, -0.02897458625f, 0.02645117019f, 0.01567771573f, 0.07243110534f,
                          0.005284064464f, -0.01828480087f, -0.05723422534f, -0.01332143029f};
    const float gb2[3] = {0.1511192452f, 0.05082587224f, -0.08140647896f};
    const float gxw[12] = {0.01636746228f, -0.01235721393f, 0.006299609526f, 0.02009780611f,
                           -0.0127154002f, 0.01623643894f, -0.008163124776f, -0.008979420435f,
                           0.003917813564f, 0.00593759075f, 0.01397608216f, -0.01752600185f};
    assert_close(t.c.g_w1, gW1, 18, 2e-6, "dL/dW1");
    assert_close(t.c.g_b1, gb1, 3, 2e-6, "dL/db1");
    assert_close(t.c.g_w2, gW2, 9, 2e-6, "dL/dW2");
    assert_close(t.c.g_b2, gb2, 3, 2e-6, "dL/db2");
    assert_close(gx, gxw, 12, 2e-6, "dL/dx");
    ctl_free(&t);
}

/* docs/bayes-math.md §9.5: softmax baseline with temperature, cost and entropy terms */
static void test_controller_prior_free_vector(void **st) {
    (void)st;
    mattn_config cfg = mattn_config_default();
    cfg.d_model = 4;
    cfg.n_heads = 1;
    cfg.controller_hidden = 3;
    cfg.controller = MATTN_CONTROLLER_PRIOR_FREE;
    cfg.temperature = 0.7;
    cfg.cost_lambda = 0.5;
    cfg.entropy_coeff = 0.01;
    ctl t;
    ctl_init(&t, cfg, 1, 2);
    const float l[6] = {1.2f, -0.3f, 0.5f, 0.1f, 0.2f, -1.5f}, R[6] = {0.4f, -0.2f, 0.1f, 0.0f, 0.3f, -0.5f};
    const float want[6] = {0.1769096406f, -0.07214159581f, -0.1047680448f,
                           -0.008973863253f, 0.05410729403f, -0.04513343078f};
    memcpy(t.act.logits, l, sizeof l);
    float g[6];
    for (int n = 0; n < 2; n++) mattn_controller_logits_grad(&t.c, &cfg, &t.act, n, 2, 0, R, 1.0, g + 3 * n);
    assert_close(g, want, 6, 1e-7, "prior-free dL/dl");
    ctl_free(&t);
}

/* Gumbel top-k: exact gradient of the renormalised masked softmax, FD with
 * the noise fixed (same seed and step). */
typedef struct { float *l, *w, *gy; int N, K, k; double tau; } gctx;

static double gloss(void *ctx) {
    gctx *c = ctx;
    mattn_gumbel_topk(c->w, c->l, c->N, c->K, c->k, c->tau, 5, 3);
    double L = 0.0;
    for (int i = 0; i < c->N * c->K; i++) L += (double)c->gy[i] * c->w[i];
    return L;
}

static void test_gumbel_backward(void **st) {
    (void)st;
    for (int k = 1; k <= 3; k++) {
        enum { N = 16, K = 3 };
        float l[N * K], w[N * K], gy[N * K], gl[N * K] = {0};
        fill_normal(l, N * K, 11, 1.0);
        fill_normal(gy, N * K, 12, 1.0);
        gctx c = {l, w, gy, N, K, k, 0.5};
        mattn_gumbel_topk_backward(gy, l, N, K, k, 0.5, 5, 3, gl);
        assert_true(fd_check(gloss, &c, l, N * K, gl, 20, 3, 1e-3, 1e-3, 1e-4, 9, "gumbel") <= 1.0);
    }
}

/* MLP + routing + aux loss, both controllers, eval (MEAN) mode and training
 * with dropout (sample_posterior off: the dropout mask is then a fixed
 * function of the step), ELBO KL or the legacy cost/entropy terms: FD over
 * every parameter.  (dL/dx: the spec vector above; SAMPLE mode cannot be
 * FD-checked, docs/bayes-math.md §10.2: its pieces are tested in test_dirichlet.) */
typedef struct { ctl *t; const float *x; const float *R; int training; } mctx;

static double mloss(void *ctx) {
    mctx *m = ctx;
    double aux;
    mattn_controller_forward(&m->t->c, &m->t->cfg, &m->t->act, m->x, m->t->B, m->t->T, m->training, 4, &aux);
    double L = aux;
    for (int i = 0; i < m->t->B * m->t->T * m->t->cfg.n_experts; i++) L += (double)m->R[i] * m->t->act.alpha[i];
    return L;
}

static void test_controller_fd(void **st) {
    (void)st;
    for (int kind = 0; kind < 2; kind++)
        for (int training = 0; training < 2; training++)
            for (int elbo = 0; elbo < 2; elbo++) {
                mattn_config cfg = mattn_config_default();
                cfg.d_model = 6;
                cfg.n_heads = 2;
                cfg.controller_hidden = 5;
                cfg.controller = kind ? MATTN_CONTROLLER_PRIOR_FREE : MATTN_CONTROLLER_BAYESIAN;
                cfg.sample_posterior = 0;
                cfg.dropout = 0.2;
                cfg.temperature = 0.8;
                cfg.elbo_weight = elbo ? 0.7 : 0.0;
                cfg.cost_lambda = 0.3;
                cfg.entropy_coeff = 0.05;
                ctl t;
                ctl_init(&t, cfg, 2, 5);
                mattn_rng r;
                mattn_rng_seed(&r, 3);
                mattn_init_normal(t.c.w1, 5 * 8, 0.5, &r);
                mattn_init_normal(t.c.b1, 5, 0.5, &r);
                mattn_init_normal(t.c.w2, 3 * 5, 0.5, &r);
                mattn_init_normal(t.c.b2, 3, 0.5, &r);
                float x[60], R[30], gx[60] = {0}, gz2[30], gh[50];
                fill_normal(x, 60, 4, 1.0);
                fill_normal(R, 30, 5, 1.0);
                mctx m = {&t, x, R, training};
                mloss(&m);
                assert_int_equal(mattn_controller_backward(&t.c, &cfg, &t.act, 2, 5, training, 4, R, NULL, 1.0,
                                                           gx, gz2, gh), MATTN_OK);
                char what[96];
                snprintf(what, sizeof what, "controller %s training=%d elbo=%d", kind ? "prior-free" : "bayesian",
                         training, elbo);
                float *ps[4] = {t.c.w1, t.c.b1, t.c.w2, t.c.b2}, *gs[4] = {t.c.g_w1, t.c.g_b1, t.c.g_w2, t.c.g_b2};
                size_t ns[4] = {40, 5, 15, 3};
                for (int p = 0; p < 4; p++)
                    assert_true(fd_check(mloss, &m, ps[p], ns[p], gs[p], 6, 2, 1e-3, 5e-3, 1e-4, 20 + p, what) <= 1.0);
                ctl_free(&t);
            }
}

// ---------------------------------------------------------------- layer

typedef struct {
    mattn_layer *l;
    float *x, *out, *R;
    int B, T;
    mattn_masks m;
    uint64_t step;
} lctx;

static double lloss(void *ctx) {
    lctx *c = ctx;
    float aux;
    mattn_layer_set_step(c->l, c->step);
    assert_int_equal(mattn_layer_forward(c->l, c->x, c->B, c->T, &c->m, c->out, &aux, NULL), MATTN_OK);
    double L = aux;
    for (int i = 0; i < c->B * c->T * mattn_layer_config(c->l)->d_model; i++) L += (double)c->R[i] * c->out[i];
    return L;
}

/* FD of the whole layer: every parameter tensor (coordinates + directions)
 * and x along directions orthogonal, token by token, to x_t (the norm
 * feature is stop-gradient, docs/bayes-math.md §10.2 "freeze the norm feature"). */
enum { PLAIN, BUDGET, KL_BATCH, FREE_BITS, FORCED };

static void run_layer_case(int bayes, int causal, int share, int mode, int top_k, int variant) {
    mattn_config cfg = mattn_config_default();
    cfg.d_model = 8;
    cfg.n_heads = 2;
    cfg.window_size = 2;
    cfg.controller_hidden = 5;
    cfg.controller = bayes ? MATTN_CONTROLLER_BAYESIAN : MATTN_CONTROLLER_PRIOR_FREE;
    cfg.causal = causal;
    cfg.share_qkv = share;
    cfg.sample_posterior = 0;       /* SAMPLE mode: not FD-checkable (docs/bayes-math.md §10.2) */
    cfg.dropout = mode ? 0.1 : 0.0;
    cfg.hard_routing = mode == 2;
    cfg.hard_top_k = top_k;
    cfg.cost_lambda = 0.2;
    cfg.entropy_coeff = 0.05;
    cfg.temperature = 0.9;
    cfg.seed = 17;
    if (variant == BUDGET || variant == FORCED) { /* every constraint on, with multipliers of both signs */
        cfg.cost_target = 0.4;
        cfg.full_share = 0.2;
        cfg.usage_floor = 0.1;
    }
    if (variant == KL_BATCH) cfg.kl_mode = MATTN_KL_BATCH, cfg.elbo_weight = 0.5;
    if (variant == FREE_BITS) cfg.free_bits = 3.4, cfg.elbo_weight = 0.5; /* per-token KLs here: 2.3 to 4.5 */
    lctx c = {.B = 2, .T = 6, .step = 5};
    const int D = cfg.d_model, N = c.B * c.T;
    assert_int_equal(mattn_layer_init(&cfg, NULL, &c.l), MATTN_OK);
    mattn_layer_set_training(c.l, mode != 0);
    if (variant == FORCED) { /* a fixed hybrid: routes by position, the budget ignored */
        const uint8_t f[6] = {0, 1, 2, 2, 0, 1};
        assert_int_equal(mattn_layer_force_routes(c.l, f, 6), MATTN_OK);
    }
    if (variant == BUDGET || variant == FORCED) {
        assert_int_equal(mattn_layer_n_duals(c.l), 5);
        const double d[5] = {0.7, -0.4, 0.3, 0.0, 0.5};
        memcpy(mattn_layer_duals(c.l), d, sizeof d);
    }
    /* larger weights than the default init so every path carries gradient */
    mattn_rng r;
    mattn_rng_seed(&r, 99);
    for (int i = 0; i < mattn_layer_n_params(c.l); i++) {
        mattn_tensor t;
        mattn_layer_param(c.l, i, &t);
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
        mattn_init_normal(t.data, n, 0.4, &r);
    }
    c.x = falloc((size_t)N * D);
    c.out = falloc((size_t)N * D);
    c.R = falloc((size_t)N * D);
    fill_normal(c.x, (size_t)N * D, 1, 1.0);
    fill_normal(c.R, (size_t)N * D, 2, 1.0);
    uint8_t kp[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0};
    c.m.key_padding = kp;
    lloss(&c);
    if (variant == FREE_BITS) { /* the case must have tokens on both sides of the kink */
        int below = 0;
        for (int n = 0; n < N; n++) below += c.l->act.kl[n] <= cfg.free_bits;
        assert_true(below > 0 && below < N);
    }
    float *gx = falloc((size_t)N * D);
    assert_int_equal(mattn_layer_zero_grad(c.l), MATTN_OK);
    assert_int_equal(mattn_layer_backward(c.l, c.x, &c.m, c.R, 1.0f, gx), MATTN_OK);
    if (variant == FORCED) /* the controller plays no part: its gradients are exactly zero */
        for (int i = 0; i < mattn_layer_n_params(c.l); i++) {
            mattn_tensor t;
            mattn_layer_param(c.l, i, &t);
            if (strncmp(t.name, "controller.", 11)) continue;
            size_t n = 1;
            for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
            for (size_t j = 0; j < n; j++)
                if (t.grad[j] != 0.0f) fail_msg("forced routes: %s.grad[%zu] = %g, want 0", t.name, j, t.grad[j]);
        }
    char what[160];
    snprintf(what, sizeof what, "layer %s causal=%d share=%d mode=%s k=%d variant=%d", bayes ? "bayesian" : "prior-free",
             causal, share, mode == 0 ? "eval-soft" : mode == 1 ? "train-soft" : "train-hard", top_k, variant);
    for (int i = 0; i < mattn_layer_n_params(c.l); i++) {
        mattn_tensor t;
        mattn_layer_param(c.l, i, &t);
        assert_non_null(t.grad);
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
        char w2[256];
        snprintf(w2, sizeof w2, "%s: %s", what, t.name);
        assert_true(fd_check(lloss, &c, t.data, n, t.grad, 4, 2, 5e-3, 1e-2, 5e-4, 31 + i, w2) <= 1.0);
    }
    /* x along norm-preserving directions */
    float *x0 = falloc((size_t)N * D), *v = falloc((size_t)N * D);
    memcpy(x0, c.x, sizeof(float) * N * D);
    for (int it = 0; it < 3; it++) {
        fill_normal(v, (size_t)N * D, 50 + it, 1.0);
        double an = 0.0, nv = 0.0;
        for (int n = 0; n < N; n++) {
            double xv = 0.0, xx = 0.0;
            for (int d = 0; d < D; d++) xv += (double)x0[n * D + d] * v[n * D + d], xx += (double)x0[n * D + d] * x0[n * D + d];
            for (int d = 0; d < D; d++) v[n * D + d] -= (float)(xv / xx * x0[n * D + d]);
        }
        for (int i = 0; i < N * D; i++) nv += (double)v[i] * v[i];
        for (int i = 0; i < N * D; i++) v[i] = (float)(v[i] / sqrt(nv)), an += (double)gx[i] * v[i];
        const double h = 5e-3;
        for (int i = 0; i < N * D; i++) c.x[i] = (float)(x0[i] + h * v[i]);
        double lp = lloss(&c);
        for (int i = 0; i < N * D; i++) c.x[i] = (float)(x0[i] - h * v[i]);
        double lm = lloss(&c);
        double fd = (lp - lm) / (2 * h);
        if (!(fabs(fd - an) <= 1e-2 * fabs(an) + 5e-4)) fail_msg("%s: dL/dx direction %d: fd %.8g vs %.8g", what, it, fd, an);
    }
    memcpy(c.x, x0, sizeof(float) * N * D);
    free(x0); free(v); free(gx); free(c.x); free(c.out); free(c.R);
    mattn_layer_free(c.l);
}

static void test_layer_gradients(void **st) {
    (void)st;
    for (int bayes = 0; bayes < 2; bayes++)
        for (int causal = 0; causal < 2; causal++)
            for (int share = 0; share < 2; share++)
                for (int mode = 0; mode < 3; mode++)
                    run_layer_case(bayes, causal, share, mode, 1 + (mode == 2 && causal), PLAIN);
}

/* The budget's aux term (both controllers, soft and Gumbel) and the
 * Bayesian KL variants, against finite differences. */
static void test_layer_routing_terms(void **st) {
    (void)st;
    for (int bayes = 0; bayes < 2; bayes++)
        for (int mode = 0; mode < 3; mode++) run_layer_case(bayes, 1, mode == 1, mode, 1 + (mode == 2), BUDGET);
    for (int mode = 0; mode < 2; mode++) {
        run_layer_case(1, 1, 0, mode, 1, KL_BATCH);
        run_layer_case(1, 0, 1, mode, 1, FREE_BITS);
    }
    for (int bayes = 0; bayes < 2; bayes++) /* forced routes in training (fixed hybrids) */
        for (int share = 0; share < 2; share++) run_layer_case(bayes, 1, share, 2, 1, FORCED);
}

/* Straight-through hard routing: the training forward merges the top-1
 * experts exactly as eval-mode hard routing does, and the controller gets
 * d/dalpha = d/dweights = <dL/dout_t, E_k(x)_t> (E_k from forced routes):
 * its output bias gradient is sum_t alpha_tk/tau (g_tk - <alpha_t, g_t>). */
static void test_straight_through(void **st) {
    (void)st;
    enum { B = 2, T = 7, D = 8, K = 3, N = B * T };
    mattn_config cfg = test_layer_config(D, 2, 2, 5, 23);
    cfg.controller = MATTN_CONTROLLER_PRIOR_FREE;
    cfg.causal = 1;
    cfg.dropout = 0.0;
    cfg.temperature = 0.7;
    cfg.hard_routing = 1;
    cfg.hard_train = MATTN_HARD_STRAIGHT_THROUGH;
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&cfg, NULL, &l), MATTN_OK);
    mattn_rng r;
    mattn_rng_seed(&r, 5);
    for (int i = 0; i < mattn_layer_n_params(l); i++) {
        mattn_tensor t;
        mattn_layer_param(l, i, &t);
        mattn_init_normal(t.data, (size_t)t.shape[0] * (t.ndim > 1 ? (size_t)t.shape[1] : 1), 0.5, &r);
    }
    float x[N * D], R[N * D], out[N * D], ref[N * D], E[K][N * D], alpha[N * K];
    fill_normal(x, N * D, 1, 1.0);
    fill_normal(R, N * D, 2, 1.0);
    mattn_layer_set_training(l, 0); /* eval-mode hard routing; then each expert alone */
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, ref, NULL, NULL), MATTN_OK);
    for (int k = 0; k < K; k++) {
        uint8_t f[T];
        memset(f, k, sizeof f);
        assert_int_equal(mattn_layer_force_routes(l, f, T), MATTN_OK);
        assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, E[k], NULL, NULL), MATTN_OK);
    }
    assert_int_equal(mattn_layer_force_routes(l, NULL, 0), MATTN_OK);
    mattn_layer_set_training(l, 1);
    assert_int_equal(mattn_layer_forward(l, x, B, T, NULL, out, NULL, NULL), MATTN_OK);
    assert_close(out, ref, N * D, 1e-6, "straight-through forward vs eval hard routing");
    memcpy(alpha, mattn_layer_alpha(l), sizeof alpha);
    assert_int_equal(mattn_layer_zero_grad(l), MATTN_OK);
    assert_int_equal(mattn_layer_backward(l, x, NULL, R, 1.0f, NULL), MATTN_OK);
    double want[K] = {0};
    for (int n = 0; n < N; n++) {
        double g[K], dot = 0.0;
        for (int k = 0; k < K; k++) {
            g[k] = 0.0;
            for (int d = 0; d < D; d++) g[k] += (double)R[n * D + d] * E[k][n * D + d];
            dot += alpha[n * K + k] * g[k];
        }
        for (int k = 0; k < K; k++) want[k] += alpha[n * K + k] / cfg.temperature * (g[k] - dot);
    }
    mattn_tensor b2;
    for (int i = 0; i < mattn_layer_n_params(l); i++)
        if (mattn_layer_param(l, i, &b2) == MATTN_OK && !strcmp(b2.name, "controller.net.3.bias")) break;
    for (int k = 0; k < K; k++)
        if (!(fabs(b2.grad[k] - want[k]) <= 1e-4 * fabs(want[k]) + 1e-5))
            fail_msg("straight-through: d/db2[%d] = %.8g, want %.8g", k, b2.grad[k], want[k]);
    mattn_layer_free(l);
}

/* Backward after eval-mode hard routing is refused; accumulation adds. */
static void test_layer_backward_contract(void **st) {
    (void)st;
    mattn_config cfg = mattn_config_default();
    cfg.d_model = 8; cfg.n_heads = 2; cfg.controller_hidden = 4; cfg.hard_routing = 1;
    cfg.uncertainty_threshold = 100.0; /* every token hard */
    mattn_layer *l;
    assert_int_equal(mattn_layer_init(&cfg, NULL, &l), MATTN_OK);
    float x[8 * 5], out[8 * 5], g[8 * 5];
    fill_normal(x, 40, 1, 1.0);
    fill_normal(g, 40, 2, 1.0);
    assert_int_equal(mattn_layer_backward(l, x, NULL, g, 1.0f, NULL), MATTN_ERR_MISUSE); /* no forward */
    mattn_layer_set_training(l, 0);
    assert_int_equal(mattn_layer_forward(l, x, 1, 5, NULL, out, NULL, NULL), MATTN_OK);
    assert_int_equal(mattn_layer_backward(l, x, NULL, g, 1.0f, NULL), MATTN_ERR_MISUSE);
    assert_non_null(strstr(mattn_layer_errmsg(l), "sparsely"));
    mattn_layer_free(l);

    cfg.hard_routing = 0;
    assert_int_equal(mattn_layer_init(&cfg, NULL, &l), MATTN_OK);
    mattn_layer_set_training(l, 0);
    assert_int_equal(mattn_layer_forward(l, x, 1, 5, NULL, out, NULL, NULL), MATTN_OK);
    assert_int_equal(mattn_layer_zero_grad(l), MATTN_OK);
    assert_int_equal(mattn_layer_backward(l, x, NULL, g, 1.0f, NULL), MATTN_OK);
    mattn_tensor t;
    mattn_layer_param(l, 0, &t);
    float once = t.grad[3];
    assert_int_equal(mattn_layer_backward(l, x, NULL, g, 1.0f, NULL), MATTN_OK);
    assert_true(fabsf(t.grad[3] - 2 * once) <= 1e-6f * fabsf(once) + 1e-9f);
    assert_int_equal(mattn_layer_zero_grad(l), MATTN_OK);
    assert_true(t.grad[3] == 0.0f);
    mattn_layer_free(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_backward),
        cmocka_unit_test(test_linear_backward),
        cmocka_unit_test(test_controller_spec_vector),
        cmocka_unit_test(test_controller_prior_free_vector),
        cmocka_unit_test(test_gumbel_backward),
        cmocka_unit_test(test_controller_fd),
        cmocka_unit_test(test_layer_gradients),
        cmocka_unit_test(test_layer_routing_terms),
        cmocka_unit_test(test_straight_through),
        cmocka_unit_test(test_layer_backward_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
