/*
 * controller.c — the Meta-Controller: features f_t = [x_t; ||x_t||/sqrt(D);
 * pos_t], MLP Linear(D+2 -> Hc) -> GELU(erf) -> dropout -> Linear(Hc -> K)
 * giving logits z2, then either
 *   prior-free:  alpha = softmax(z2 / temperature), aux = cost_lambda E[cost]
 *                - entropy_coeff H(alpha)
 *   bayesian:    beta_hat = max(b + softplus(z2), 1e-3) with the compute-aware
 *                prior b_i = epsilon + beta_0 (1 - c_i); alpha = posterior mean,
 *                or in training with sample_posterior a Dirichlet sample
 *                (log-space Gamma normalisation, docs/bayes-math.md §4.6 R form);
 *                U_t = H[Dir(beta_hat)], aux = elbo_weight mean KL[q || prior].
 * Forward and backward (docs/bayes-math.md §5-§6).  Maths and test vectors:
 * docs/bayes-math.md.  The routing the weights feed (merge, Gumbel top-k,
 * gate) is route.c.
 */
#include <math.h>
#include <string.h>

#include "attention/attention.h"

#define BETA_FLOOR 1e-3

/* y (N, O) = x (N, I) W^T, W (O, I): mattn_gemm, or for a decode step's
 * few rows their dot products — sgemm packs W first, which for one row
 * whose W (SmolLM2's block controller: 74 KB) the model's matrices had
 * evicted took 11-14 us against 5 us (bench/surgery/controller_row.c). */
#define FEW_ROWS 4
static void rows_wt(int64_t N, int O, int I, const float *x, const float *W, float *y) {
    if (N > FEW_ROWS) {
        mattn_gemm(0, 1, (int)N, O, I, 1.0f, x, I, W, I, 0.0f, y, O);
        return;
    }
    for (int64_t n = 0; n < N; n++)
        for (int j = 0; j < O; j++) y[n * O + j] = mattn_dot(x + n * I, W + (size_t)j * I, I);
}

// ----------------------------------------------------------------------------
// init

mattn_status mattn_controller_init(mattn_controller *c, const mattn_config *cfg, mattn_rng *r) {
    memset(c, 0, sizeof *c);
    c->kind = cfg->controller;
    c->D = cfg->d_model;
    c->Hc = cfg->controller_hidden;
    c->K = cfg->n_experts;
    size_t in = (size_t)c->D + 2, Hc = (size_t)c->Hc, K = (size_t)c->K;
    c->w1 = mattn_amalloc(Hc * in * sizeof(float));
    c->b1 = mattn_amalloc(Hc * sizeof(float));
    c->w2 = mattn_amalloc(K * Hc * sizeof(float));
    c->b2 = mattn_amalloc(K * sizeof(float));
    if (!c->w1 || !c->b1 || !c->w2 || !c->b2) {
        mattn_controller_free(c);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for the controller (Hc=%d)", c->Hc);
    }
    /* Python library: nn.init.normal_(std=0.02), zero biases. */
    mattn_init_normal(c->w1, Hc * in, 0.02, r);
    mattn_init_normal(c->w2, K * Hc, 0.02, r);
    memset(c->b1, 0, Hc * sizeof(float));
    memset(c->b2, 0, K * sizeof(float));
    float costs[MATTN_MAX_EXPERTS];
    mattn_prior_buffers(cfg, costs, c->prior_beta);
    for (int i = 0; i < c->K; i++) {
        c->costs[i] = cfg->expert_costs[i];
        c->prior[i] = mattn_prior_beta(cfg, i);
    }
    return MATTN_OK;
}

double mattn_prior_beta(const mattn_config *cfg, int k) {
    return cfg->epsilon + cfg->beta_0 * (1.0 - cfg->expert_costs[k]);
}

void mattn_prior_buffers(const mattn_config *cfg, float *costs, float *prior_beta) {
    for (int k = 0; k < cfg->n_experts; k++) {
        costs[k] = (float)cfg->expert_costs[k];
        /* the Python buffer is computed in float32 */
        prior_beta[k] = (float)cfg->epsilon + (float)cfg->beta_0 * (1.0f - costs[k]);
    }
}

void mattn_controller_free(mattn_controller *c) {
    if (!c) return;
    float **bufs[] = {&c->w1, &c->b1, &c->w2, &c->b2, &c->g_w1, &c->g_b1, &c->g_w2, &c->g_b2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        mattn_afree(*bufs[i]);
        *bufs[i] = NULL;
    }
}

