/*
 * model_decode.c — the language model's decoding with a cache: each step
 * embeds one token per sequence, runs every block on that one position (the
 * layers' own decode caches: attention/layer_decode.c), and writes the
 * next-token logits.  Equals the full forward over the same prefix when
 * positions are causal (position_norm "max_seq_len").
 */
#include <string.h>

#include "model/model.h"

#define MERR(m, st, ...) mattn_set_error_h((m)->errmsg, st, __VA_ARGS__)

struct mattn_model_cache {
    int B, n;
    mattn_layer_cache **lc;
    float *x, *ln, *att, *h, *g, *f, *mean, *rstd;
};

void mattn_model_cache_free(mattn_model_cache *c) {
    if (!c) return;
    if (c->lc)
        for (int l = 0; c->lc[l]; l++) mattn_layer_cache_free(c->lc[l]);
    mattn_free(c->lc);
    mattn_afree(c->x);
    mattn_free(c);
}

/* One step's buffers, carved from one allocation (c->x is its base). */
static void cache_layout(mattn_model_cache *c, mattn_carver *cv, size_t D, size_t F) {
    const size_t B = (size_t)c->B;
    MATTN_CARVE(cv, c->x, B * D * sizeof(float));
    MATTN_CARVE(cv, c->ln, B * D * sizeof(float));
    MATTN_CARVE(cv, c->att, B * D * sizeof(float));
    MATTN_CARVE(cv, c->f, B * D * sizeof(float));
    MATTN_CARVE(cv, c->h, B * F * sizeof(float));
    MATTN_CARVE(cv, c->g, B * F * sizeof(float));
    MATTN_CARVE(cv, c->mean, B * sizeof(float));
    MATTN_CARVE(cv, c->rstd, B * sizeof(float));
}

mattn_status mattn_model_cache_init(mattn_model *m, int B, mattn_model_cache **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_cache_init: out is NULL");
    *out = NULL;
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_cache_init: model is NULL");
    if (!m->cfg.position_norm)
        return MERR(m, MATTN_ERR_UNSUPPORTED, "this model normalises positions by the sequence length (position_norm "
                    "\"length\", the Python library's default): a decode cache cannot reproduce it; re-run the "
                    "prefix per token instead");
    if (B < 1) return MERR(m, MATTN_ERR_INVALID_ARG, "decode batch must be >= 1, got %d", B);
    if (mattn_model_check_own_weights(m) != MATTN_OK) return MATTN_ERR_NUMERIC; /* once, not per step */
    mattn_model_cache *c = mattn_calloc(1, sizeof *c);
    if (!c) return MERR(m, MATTN_ERR_NOMEM, "out of memory for a decode cache");
    c->B = B;
    c->lc = mattn_calloc((size_t)m->L + 1, sizeof *c->lc);
    mattn_carver cv = {NULL, 0};
    cache_layout(c, &cv, (size_t)m->D, (size_t)m->F);
    cv.base = mattn_amalloc(cv.off);
    mattn_status st = c->lc && cv.base ? MATTN_OK : MATTN_ERR_NOMEM;
    if (cv.base) {
        cv.off = 0;
        cache_layout(c, &cv, (size_t)m->D, (size_t)m->F);
    }
    for (int l = 0; st == MATTN_OK && l < m->L; l++) st = mattn_layer_cache_init(m->layers[l], B, m->Tmax, &c->lc[l]);
    if (st != MATTN_OK) {
        mattn_model_cache_free(c);
        return MERR(m, st, "decode cache: %s", st == MATTN_ERR_NOMEM ? "out of memory" : mattn_last_error());
    }
    *out = c;
    return MATTN_OK;
}

void mattn_model_cache_reset(mattn_model_cache *c) {
    if (!c) return;
    c->n = 0;
    for (int l = 0; c->lc[l]; l++) mattn_layer_cache_reset(c->lc[l]);
}

int mattn_model_cache_length(const mattn_model_cache *c) { return c ? c->n : 0; }

mattn_status mattn_model_decode(mattn_model *m, mattn_model_cache *c, const int32_t *tokens, float *logits) {
    if (!m || !c || !tokens || !logits) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_decode: NULL argument");
    const int B = c->B, D = m->D, F = m->F, t = c->n;
    if (t >= m->Tmax) return MERR(m, MATTN_ERR_INVALID_ARG, "decode position %d reaches max_seq_len %d", t, m->Tmax);
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= m->V)
            return MERR(m, MATTN_ERR_INVALID_ARG, "tokens[%d] = %d is outside [0, %d)", b, tokens[b], m->V);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++)
            c->x[(size_t)b * D + i] = m->tok[(size_t)tokens[b] * D + i] + m->pos[(size_t)t * D + i];
    for (int l = 0; l < m->L; l++) {
        block_params *bp = &m->bp[l];
        mattn_layernorm_forward(c->ln, c->mean, c->rstd, c->x, bp->ln1w, bp->ln1b, B, D);
        mattn_status st = mattn_layer_decode(m->layers[l], c->lc[l], c->ln, c->att, &m->stats[l]);
        if (st != MATTN_OK) {
            if (l > 0 || st == MATTN_ERR_NUMERIC) /* earlier layers hold this position */
                for (int j = 0; j < m->L; j++) mattn_layer_cache_poison(c->lc[j]);
            return MERR(m, st, "layer %d: %s", l, mattn_layer_errmsg(m->layers[l]));
        }
        for (size_t i = 0; i < (size_t)B * D; i++) c->x[i] += c->att[i];
        mattn_layernorm_forward(c->ln, c->mean, c->rstd, c->x, bp->ln2w, bp->ln2b, B, D);
        mattn_linear_forward(c->h, c->ln, bp->w1, bp->b1, B, D, F);
        mattn_gelu_forward(c->g, c->h, (int64_t)B * F);
        mattn_linear_forward(c->f, c->g, bp->w2, bp->b2, B, F, D);
        for (size_t i = 0; i < (size_t)B * D; i++) c->x[i] += c->f[i];
    }
    mattn_layernorm_forward(c->ln, c->mean, c->rstd, c->x, m->lnfw, m->lnfb, B, D);
    mattn_linear_forward(logits, c->ln, m->tok, NULL, B, D, m->V);
    const size_t bad = mattn_model_bad_logit(m, logits, B);
    if (bad < (size_t)B * m->V) { /* the layer caches already hold this position */
        for (int l = 0; l < m->L; l++) mattn_layer_cache_poison(c->lc[l]);
        return MERR(m, MATTN_ERR_NUMERIC, "logits are not finite (%g for sequence %lld) at position %d: a weight "
                    "turned NaN/Inf after the cache was made, or the activations overflowed; reset the cache",
                    (double)logits[bad], (long long)(bad / m->V), t);
    }
    c->n++;
    return MATTN_OK;
}
