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

// ----------------------------------------------------------------------------
// how routes depend on tokens and positions: joint counts and their MI

struct mattn_route_counts {
    int K, V, P;
    int64_t n;
    int64_t *tok;   /* (K, V) */
    int64_t *pos;   /* (K, P) */
};

mattn_status mattn_route_counts_init(int n_experts, int vocab, int n_buckets, mattn_route_counts **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_route_counts_init: out is NULL");
    *out = NULL;
    if (n_experts < 1 || n_experts > MATTN_MAX_EXPERTS || vocab < 1 || vocab > (1 << 24) || n_buckets < 1 ||
        n_buckets > 4096)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "route counts need 1..%d experts, a vocabulary of 1..2^24 and "
                               "1..4096 position buckets, got %d, %d, %d", MATTN_MAX_EXPERTS, n_experts, vocab,
                               n_buckets);
    mattn_route_counts *c = mattn_calloc(1, sizeof *c);
    if (c) {
        c->tok = mattn_calloc((size_t)n_experts * vocab, sizeof *c->tok);
        c->pos = mattn_calloc((size_t)n_experts * n_buckets, sizeof *c->pos);
    }
    if (!c || !c->tok || !c->pos) {
        mattn_route_counts_free(c);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for route counts");
    }
    c->K = n_experts, c->V = vocab, c->P = n_buckets;
    *out = c;
    return MATTN_OK;
}

void mattn_route_counts_free(mattn_route_counts *c) {
    if (!c) return;
    mattn_free(c->tok);
    mattn_free(c->pos);
    mattn_free(c);
}

void mattn_route_counts_reset(mattn_route_counts *c) {
    if (!c) return;
    memset(c->tok, 0, (size_t)c->K * c->V * sizeof *c->tok);
    memset(c->pos, 0, (size_t)c->K * c->P * sizeof *c->pos);
    c->n = 0;
}

mattn_status mattn_route_counts_add(mattn_route_counts *c, const mattn_layer *l, const int32_t *tokens) {
    if (!c || !l || !tokens) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_route_counts_add: NULL argument");
    const float *w = mattn_layer_merge_weights(l);
    if (!w) return mattn_set_error(MATTN_ERR_MISUSE, "mattn_route_counts_add: the layer has no forward to count");
    const int K = l->K, T = l->fT;
    if (K != c->K)
        return mattn_set_error(MATTN_ERR_SHAPE, "route counts are for %d experts, the layer has %d", c->K, K);
    for (int64_t n = 0; n < l->N; n++) {
        if (tokens[n] < 0 || tokens[n] >= c->V)
            return mattn_set_error(MATTN_ERR_INVALID_ARG, "tokens[%lld] = %d is outside [0, %d)", (long long)n,
                                   tokens[n], c->V);
    }
    for (int64_t n = 0; n < l->N; n++) {
        int r = 0;
        for (int k = 1; k < K; k++)
            if (w[n * K + k] > w[n * K + r]) r = k;
        const int t = T > 0 ? (int)(n % T) : 0, b = (int)((int64_t)t * c->P / (T > 0 ? T : 1));
        c->tok[(size_t)r * c->V + tokens[n]]++;
        c->pos[(size_t)r * c->P + b]++;
    }
    c->n += l->N;
    return MATTN_OK;
}

/* Miller-Madow corrected plug-in MI of a (R, S) count table, in nats, >= 0. */
static double mi_counts(const int64_t *joint, int R, int S, int64_t n) {
    if (n <= 0) return 0.0;
    double h_r = 0.0, h_s = 0.0, h_rs = 0.0;
    int m_r = 0, m_s = 0, m_rs = 0;
    for (int r = 0; r < R; r++) {
        int64_t row = 0;
        for (int s = 0; s < S; s++) {
            const int64_t x = joint[(size_t)r * S + s];
            row += x;
            if (x) h_rs -= (double)x / n * log((double)x / n), m_rs++;
        }
        if (row) h_r -= (double)row / n * log((double)row / n), m_r++;
    }
    for (int s = 0; s < S; s++) {
        int64_t col = 0;
        for (int r = 0; r < R; r++) col += joint[(size_t)r * S + s];
        if (col) h_s -= (double)col / n * log((double)col / n), m_s++;
    }
    const double mi = h_r + h_s - h_rs + ((m_r - 1) + (m_s - 1) - (m_rs - 1)) / (2.0 * (double)n);
    return mi > 0.0 ? mi : 0.0;
}

double mattn_route_counts_mi_token(const mattn_route_counts *c) { return c ? mi_counts(c->tok, c->K, c->V, c->n) : 0.0; }
double mattn_route_counts_mi_position(const mattn_route_counts *c) { return c ? mi_counts(c->pos, c->K, c->P, c->n) : 0.0; }
int64_t mattn_route_counts_total(const mattn_route_counts *c) { return c ? c->n : 0; }