double mattn_controller_flops(const mattn_controller *c, int64_t N) {
    return 2.0 * (double)N * ((double)(c->D + 2) * c->Hc + (double)c->Hc * c->K);
}

// ----------------------------------------------------------------------------
// elementwise pieces

/* torch-compatible softplus (threshold 20), in double (docs/bayes-math.md §6.1) */
static inline double softplus(double z) { return z > 20.0 ? z : log1p(exp(z)); }

/* Shannon entropy of a probability vector, 0 ln 0 = 0. */
static double shannon(const float *p, int K) {
    double H = 0.0;
    for (int i = 0; i < K; i++)
        if (p[i] > 0.0f) H -= (double)p[i] * log((double)p[i]);
    return H;
}

void mattn_softmax_tau(const double *v, int K, double tau, float *out) {
    double m = v[0], e[MATTN_MAX_EXPERTS], Z = 0.0;
    for (int i = 1; i < K; i++) m = v[i] > m ? v[i] : m;
    for (int i = 0; i < K; i++) Z += (e[i] = exp((v[i] - m) / tau));
    for (int i = 0; i < K; i++) out[i] = (float)(e[i] / Z);
}

// ----------------------------------------------------------------------------
// forward

/* A decode step of SmolLM2 read its block controller's 74 KB W1 in 7.5 us,
 * from where the block's matrices had pushed it; asked for before the
 * block's Q/K/V product, 4.0 us (bench --paired --context 8064, the
 * w512-d1 routing: decode attention wall/FLOP 1.14 -> 1.09, 3 runs each). */
void mattn_controller_prefetch(const mattn_controller *c) {
    const char *w = (const char *)c->w1;
    const size_t bytes = (size_t)c->Hc * (c->D + 2) * sizeof(float);
    for (size_t i = 0; i < bytes; i += 64) __builtin_prefetch(w + i, 0, 2);
}

