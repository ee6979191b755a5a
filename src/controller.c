/*
 * controller.c — the Meta-Controller: features f_t = [x_t; ||x_t||/sqrt(D);
 * pos_t], MLP Linear(D+2 -> Hc) -> GELU(erf) -> dropout -> Linear(Hc -> K)
 * giving logits z2, then either
 *   prior-free:  alpha = softmax(z2 / temperature), aux = cost_lambda E[cost]
 *                - entropy_coeff H(alpha)
 *   bayesian:    beta_hat = max(b + softplus(z2), 1e-3) with the compute-aware
 *                prior b_i = epsilon + beta_0 (1 - c_i); alpha = posterior mean,
 *                or in training with sample_posterior a Dirichlet sample
 *                (log-space Gamma normalisation, spec §4.6 R form);
 *                U_t = H[Dir(beta_hat)], aux = elbo_weight mean KL[q || prior].
 * Also the top-k Gumbel-softmax weights of training-mode hard routing.
 * Maths and test vectors: ../shared/spec/bayes_math.md.  Forward only here;
 * the backward (spec §5-§6) comes with training.
 */
#include <math.h>
#include <string.h>

#include "mattn_impl.h"

#define BETA_FLOOR 1e-3

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
    for (int i = 0; i < c->K; i++) {
        c->costs[i] = cfg->expert_costs[i];
        c->prior[i] = cfg->epsilon + cfg->beta_0 * (1.0 - cfg->expert_costs[i]);
        /* the Python buffer is computed in float32 */
        c->prior_beta[i] = (float)cfg->epsilon + (float)cfg->beta_0 * (1.0f - (float)cfg->expert_costs[i]);
    }
    return MATTN_OK;
}

void mattn_controller_free(mattn_controller *c) {
    if (!c) return;
    mattn_afree(c->w1);
    mattn_afree(c->b1);
    mattn_afree(c->w2);
    mattn_afree(c->b2);
    c->w1 = c->b1 = c->w2 = c->b2 = NULL;
}

double mattn_controller_flops(const mattn_controller *c, int64_t N) {
    return 2.0 * (double)N * ((double)(c->D + 2) * c->Hc + (double)c->Hc * c->K);
}

// ----------------------------------------------------------------------------
// elementwise pieces

static inline float gelu(float z) { return 0.5f * z * (1.0f + erff(z * 0.70710678118654752f)); }

/* torch-compatible softplus (threshold 20), in double (spec §6.1) */
static inline double softplus(double z) { return z > 20.0 ? z : log1p(exp(z)); }

/* Shannon entropy of a probability vector, 0 ln 0 = 0. */
static double shannon(const float *p, int K) {
    double H = 0.0;
    for (int i = 0; i < K; i++)
        if (p[i] > 0.0f) H -= (double)p[i] * log((double)p[i]);
    return H;
}

/* softmax(v / tau) into out, in double, stable. */
static void softmax_tau(const double *v, int K, double tau, float *out) {
    double m = v[0], e[MATTN_MAX_EXPERTS], Z = 0.0;
    for (int i = 1; i < K; i++) m = v[i] > m ? v[i] : m;
    for (int i = 0; i < K; i++) Z += (e[i] = exp((v[i] - m) / tau));
    for (int i = 0; i < K; i++) out[i] = (float)(e[i] / Z);
}

// ----------------------------------------------------------------------------
// forward

mattn_status mattn_controller_forward(const mattn_controller *c, const mattn_config *cfg,
                                      mattn_ctrl_act *act, const float *x, int B, int T,
                                      int training, uint64_t step, double *aux) {
    const int D = c->D, Hc = c->Hc, K = c->K, in = D + 2;
    const int64_t N = (int64_t)B * T;

    /* features: [x ; ||x||/sqrt(D) (stop-gradient) ; t/(T-1)] */
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xt = x + n * D;
        float *f = act->f + n * in;
        double ss = 0.0;
        for (int d = 0; d < D; d++) {
            f[d] = xt[d];
            ss += (double)xt[d] * xt[d];
        }
        f[D] = (float)(sqrt(ss) / sqrt((double)D));
        f[D + 1] = T > 1 ? (float)(n % T) / (float)(T - 1) : 0.0f;
    }

    /* z1 = f W1^T + b1;  h = dropout(GELU(z1)) */
    mattn_gemm(0, 1, (int)N, Hc, in, 1.0f, act->f, in, c->w1, in, 0.0f, act->z1, Hc);
    const float p = (float)cfg->dropout;
    const uint64_t dkey = mattn_stream_seed(cfg->seed, step, 0, MATTN_PURPOSE_CTRL_DROPOUT);
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        for (int j = 0; j < Hc; j++) {
            float z = (act->z1[n * Hc + j] += c->b1[j]);
            float h = gelu(z);
            if (training && p > 0.0f)
                h = mattn_hash_u01(dkey, (uint64_t)(n * Hc + j)) < p ? 0.0f : h / (1.0f - p);
            act->h[n * Hc + j] = h;
        }
    }

    /* z2 = h W2^T + b2 */
    mattn_gemm(0, 1, (int)N, K, Hc, 1.0f, act->h, Hc, c->w2, Hc, 0.0f, act->logits, K);
    for (int64_t n = 0; n < N; n++)
        for (int i = 0; i < K; i++) act->logits[n * K + i] += c->b2[i];

    double sum = 0.0;
    if (c->kind == MATTN_CONTROLLER_PRIOR_FREE) {
        for (int64_t n = 0; n < N; n++) {
            double l[MATTN_MAX_EXPERTS];
            for (int i = 0; i < K; i++) l[i] = act->logits[n * K + i];
            float *al = act->alpha + n * K;
            softmax_tau(l, K, cfg->temperature, al);
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
            softmax_tau(lg, K, 1.0, act->alpha + n * K);
        } else {
            for (int i = 0; i < K; i++) act->alpha[n * K + i] = (float)(a[i] / a0);
        }
        act->unc[n] = (float)mattn_dir_entropy(a, K, NULL);
        act->kl[n] = mattn_dir_kl(a, c->prior, K, NULL);
    }
    if (bad)
        return mattn_set_error(MATTN_ERR_NUMERIC,
                               "controller produced a non-finite concentration (weights overflow?)");
    if (cfg->elbo_weight != 0.0) {
        for (int64_t n = 0; n < N; n++) sum += act->kl[n];
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
// top-k Gumbel-softmax (training-mode hard routing, spec §1.9 variant C)

void mattn_gumbel_topk(float *w, const float *logits, int64_t N, int K, int k, double tau,
                       uint64_t seed, uint64_t step) {
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        mattn_rng r;
        mattn_rng_seed(&r, mattn_stream_seed(seed, step, (uint64_t)n, MATTN_PURPOSE_GUMBEL));
        double l[MATTN_MAX_EXPERTS];
        for (int i = 0; i < K; i++) l[i] = logits[n * K + i] - log(-log(mattn_rng_u01(&r)));
        float *y = w + n * K;
        softmax_tau(l, K, tau, y);
        if (k >= K) continue;
        uint8_t sel[MATTN_MAX_EXPERTS];
        mattn_topk_mask(y, K, k, sel);
        double s = 0.0;
        for (int i = 0; i < K; i++) s += sel[i] ? y[i] : 0.0f;
        for (int i = 0; i < K; i++) y[i] = sel[i] ? (float)(y[i] / s) : 0.0f;
    }
}
