/*
 * eval_gate.c — `metaattn eval --gate-share S`: the Bayesian controller's
 * uncertainty gate calibrated on the split, and whether it is informative.
 *
 * Three passes over the same windows:
 *   top-1   hard routing with the gate shut (threshold inf): each token's
 *           cross-entropy and, per layer, its uncertainty u_l(t);
 *   soft    soft routing: each token's cross-entropy;
 *   gated   hard routing with the calibrated threshold eta.
 * eta is the (1 - S) quantile of the top-1 pass's u_l(t) over every layer
 * and token (the model has one threshold for all layers), so that a share S
 * of the (layer, token) decisions merge softly.  Informative means: the
 * tokens the gate keeps soft in some layer (u_l(t) >= eta for any l) are
 * those where hard routing hurts most — their mean hard-vs-soft gap
 * (CE top-1 - CE soft) is compared with the rest's, and with the gap of the
 * same number of tokens chosen by the gap itself (an oracle).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct pass {
    float *ce;            /* (n_tok) per-token cross-entropy */
    float *unc;           /* (L, n_tok) uncertainty, or NULL */
    double loss, seconds, flops;
    double *soft_share;   /* (L) share of tokens with u >= eta (gated pass) */
} pass;

/* One pass over n_win windows of T+1 bytes (evenly spread over n_all). */
static int run_pass(mattn_model *m, const uint8_t *bytes, int64_t n_all, int64_t n_win, int T, int batch,
                    double eta, pass *p) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int L = cfg->n_layers, V = cfg->vocab_size;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)batch * T), *tgt = malloc(sizeof(int32_t) * (size_t)batch * T);
    int rc = !idx || !tgt ? cli_fail(1, "out of memory") : 0;
    double ce_sum = 0.0;
    int64_t n = 0;
    for (int64_t w0 = 0; w0 < n_win && !rc; w0 += batch) {
        const int B = (int)(n_win - w0 < batch ? n_win - w0 : batch);
        for (int b = 0; b < B; b++) {
            const int64_t w = n_win == n_all ? w0 + b : (w0 + b) * n_all / n_win;
            const uint8_t *s = bytes + (size_t)w * (size_t)(T + 1);
            for (int t = 0; t < T; t++) idx[(size_t)b * T + t] = s[t], tgt[(size_t)b * T + t] = s[t + 1];
        }
        if (mattn_model_forward(m, idx, NULL, B, T, NULL, NULL) != MATTN_OK) {
            rc = cli_fail(1, "forward: %s", mattn_model_errmsg(m));
            break;
        }
        const float *lg = mattn_model_logits(m);
        for (int64_t i = 0; i < (int64_t)B * T; i++) { /* log-sum-exp - logit of the target */
            const float *z = lg + i * V;
            double mx = z[0], s = 0.0;
            for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            for (int v = 0; v < V; v++) s += exp(z[v] - mx);
            const double ce = mx + log(s) - z[tgt[i]];
            if (p->ce) p->ce[n + i] = (float)ce;
            ce_sum += ce;
        }
        for (int l = 0; l < L; l++) {
            mattn_stats st;
            mattn_model_layer_stats(m, l, &st);
            p->seconds += st.seconds;
            p->flops += st.flops_total;
            const float *u = mattn_layer_uncertainty(mattn_model_layer(m, l));
            for (int64_t i = 0; i < (int64_t)B * T; i++) {
                if (p->unc) p->unc[(size_t)l * (size_t)(n_win * T) + (size_t)(n + i)] = u[i];
                if (p->soft_share) p->soft_share[l] += !(u[i] < eta);
            }
        }
        n += (int64_t)B * T;
    }
    free(idx);
    free(tgt);
    p->loss = n ? ce_sum / (double)n : 0.0;
    for (int l = 0; p->soft_share && l < L; l++) p->soft_share[l] /= (double)n;
    return rc;
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Routing for one pass: hard with threshold eta (inf: top-1), or soft. */
static int set_pass(mattn_model *m, int hard, double eta) {
    mattn_config k = mattn_model_config(m)->attn;
    k.hard_routing = hard;
    k.uncertainty_threshold = eta;
    if (mattn_model_set_routing(m, &k) != MATTN_OK) return cli_fail(1, "routing: %s", mattn_model_errmsg(m));
    return 0;
}

typedef struct gate_stats { double gated, gap_gated, gap_rest, gap_oracle, gap_all; } gate_stats;

/* The hard-vs-soft gap of the tokens the gate keeps soft in some layer, the
 * rest, and an oracle's choice of as many tokens by the gap itself. */