mattn_status mattn_controller_forward(const mattn_controller *c, const mattn_config *cfg,
                                      mattn_ctrl_act *act, const float *x, int B, int T,
                                      int training, uint64_t step, double *aux) {
    const int D = c->D, Hc = c->Hc, K = c->K, in = D + 2;
    const int64_t N = (int64_t)B * T;

    /* features: [x ; ||x||/sqrt(D) (stop-gradient) ; t/(T-1)], or
     * (t + pos_offset)/(pos_len-1) when the position length is fixed */
    const int pos_den = c->pos_len > 0 ? c->pos_len : T;
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xt = x + n * D;
        float *f = act->f + n * in;
        memcpy(f, xt, sizeof(float) * (size_t)D);
        double s8[8] = {0}, ss = 0.0; /* 8 partial sums: one chain of D dependent adds took 5 % of a routed
                                        * SmolLM2's prefill attention */
        int d = 0;
        for (; d + 8 <= D; d += 8)
            for (int j = 0; j < 8; j++) s8[j] += (double)xt[d + j] * xt[d + j];
        for (int j = 0; j < 8; j++) ss += s8[j];
        for (; d < D; d++) ss += (double)xt[d] * xt[d];
        if (!c->freeze_norm) f[D] = (float)(sqrt(ss) / sqrt((double)D));
        f[D + 1] = pos_den > 1 && c->pos_len >= 0 ? (float)(n % T + c->pos_offset) / (float)(pos_den - 1) : 0.0f;
    }

    /* z1 = f W1^T + b1;  h = dropout(GELU(z1)) */
    rows_wt(N, Hc, in, act->f, c->w1, act->z1);
    const float p = (float)cfg->dropout;
    const uint64_t dkey = mattn_stream_seed(cfg->seed, step, 0, MATTN_PURPOSE_CTRL_DROPOUT);
    for (int64_t n = 0; n < N; n++)
        for (int j = 0; j < Hc; j++) act->z1[n * Hc + j] += c->b1[j];
    mattn_gelu_forward(act->h, act->z1, N * Hc);
    if (training && p > 0.0f)
        for (int64_t i = 0; i < N * Hc; i++)
            act->h[i] = mattn_hash_u01(dkey, (uint64_t)i) < p ? 0.0f : act->h[i] / (1.0f - p);

    /* z2 = h W2^T + b2 */
    rows_wt(N, K, Hc, act->h, c->w2, act->logits);
    for (int64_t n = 0; n < N; n++)
        for (int i = 0; i < K; i++) act->logits[n * K + i] += c->b2[i];
    /* the floors and clamps below would turn a NaN into a valid-looking route */
    const size_t nb = mattn_find_nonfinite(act->logits, (size_t)N * K);
    if (nb < (size_t)N * K)
        return mattn_set_error(MATTN_ERR_NUMERIC, "controller logits are not finite (%g at token %lld): a controller "
                               "weight holds NaN/Inf or x overflowed", (double)act->logits[nb], (long long)(nb / K));

    double sum = 0.0;
    if (c->kind == MATTN_CONTROLLER_PRIOR_FREE) {
        for (int64_t n = 0; n < N; n++) {
            double l[MATTN_MAX_EXPERTS];
            for (int i = 0; i < K; i++) l[i] = act->logits[n * K + i];
            float *al = act->alpha + n * K;
            mattn_softmax_tau(l, K, cfg->temperature, al);
            double ec = 0.0;
            for (int i = 0; i < K; i++) ec += (double)al[i] * c->costs[i];
            sum += cfg->cost_lambda * ec - cfg->entropy_coeff * shannon(al, K);
        }
        *aux = N > 0 ? sum / (double)N : 0.0;
        return MATTN_OK;
    }

    /* Bayesian: beta_hat, alpha, U, KL per token (independent streams). */
    int bad = 0;
    const int sample = training && cfg->sample_posterior;
    #pragma omp parallel for schedule(static) reduction(|| : bad)
    for (int64_t n = 0; n < N; n++) {
        double *a = act->a + n * K, a0 = 0.0;
        for (int i = 0; i < K; i++) {
            double v = c->prior[i] + softplus((double)act->logits[n * K + i]);
            a[i] = v > BETA_FLOOR ? v : BETA_FLOOR;
            if (!isfinite(a[i])) bad = 1;
            act->beta_hat[n * K + i] = (float)a[i];
            a0 += a[i];
        }
        if (bad) continue;
        if (sample) {
            mattn_rng r;
            mattn_rng_seed(&r, mattn_stream_seed(cfg->seed, step, (uint64_t)n, MATTN_PURPOSE_DIRICHLET));
            double *lg = act->logg + n * K;
            for (int i = 0; i < K; i++) mattn_rng_gamma(&r, a[i], &lg[i]);
            mattn_softmax_tau(lg, K, 1.0, act->alpha + n * K);
        } else {
            for (int i = 0; i < K; i++) act->alpha[n * K + i] = (float)(a[i] / a0);
        }
        act->unc[n] = (float)(cfg->uncertainty == MATTN_UNCERTAINTY_MUTUAL_INFO ? mattn_dir_mutual_info(a, K)
                                                                              : mattn_dir_entropy(a, K, NULL));
        act->kl[n] = mattn_dir_kl(a, c->prior, K, NULL);
    }
    if (bad)
        return mattn_set_error(MATTN_ERR_NUMERIC,
                               "controller produced a non-finite concentration (weights overflow?)");
    if (cfg->elbo_weight != 0.0 && cfg->kl_mode == MATTN_KL_BATCH) {
        /* KL of the batch's mean concentration; its gradient, the same for
         * every token (divided by N), is kept for the backward */
        double abar[MATTN_MAX_EXPERTS] = {0};
        for (int64_t n = 0; n < N; n++)
            for (int i = 0; i < K; i++) abar[i] += act->a[n * K + i];
        for (int i = 0; i < K; i++) abar[i] /= (double)N;
        *aux = cfg->elbo_weight * mattn_dir_kl(abar, c->prior, K, act->kl_bar_grad);
    } else if (cfg->elbo_weight != 0.0) {
        const double fb = cfg->free_bits; /* per-token KL below fb is free */
        for (int64_t n = 0; n < N; n++) sum += fb > 0.0 ? fmax(act->kl[n] - fb, 0.0) : act->kl[n];
        *aux = N > 0 ? cfg->elbo_weight * sum / (double)N : 0.0;
    } else {
        /* Python library: with elbo_weight == 0 the legacy cost/entropy terms
         * apply to the posterior mean (log(alpha + 1e-8) as there). */
        for (int64_t n = 0; n < N; n++) {
            const double *a = act->a + n * K;
            double a0 = 0.0, ec = 0.0, H = 0.0;
            for (int i = 0; i < K; i++) a0 += a[i];
            for (int i = 0; i < K; i++) {
                double m = a[i] / a0;
                ec += m * c->costs[i];
                H -= m * log(m + 1e-8);
            }
            sum += cfg->cost_lambda * ec - cfg->entropy_coeff * H;
        }
        *aux = N > 0 ? sum / (double)N : 0.0;
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// backward (docs/bayes-math.md §6)

mattn_status mattn_controller_alloc_grads(mattn_controller *c) {
    if (c->g_w1) return MATTN_OK;
    size_t in = (size_t)c->D + 2, Hc = (size_t)c->Hc, K = (size_t)c->K;
    c->g_w1 = mattn_amalloc(Hc * in * sizeof(float));
    c->g_b1 = mattn_amalloc(Hc * sizeof(float));
    c->g_w2 = mattn_amalloc(K * Hc * sizeof(float));
    c->g_b2 = mattn_amalloc(K * sizeof(float));
    if (!c->g_w1 || !c->g_b1 || !c->g_w2 || !c->g_b2) {
        mattn_afree(c->g_w1); mattn_afree(c->g_b1); mattn_afree(c->g_w2); mattn_afree(c->g_b2);
        c->g_w1 = c->g_b1 = c->g_w2 = c->g_b2 = NULL;
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for the controller's gradients");
    }
    memset(c->g_w1, 0, Hc * in * sizeof(float));
    memset(c->g_b1, 0, Hc * sizeof(float));
    memset(c->g_w2, 0, K * Hc * sizeof(float));
    memset(c->g_b2, 0, K * sizeof(float));
    return MATTN_OK;
}

static inline double sigmoid(double z) { return z > 20.0 ? 1.0 : 1.0 / (1.0 + exp(-z)); }

/* gz2 (per token) from galpha and the aux loss. */
void mattn_controller_logits_grad(const mattn_controller *c, const mattn_config *cfg, const mattn_ctrl_act *act,
                        int64_t n, int64_t N, int sample, const float *galpha, double g_aux, float *gz2) {
    const int K = c->K;
    const float *z2 = act->logits + n * K;
    double ga[MATTN_MAX_EXPERTS], g_al[MATTN_MAX_EXPERTS];
    for (int i = 0; i < K; i++) g_al[i] = galpha ? galpha[n * K + i] : 0.0;
    if (c->kind == MATTN_CONTROLLER_PRIOR_FREE) {
        const double tau = cfg->temperature;
        double m = z2[0], Z = 0.0, la[MATTN_MAX_EXPERTS], al[MATTN_MAX_EXPERTS], H = 0.0, ec = 0.0, dot = 0.0;
        for (int i = 1; i < K; i++) m = z2[i] > m ? z2[i] : m;
        for (int i = 0; i < K; i++) Z += exp((z2[i] - m) / tau);
        for (int i = 0; i < K; i++) {
            la[i] = (z2[i] - m) / tau - log(Z);
            al[i] = exp(la[i]);
            H -= al[i] * la[i];
            ec += al[i] * c->costs[i];
            dot += al[i] * g_al[i];
        }
        const double s = g_aux / (double)N;
        for (int i = 0; i < K; i++)
            gz2[i] = (float)(al[i] / tau * (g_al[i] - dot) +
                             s * al[i] / tau * (cfg->cost_lambda * (c->costs[i] - ec) +
                                                cfg->entropy_coeff * (la[i] + H)));
        return;
    }
    const double *a = act->a + n * K;
    double a0 = 0.0, al[MATTN_MAX_EXPERTS], dot = 0.0;
    for (int i = 0; i < K; i++) a0 += a[i];
    if (sample) {
        const double *lg = act->logg + n * K;
        double m = lg[0], Z = 0.0;
        for (int i = 1; i < K; i++) m = lg[i] > m ? lg[i] : m;
        for (int i = 0; i < K; i++) Z += (al[i] = exp(lg[i] - m));
        for (int i = 0; i < K; i++) al[i] /= Z;
        for (int i = 0; i < K; i++) dot += al[i] * g_al[i];
        for (int i = 0; i < K; i++) ga[i] = (g_al[i] - dot) * al[i] * mattn_dlng_da(a[i], lg[i]);
    } else {
        for (int i = 0; i < K; i++) dot += a[i] / a0 * g_al[i];
        for (int i = 0; i < K; i++) ga[i] = (g_al[i] - dot) / a0;
    }
    const double s = g_aux / (double)N;
    if (cfg->elbo_weight != 0.0 && cfg->kl_mode == MATTN_KL_BATCH) {
        for (int i = 0; i < K; i++) ga[i] += s * cfg->elbo_weight * act->kl_bar_grad[i];
    } else if (cfg->elbo_weight != 0.0 && !(cfg->free_bits > 0.0 && act->kl[n] <= cfg->free_bits)) {
        double gkl[MATTN_MAX_EXPERTS];
        mattn_dir_kl(a, c->prior, K, gkl);
        for (int i = 0; i < K; i++) ga[i] += s * cfg->elbo_weight * gkl[i];
    } else if (cfg->elbo_weight == 0.0 && (cfg->cost_lambda != 0.0 || cfg->entropy_coeff != 0.0)) {
        /* legacy terms on the posterior mean m = a/a0, -H with log(m + 1e-8) */
        double gm[MATTN_MAX_EXPERTS], mg = 0.0;
        for (int i = 0; i < K; i++) {
            double mi = a[i] / a0;
            gm[i] = s * (cfg->cost_lambda * c->costs[i] +
                         cfg->entropy_coeff * (log(mi + 1e-8) + mi / (mi + 1e-8)));
            mg += mi * gm[i];
        }
        for (int i = 0; i < K; i++) ga[i] += (gm[i] - mg) / a0;
    }
    for (int i = 0; i < K; i++) {
        const double v = c->prior[i] + softplus((double)z2[i]);
        gz2[i] = v < BETA_FLOOR ? 0.0f : (float)(ga[i] * sigmoid((double)z2[i]));
    }
}

mattn_status mattn_controller_backward(mattn_controller *c, const mattn_config *cfg, const mattn_ctrl_act *act,
                                       int B, int T, int training, uint64_t step, const float *galpha,
                                       const float *glogits, double g_aux, float *gx, float *gz2, float *gh) {
    mattn_status st = mattn_controller_alloc_grads(c);
    if (st != MATTN_OK) return st;
    const int D = c->D, Hc = c->Hc, K = c->K, in = D + 2;
    const int64_t N = (int64_t)B * T;
    const int sample = training && cfg->sample_posterior && c->kind == MATTN_CONTROLLER_BAYESIAN;
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        mattn_controller_logits_grad(c, cfg, act, n, N, sample, galpha, g_aux, gz2 + n * K);
        if (glogits)
            for (int i = 0; i < K; i++) gz2[n * K + i] += glogits[n * K + i];
    }
    /* z2 = h W2^T + b2 */
    mattn_gemm(1, 0, K, Hc, (int)N, 1.0f, gz2, K, act->h, Hc, 1.0f, c->g_w2, Hc);
    for (int64_t n = 0; n < N; n++)
        for (int i = 0; i < K; i++) c->g_b2[i] += gz2[n * K + i];
    mattn_gemm(0, 0, (int)N, Hc, K, 1.0f, gz2, K, c->w2, Hc, 0.0f, gh, Hc);
    /* h = dropout(GELU(z1)) */
    const float p = (float)cfg->dropout;
    const uint64_t dkey = mattn_stream_seed(cfg->seed, step, 0, MATTN_PURPOSE_CTRL_DROPOUT);
    if (training && p > 0.0f)
        for (int64_t i = 0; i < N * Hc; i++) gh[i] = mattn_hash_u01(dkey, (uint64_t)i) < p ? 0.0f : gh[i] / (1.0f - p);
    mattn_gelu_grad_mul(gh, act->z1, N * Hc);
    /* z1 = f W1^T + b1; x gets the first D feature columns (norm: stop-gradient) */
    mattn_gemm(1, 0, Hc, in, (int)N, 1.0f, gh, Hc, act->f, in, 1.0f, c->g_w1, in);
    for (int64_t n = 0; n < N; n++)
        for (int j = 0; j < Hc; j++) c->g_b1[j] += gh[n * Hc + j];
    if (gx) mattn_gemm(0, 0, (int)N, D, Hc, 1.0f, gh, Hc, c->w1, in, 1.0f, gx, D);
    return MATTN_OK;
}
