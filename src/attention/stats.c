/*
 * stats.c — RoutingStats (docs/design.md §1 "Routing statistics") of the
 * last forward or decode step, and its one-line format.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attention/attention.h"

void mattn_layer_fill_stats(const mattn_layer *l, int64_t N, mattn_stats *s) {
    const int K = l->K;
    memset(s, 0, sizeof *s);
    s->n_experts = K;
    s->n_tokens = N;
    s->has_uncertainty = l->ctrl.kind == MATTN_CONTROLLER_BAYESIAN;
    for (int64_t n = 0; n < N; n++) {
        const float *a = l->act.alpha + n * K;
        int am = 0;
        double H = 0.0, c = 0.0;
        for (int k = 0; k < K; k++) {
            s->weight[k] += a[k];
            c += (double)a[k] * l->cfg.expert_costs[k];
            if (a[k] > 0.0f) H -= (double)a[k] * log((double)a[k]);
            if (a[k] > a[am]) am = k;
        }
        s->entropy += H;
        s->expected_cost += c;
        s->hard_cost += l->cfg.expert_costs[am];
        s->collapsed += a[am] > 0.9f;
        if (s->has_uncertainty) s->uncertainty += l->act.unc[n];
    }
    double inv = N > 0 ? 1.0 / (double)N : 0.0;
    for (int k = 0; k < K; k++) {
        s->weight[k] *= inv;
        s->exec_frac[k] = (double)l->n_rows[k] * inv;
    }
    s->entropy *= inv;
    s->expected_cost *= inv;
    s->hard_cost *= inv;
    s->collapsed *= inv;
    s->uncertainty *= inv;
}

int mattn_stats_format(const mattn_stats *s, char *buf, size_t n) {
    if (!s || (!buf && n)) return -1;
    int len = snprintf(buf, n, "RoutingStats(");
#define PUT(...) len += snprintf(buf + ((size_t)len < n ? (size_t)len : n), (size_t)len < n ? n - (size_t)len : 0, __VA_ARGS__)
    for (int k = 0; k < s->n_experts; k++) PUT("%sE%d=%.3f", k ? " | " : "", k + 1, s->weight[k]);
    PUT("  entropy=%.4f  cost=%.4f  collapsed=%.2f%%", s->entropy, s->expected_cost, 100.0 * s->collapsed);
    if (s->has_uncertainty) PUT("  uncertainty=%.4f", s->uncertainty);
    PUT(")");
#undef PUT
    return len;
}