static int informativeness(const pass *top1, const pass *soft, int L, int64_t N, double eta, gate_stats *g) {
    float *gap = malloc(sizeof(float) * (size_t)N);
    if (!gap) return cli_fail(1, "out of memory");
    int64_t ng = 0;
    double sg = 0.0, sr = 0.0;
    for (int64_t i = 0; i < N; i++) {
        int kept = 0;
        for (int l = 0; l < L && !kept; l++) kept = !(top1->unc[(size_t)l * (size_t)N + (size_t)i] < eta);
        gap[i] = top1->ce[i] - soft->ce[i];
        if (kept) ng++, sg += gap[i];
        else sr += gap[i];
    }
    qsort(gap, (size_t)N, sizeof *gap, cmp_float);
    double so = 0.0;
    for (int64_t i = N - ng; i < N; i++) so += gap[i];
    *g = (gate_stats){.gated = (double)ng / (double)N, .gap_gated = ng ? sg / (double)ng : NAN,
                      .gap_rest = ng < N ? sr / (double)(N - ng) : NAN, .gap_oracle = ng ? so / (double)ng : NAN,
                      .gap_all = (sg + sr) / (double)N};
    free(gap);
    return 0;
}

static void print_gate(double share, double eta, const pass p[3], const gate_stats *g, int L, int64_t N, int json) {
    if (json) {
        printf("{\"gate_share\": %.6f, \"threshold\": %.6g, \"tokens\": %lld, \"loss_soft\": %.6f, \"loss_top1\": %.6f, "
               "\"loss_gated\": %.6f, \"seconds_top1\": %.6f, \"seconds_gated\": %.6f, \"flops_top1\": %.6g, "
               "\"flops_gated\": %.6g, \"kept_soft_tokens\": %.6f, \"gap_kept\": %.6f, \"gap_rest\": %.6f, "
               "\"gap_all\": %.6f, \"gap_oracle\": %.6f, \"soft_share\": [", share, eta, (long long)N, p[1].loss,
               p[0].loss, p[2].loss, p[0].seconds, p[2].seconds, p[0].flops, p[2].flops, g->gated, g->gap_gated,
               g->gap_rest, g->gap_all, g->gap_oracle);
        for (int l = 0; l < L; l++) printf("%s%.6f", l ? ", " : "", p[2].soft_share[l]);
        printf("]}\n");
        return;
    }
    printf("uncertainty gate calibrated for a share %.3f of (layer, token) decisions: threshold %.6g "
           "(use --uncertainty-threshold %.6g)\n", share, eta, eta);
    printf("  soft   loss %.4f nats/byte\n", p[1].loss);
    printf("  top-1  loss %.4f nats/byte | attention %.3g GFLOP, %.3f s\n", p[0].loss, 1e-9 * p[0].flops, p[0].seconds);
    printf("  gated  loss %.4f nats/byte | attention %.3g GFLOP, %.3f s | kept soft per layer:", p[2].loss,
           1e-9 * p[2].flops, p[2].seconds);
    for (int l = 0; l < L; l++) printf(" %.1f%%", 100 * p[2].soft_share[l]);
    printf("\n  informative? tokens kept soft in some layer: %.1f%% of %lld; their top-1 - soft gap %+.4f nats "
           "vs %+.4f for the rest (all %+.4f; an oracle's pick of as many tokens %+.4f)\n", 100 * g->gated,
           (long long)N, g->gap_gated, g->gap_rest, g->gap_all, g->gap_oracle);
}

int eval_gate(mattn_model *m, const uint8_t *bytes, int64_t n_all, int64_t n_win, int T, int batch, double share,
              int json) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int L = cfg->n_layers;
    if (cfg->attn.controller != MATTN_CONTROLLER_BAYESIAN)
        return cli_fail(1, "--gate-share: the model's controller is prior-free, which has no uncertainty gate");
    const int64_t N = n_win * T;
    pass p[3] = {{0}};
    p[0].ce = malloc(sizeof(float) * (size_t)N);
    p[0].unc = malloc(sizeof(float) * (size_t)N * (size_t)L);
    p[1].ce = malloc(sizeof(float) * (size_t)N);
    p[2].soft_share = calloc((size_t)L, sizeof(double));
    float *sorted = malloc(sizeof(float) * (size_t)N * (size_t)L);
    int rc = !p[0].ce || !p[0].unc || !p[1].ce || !p[2].soft_share || !sorted ? cli_fail(1, "out of memory") : 0;
    if (!rc) rc = set_pass(m, 1, INFINITY);
    if (!rc) rc = run_pass(m, bytes, n_all, n_win, T, batch, INFINITY, &p[0]);
    if (!rc) rc = set_pass(m, 0, INFINITY);
    if (!rc) rc = run_pass(m, bytes, n_all, n_win, T, batch, INFINITY, &p[1]);
    double eta = INFINITY;
    gate_stats g = {0};
    if (!rc) {
        memcpy(sorted, p[0].unc, sizeof(float) * (size_t)N * (size_t)L);
        qsort(sorted, (size_t)(N * L), sizeof *sorted, cmp_float);
        const int64_t k = (int64_t)floor((1.0 - share) * (double)(N * L)); /* share S at or above eta */
        eta = k >= N * L ? INFINITY : sorted[k];
        rc = informativeness(&p[0], &p[1], L, N, eta, &g);
    }
    if (!rc) rc = set_pass(m, 1, eta);
    if (!rc) rc = run_pass(m, bytes, n_all, n_win, T, batch, eta, &p[2]);
    if (!rc) print_gate(share, eta, p, &g, L, N, json);
    free(p[0].ce);
    free(p[0].unc);
    free(p[1].ce);
    free(p[2].soft_share);
    free(sorted);
    return rc;
}
