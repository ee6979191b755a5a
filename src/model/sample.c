/*
 * sample.c — the public token sampler (metaattn.h, "Sampling"): greedy, or
 * a draw at a temperature from the top-k logits and the nucleus (top-p) of
 * those, from a seeded stream.  `metaattn generate` and the sample at the end
 * of `metaattn train` use it.  With top_p = 1 the arithmetic, its order and
 * the stream (xoshiro256** seeded with mattn_stream_seed(seed, 0, 0,
 * MATTN_PURPOSE_SAMPLE), one uniform per non-greedy draw) are exactly those
 * of the sampler `metaattn generate` had before it moved here, so a seed
 * gives the same text as before.
 */
#include <math.h>
#include <stdlib.h>

#include "base/base.h"

struct mattn_sampler {
    mattn_sampler_config cfg;
    mattn_rng rng;
    float *sorted;  /* scratch: the logits in descending order (top-k, top-p) */
    int cap;
};

#define BAD(...) return mattn_set_error(MATTN_ERR_INVALID_ARG, __VA_ARGS__)

mattn_sampler_config mattn_sampler_config_default(void) {
    return (mattn_sampler_config){.temperature = 0.8, .top_k = 40, .top_p = 1.0, .seed = 1};
}

static mattn_status check_config(const mattn_sampler_config *c) {
    if (!(c->temperature >= 0.0) || isinf(c->temperature))
        BAD("sampler temperature must be finite and >= 0 (0 = greedy), got %g", c->temperature);
    if (c->top_k < 0) BAD("sampler top_k must be >= 0 (0 = all tokens), got %d", c->top_k);
    if (!(c->top_p > 0.0 && c->top_p <= 1.0)) BAD("sampler top_p must be in (0, 1] (1 = off), got %g", c->top_p);
    return MATTN_OK;
}

mattn_status mattn_sampler_init(const mattn_sampler_config *cfg, mattn_sampler **out) {
    if (!out) BAD("mattn_sampler_init: out is NULL");
    *out = NULL;
    if (!cfg) BAD("mattn_sampler_init: cfg is NULL");
    mattn_status st = check_config(cfg);
    if (st != MATTN_OK) return st;
    mattn_sampler *s = mattn_calloc(1, sizeof *s);
    if (!s) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory creating a sampler");
    s->cfg = *cfg;
    mattn_rng_seed(&s->rng, mattn_stream_seed(cfg->seed, 0, 0, MATTN_PURPOSE_SAMPLE));
    *out = s;
    return MATTN_OK;
}

void mattn_sampler_free(mattn_sampler *s) {
    if (!s) return;
    mattn_free(s->sorted);
    mattn_free(s);
}

static int desc(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* The logits sorted in descending order, in the sampler's scratch. */
static const float *sorted_logits(mattn_sampler *s, const float *lg, int V) {
    if (V > s->cap) {
        float *p = mattn_realloc(s->sorted, sizeof(float) * (size_t)V);
        if (!p) return NULL;
        s->sorted = p;
        s->cap = V;
    }
    memcpy(s->sorted, lg, sizeof(float) * (size_t)V);
    qsort(s->sorted, (size_t)V, sizeof(float), desc);
    return s->sorted;
}

mattn_status mattn_sampler_sample(mattn_sampler *s, const float *lg, int V, int32_t *token) {
    if (!s || !lg || !token) BAD("mattn_sampler_sample: %s is NULL", !s ? "sampler" : !lg ? "logits" : "token");
    if (V < 1) BAD("mattn_sampler_sample: V must be >= 1, got %d", V);
    int best = 0;
    for (int v = 0; v < V; v++) {
        if (isnan(lg[v]) || lg[v] == INFINITY)
            return mattn_set_error(MATTN_ERR_NUMERIC, "logits hold a non-finite value (%g) at %d", (double)lg[v], v);
        if (lg[v] > lg[best]) best = v;
    }
    if (lg[best] == -INFINITY) return mattn_set_error(MATTN_ERR_NUMERIC, "every logit is -inf: no token to sample");
    const double temp = s->cfg.temperature, top_p = s->cfg.top_p;
    const int top_k = s->cfg.top_k;
    if (temp <= 0.0) {
        *token = best;
        return MATTN_OK;
    }
    const float *sorted = NULL;
    if ((top_k > 0 && top_k < V) || top_p < 1.0) {
        if (!(sorted = sorted_logits(s, lg, V))) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory sampling %d logits", V);
    }
    /* top-k: the k-th largest logit; every logit tied with it stays in */
    float kth = top_k > 0 && top_k < V ? sorted[top_k - 1] : -INFINITY;
    double Z = 0.0;
    for (int v = 0; v < V; v++) if (lg[v] >= kth) Z += exp((lg[v] - lg[best]) / temp);
    if (top_p < 1.0) {
        /* nucleus: the largest logits, in order, until their probability
         * reaches top_p; the logits tied with the last one stay in */
        int i = 0;
        for (double mass = 0.0; i + 1 < V && sorted[i + 1] >= kth; i++) {
            mass += exp((sorted[i] - lg[best]) / temp);
            if (mass >= top_p * Z) break;
        }
        kth = sorted[i];
        Z = 0.0;
        for (int v = 0; v < V; v++) if (lg[v] >= kth) Z += exp((lg[v] - lg[best]) / temp);
    }
    double u = mattn_rng_u01(&s->rng) * Z, acc = 0.0;
    int pick = best;
    for (int v = 0; v < V; v++) {
        if (lg[v] < kth) continue;
        acc += exp((lg[v] - lg[best]) / temp);
        pick = v;
        if (acc >= u) break;
    }
    *token = pick;
    return MATTN_OK;
}
