/*
 * budget.c — the compute budget a router must meet (docs/design.md §1
 * "Merge and routing"), as constraints on the merge weights w (N,K) of each
 * layer, enforced by Lagrange multipliers that the trainer updates by dual
 * ascent after each step (mattn_layer_update_duals):
 *
 *   cost     mean_t sum_k w_tk c_k <= cost_target      lambda_c >= 0
 *   full     mean_t w_t,full        = full_share       lambda_f free
 *   floor    mean_t w_tk           >= usage_floor       lambda_k >= 0
 *
 * The aux loss gets lambda_c (cost - C) + lambda_f (m_full - S) +
 * sum_k lambda_k (u - m_k), and each w_tk the gradient
 * (lambda_c c_k + lambda_f [k = full] - lambda_k) / N.  The weights are
 * those the merge used: alpha (soft), the Gumbel top-k (hard, gumbel) or the
 * top-k of alpha (hard, straight-through, whose backward passes d/dw to
 * alpha unchanged), so the multipliers price what the layer executes.
 */
#include <math.h>
#include <string.h>

#include "attention/attention.h"

int mattn_budget_active(const mattn_config *cfg) {
    return cfg->cost_target >= 0.0 || cfg->full_share >= 0.0 || cfg->usage_floor > 0.0;
}

double mattn_budget_forward(mattn_layer *l, int64_t N) {
    const mattn_config *c = &l->cfg;
    if (!mattn_budget_active(c) || N < 1) return 0.0;
    const int K = l->K;
    double cost = 0.0, share[MATTN_MAX_EXPERTS] = {0};
    for (int64_t n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            const double w = l->weights[n * K + k];
            share[k] += w;
            cost += w * c->expert_costs[k];
        }
    for (int k = 0; k < K; k++) share[k] /= (double)N;
    cost /= (double)N;
    if (l->training) { /* what the next dual update prices */
        l->m_cost = cost;
        memcpy(l->m_share, share, sizeof share);
        l->m_valid = 1;
    }
    double term = 0.0;
    if (c->cost_target >= 0.0) term += l->duals[0] * (cost - c->cost_target);
    if (c->full_share >= 0.0 && l->full_k >= 0) term += l->duals[1] * (share[l->full_k] - c->full_share);
    if (c->usage_floor > 0.0)
        for (int k = 0; k < K; k++) term += l->duals[2 + k] * (c->usage_floor - share[k]);
    return term;
}

void mattn_budget_backward(const mattn_layer *l, int64_t N, double g_aux, float *gw) {
    const mattn_config *c = &l->cfg;
    if (!mattn_budget_active(c) || N < 1) return;
    const int K = l->K;
    double g[MATTN_MAX_EXPERTS] = {0};
    for (int k = 0; k < K; k++) {
        if (c->cost_target >= 0.0) g[k] += l->duals[0] * c->expert_costs[k];
        if (c->full_share >= 0.0 && k == l->full_k) g[k] += l->duals[1];
        if (c->usage_floor > 0.0) g[k] -= l->duals[2 + k];
        g[k] *= g_aux / (double)N;
    }
    for (int64_t n = 0; n < N; n++)
        for (int k = 0; k < K; k++) gw[n * K + k] += (float)g[k];
}

mattn_status mattn_layer_update_duals(mattn_layer *l) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_update_duals: layer is NULL");
    const mattn_config *c = &l->cfg;
    if (!mattn_budget_active(c) || (l->forced && c->hard_routing)) return MATTN_OK; /* forced: frozen */
    if (!l->m_valid)
        return mattn_set_error_h(l->errmsg, MATTN_ERR_MISUSE, "mattn_layer_update_duals: no training forward since "
                                 "the last update");
    const double eta = c->dual_lr;
    if (c->cost_target >= 0.0) l->duals[0] = fmax(0.0, l->duals[0] + eta * (l->m_cost - c->cost_target));
    if (c->full_share >= 0.0 && l->full_k >= 0) l->duals[1] += eta * (l->m_share[l->full_k] - c->full_share);
    if (c->usage_floor > 0.0)
        for (int k = 0; k < l->K; k++)
            l->duals[2 + k] = fmax(0.0, l->duals[2 + k] + eta * (c->usage_floor - l->m_share[k]));
    l->m_valid = 0;
    return MATTN_OK;
}

int mattn_layer_n_duals(const mattn_layer *l) { return l && mattn_budget_active(&l->cfg) ? 2 + l->K : 0; }
double *mattn_layer_duals(mattn_layer *l) { return l ? l->duals : NULL; }

mattn_status mattn_duals_read(const mattn_st_tensor *t, const char *path, int n, double *duals) {
    if (t->ndim != 1 || t->shape[0] != n)
        return mattn_set_error(MATTN_ERR_SHAPE, "%s: buffer '%s' has %lld values, the config's budget has %d", path,
                               t->name, (long long)t->numel, n);
    double v[2 + MATTN_MAX_EXPERTS];
    mattn_st_to_f64(t, v);
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return mattn_set_error(MATTN_ERR_NUMERIC, "%s: buffer '%s'[%d] is not finite", path, t->name, i);
    memcpy(duals, v, (size_t)n * sizeof(double));
    return MATTN_OK;
}
