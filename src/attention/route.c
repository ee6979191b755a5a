/*
 * route.c — routing: from the controller's weights alpha to the merge
 * weights each token uses and the experts that run for it
 * (docs/design.md §1 "Merge and routing"):
 *   soft             w = alpha, every expert runs on every token;
 *   hard, training   top-k Gumbel-softmax weights of the logits (every
 *                    expert still runs, as in the Python library), with its
 *                    exact backward;
 *   hard, eval       each token's top-k experts only (Bayesian: tokens whose
 *                    uncertainty is not below eta merge softly instead);
 *   forced           a route per position, under hard routing in eval and in
 *                    training (benchmarks, routing studies, fixed hybrids:
 *                    in training every expert still runs, for the backward,
 *                    and the controller plays no part: no aux loss, no
 *                    gradient, its multipliers frozen).
 */
#include <math.h>
#include <string.h>

#include "attention/attention.h"

// ----------------------------------------------------------------------------
// routing: merge weights and which experts run for which token

/* The top-k experts of alpha: weight 1 for k = 1, alpha renormalised over
 * the chosen ones for k > 1. */
static void topk_weights(const float *al, int K, int k_top, float *w, uint8_t *ex) {
    mattn_topk_mask(al, K, k_top, ex);
    double s = 0.0;
    for (int k = 0; k < K; k++) s += ex[k] ? al[k] : 0.0f;
    for (int k = 0; k < K; k++) w[k] = ex[k] ? (k_top == 1 ? 1.0f : (float)(al[k] / s)) : 0.0f;
}

void mattn_layer_route(mattn_layer *l, int64_t N, int T, int t0) {
    const int K = l->K, k_top = l->cfg.hard_top_k;
    const float *alpha = l->act.alpha;
    if (l->forced && l->cfg.hard_routing) {
        memset(l->weights, 0, (size_t)N * K * sizeof(float));
        memset(l->exec, l->training, (size_t)N * K);
        for (int64_t n = 0; n < N; n++) {
            const int k = l->forced[t0 + n % T];
            l->weights[n * K + k] = 1.0f;
            l->exec[n * K + k] = 1;
        }
        return;
    }
    if (!l->cfg.hard_routing) {
        memcpy(l->weights, alpha, (size_t)N * K * sizeof(float));
        memset(l->exec, 1, (size_t)N * K);
        return;
    }
    if (l->training && l->cfg.hard_train == MATTN_HARD_STRAIGHT_THROUGH) {
        /* trained as deployed: the top-k of alpha (eval's weights, without
         * the gate); every expert computed, for the straight-through
         * gradient d/dalpha = d/dweights */
        for (int64_t n = 0; n < N; n++) topk_weights(alpha + n * K, K, k_top, l->weights + n * K, l->exec + n * K);
        memset(l->exec, 1, (size_t)N * K);
        return;
    }
    if (l->training) { /* Gumbel top-k weights; every expert still computed */
        mattn_gumbel_topk(l->weights, l->act.logits, N, K, k_top, l->cfg.gumbel_temp, l->cfg.seed,
                          l->step);
        memset(l->exec, 1, (size_t)N * K);
        return;
    }
    const int bayes = l->ctrl.kind == MATTN_CONTROLLER_BAYESIAN;
    const float eta = (float)l->cfg.uncertainty_threshold;
    for (int64_t n = 0; n < N; n++) {
        const float *al = alpha + n * K;
        float *w = l->weights + n * K;
        uint8_t *ex = l->exec + n * K;
        if (bayes && !(l->act.unc[n] < eta)) { /* uncertain: soft merge */
            memcpy(w, al, (size_t)K * sizeof(float));
            memset(ex, 1, (size_t)K);
            continue;
        }
        topk_weights(al, K, k_top, w, ex);
    }
}

// ----------------------------------------------------------------------------
// top-k Gumbel-softmax (training-mode hard routing, docs/bayes-math.md §1.9 variant C)

void mattn_gumbel_topk(float *w, const float *logits, int64_t N, int K, int k, double tau,
                       uint64_t seed, uint64_t step) {
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        mattn_rng r;
        mattn_rng_seed(&r, mattn_stream_seed(seed, step, (uint64_t)n, MATTN_PURPOSE_GUMBEL));
        double l[MATTN_MAX_EXPERTS];
        for (int i = 0; i < K; i++) l[i] = logits[n * K + i] - log(-log(mattn_rng_u01(&r)));
        float *y = w + n * K;
        mattn_softmax_tau(l, K, tau, y);
        if (k >= K) continue;
        uint8_t sel[MATTN_MAX_EXPERTS];
        mattn_topk_mask(y, K, k, sel);
        double s = 1e-8; /* as the Python library: soft / (sum + 1e-8) */
        for (int i = 0; i < K; i++) s += sel[i] ? y[i] : 0.0f;
        for (int i = 0; i < K; i++) y[i] = sel[i] ? (float)(y[i] / s) : 0.0f;
    }
}

/* y_soft = softmax((l + G)/tau) for token n, in double, from the same stream
 * as the forward. */
static void gumbel_soft(double *p, const float *l, int K, double tau, uint64_t seed, uint64_t step, int64_t n) {
    mattn_rng r;
    mattn_rng_seed(&r, mattn_stream_seed(seed, step, (uint64_t)n, MATTN_PURPOSE_GUMBEL));
    double v[MATTN_MAX_EXPERTS], m = -INFINITY, Z = 0.0;
    for (int i = 0; i < K; i++) {  /* exactly the forward's arithmetic */
        v[i] = l[i] - log(-log(mattn_rng_u01(&r)));
        m = v[i] > m ? v[i] : m;
    }
    for (int i = 0; i < K; i++) Z += (p[i] = exp((v[i] - m) / tau));
    for (int i = 0; i < K; i++) p[i] /= Z;
}

/* Exact gradient of the forward above (what autograd gives the Python
 * library, whose weights are the renormalised masked soft values):
 *   w_i = m_i p_i / S,  S = sum_j m_j p_j + 1e-8
 *   gp_i = (m_i / S)(gw_i - <w, gw>),  gl_j += (p_j / tau)(gp_j - <p, gp>). */
void mattn_gumbel_topk_backward(const float *gw, const float *logits, int64_t N, int K, int k, double tau,
                                uint64_t seed, uint64_t step, float *glogits) {
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        double p[MATTN_MAX_EXPERTS], gp[MATTN_MAX_EXPERTS];
        gumbel_soft(p, logits + n * K, K, tau, seed, step, n);
        const float *g = gw + n * K;
        if (k >= K) {
            for (int i = 0; i < K; i++) gp[i] = g[i];
        } else {
            float pf[MATTN_MAX_EXPERTS];
            uint8_t sel[MATTN_MAX_EXPERTS];
            for (int i = 0; i < K; i++) pf[i] = (float)p[i];
            mattn_topk_mask(pf, K, k, sel);
            double S = 1e-8, wg = 0.0;
            for (int i = 0; i < K; i++) S += sel[i] ? pf[i] : 0.0f;
            for (int i = 0; i < K; i++) wg += sel[i] ? (double)(float)(pf[i] / S) * g[i] : 0.0;
            for (int i = 0; i < K; i++) gp[i] = sel[i] ? (g[i] - wg) / S : 0.0;
        }
        double dot = 0.0;
        for (int i = 0; i < K; i++) dot += p[i] * gp[i];
        for (int i = 0; i < K; i++) glogits[n * K + i] += (float)(p[i] / tau * (gp[i] - dot));
    }
}
