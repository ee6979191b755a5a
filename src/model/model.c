/*
 * model.c — the Meta-Attention language model (the Python library's
 * MetaLanguageModel): token + position embeddings, dropout, n_layers
 * pre-LayerNorm blocks
 *     x += MetaAttn(LN(x));   x += Dropout(W2 Dropout(GELU(W1 LN(x) + b1)) + b2)
 * a final LayerNorm and a head tied to the token embedding.  Loss = mean
 * cross-entropy + the sum of the layers' aux losses.  Every expert is causal.
 *
 * Memory: the model's own parameters (embeddings, LayerNorms, FFNs) live in
 * one buffer, their gradients in another (allocated by the first
 * zero_grad/backward); each layer keeps its own.  Activations for a (B, T)
 * live in one arena, the backward's scratch in a second.  Parameter names
 * follow MetaLanguageModel's state_dict (tok_emb.weight, blocks.0.attn.*, ...).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "model/model.h"

#define MERR(m, st, ...) mattn_set_error_h((m)->errmsg, st, __VA_ARGS__)

// ----------------------------------------------------------------------------
// init / free / parameter table

static void own_layout(mattn_model *m, float *base) {
    const size_t D = (size_t)m->D, F = (size_t)m->F;
    mattn_carver cv = {(char *)base, 0};
#define OWN(ptr, n) MATTN_CARVE(&cv, ptr, (n) * sizeof(float))
    block_params scratch;
    OWN(m->tok, (size_t)m->V * D);
    OWN(m->pos, (size_t)m->Tmax * D);
    for (int l = 0; l < m->L; l++) {
        block_params *b = base ? &m->bp[l] : &scratch;
        OWN(b->ln1w, D);
        OWN(b->ln1b, D);
        OWN(b->ln2w, D);
        OWN(b->ln2b, D);
        OWN(b->w1, F * D);
        OWN(b->b1, F);
        OWN(b->w2, D * F);
        OWN(b->b2, D);
    }
    OWN(m->lnfw, D);
    OWN(m->lnfb, D);
#undef OWN
    m->n_own = cv.off / sizeof(float);
}

static void add(mattn_model *m, const char *name, float *data, int ndim, int64_t d0, int64_t d1, int layer, int index) {
    model_param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->t = (mattn_tensor){p->name, ndim, {d0, d1}, data, NULL};
    p->layer = layer;
    p->index = index;
}

/* Python state_dict order; own gradients at the same offsets in gown. */
static mattn_status build_params(mattn_model *m) {
    int n = 4 + 8 * m->L;
    for (int l = 0; l < m->L; l++) n += mattn_layer_n_params(m->layers[l]);
    mattn_free(m->params);
    m->n_params = 0;
    m->params = mattn_calloc((size_t)n, sizeof *m->params);
    if (!m->params) return MERR(m, MATTN_ERR_NOMEM, "out of memory for the parameter table");
    const int D = m->D, F = m->F;
    char name[160];
    add(m, "tok_emb.weight", m->tok, 2, m->V, D, -1, 0);
    add(m, "pos_emb.weight", m->pos, 2, m->Tmax, D, -1, 0);
    for (int l = 0; l < m->L; l++) {
        block_params *b = &m->bp[l];
#define NAME(s) (snprintf(name, sizeof name, "blocks.%d.%s", l, s), name)
        add(m, NAME("ln_attn.weight"), b->ln1w, 1, D, 0, -1, 0);
        add(m, NAME("ln_attn.bias"), b->ln1b, 1, D, 0, -1, 0);
        for (int i = 0; i < mattn_layer_n_params(m->layers[l]); i++) {
            mattn_tensor t;
            mattn_layer_param(m->layers[l], i, &t);
            char sub[112];
            snprintf(sub, sizeof sub, "attn.%s", t.name);
            add(m, NAME(sub), t.data, t.ndim, t.shape[0], t.ndim > 1 ? t.shape[1] : 0, l, i);
            m->params[m->n_params - 1].t.grad = t.grad;
        }
        add(m, NAME("ln_ffn.weight"), b->ln2w, 1, D, 0, -1, 0);
        add(m, NAME("ln_ffn.bias"), b->ln2b, 1, D, 0, -1, 0);
        add(m, NAME("ffn.0.weight"), b->w1, 2, F, D, -1, 0);
        add(m, NAME("ffn.0.bias"), b->b1, 1, F, 0, -1, 0);
        add(m, NAME("ffn.3.weight"), b->w2, 2, D, F, -1, 0);
        add(m, NAME("ffn.3.bias"), b->b2, 1, D, 0, -1, 0);
#undef NAME
    }
    add(m, "ln_f.weight", m->lnfw, 1, D, 0, -1, 0);
    add(m, "ln_f.bias", m->lnfb, 1, D, 0, -1, 0);
    if (m->gown)
        for (int i = 0; i < m->n_params; i++)
            if (m->params[i].layer < 0) m->params[i].t.grad = m->gown + (m->params[i].t.data - m->own);
    return MATTN_OK;
}

/* Seed of layer l's noise streams: distinct per layer, within JSON's 2^53. */
static uint64_t layer_seed(uint64_t seed, int l) {
    return mattn_mix64(seed ^ (0xA24BAED4963EE407ULL * (uint64_t)(l + 1))) & ((UINT64_C(1) << 53) - 1);
}

mattn_status mattn_model_init(const mattn_lm_config *cfg_in, mattn_model **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_init: out is NULL");
    *out = NULL;
    if (!cfg_in) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_init: cfg is NULL");
    mattn_lm_config cfg = *cfg_in;
    cfg.attn.causal = 1;
    mattn_status st = mattn_lm_config_validate(&cfg);
    if (st != MATTN_OK) return st;
    mattn_model *m = mattn_calloc(1, sizeof *m);
    if (!m) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory creating a model");
    m->cfg = cfg;
    m->L = cfg.n_layers;
    m->D = cfg.attn.d_model;
    m->V = cfg.vocab_size;
    m->F = cfg.ffn_multiplier * cfg.attn.d_model;
    m->Tmax = cfg.max_seq_len;
    m->training = 1;
    m->layers = mattn_calloc((size_t)m->L, sizeof *m->layers);
    m->stats = mattn_calloc((size_t)m->L, sizeof *m->stats);
    m->bp = mattn_calloc((size_t)m->L, sizeof *m->bp);
    own_layout(m, NULL);
    m->own = mattn_amalloc(m->n_own * sizeof(float));
    if (!m->layers || !m->stats || !m->bp || !m->own) {
        const size_t n_own = m->n_own;
        mattn_model_free(m);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for the model's parameters (%zu floats)", n_own);
    }
    own_layout(m, m->own);
    for (int l = 0; l < m->L && st == MATTN_OK; l++) {
        mattn_config lc = cfg.attn;
        lc.seed = layer_seed(cfg.attn.seed, l);
        st = mattn_layer_init(&lc, NULL, &m->layers[l]);
        if (st == MATTN_OK && cfg.position_norm) st = mattn_layer_set_position_norm(m->layers[l], cfg.max_seq_len);
    }
    if (st != MATTN_OK) {
        mattn_model_free(m);
        return st;
    }
    st = build_params(m);
    if (st != MATTN_OK) {
        mattn_set_error(st, "%s", m->errmsg);
        mattn_model_free(m);
        return st;
    }
    /* Python: every Linear/Embedding weight N(0, 0.02), biases 0, LayerNorm 1 / 0 */
    mattn_rng r;
    mattn_rng_seed(&r, mattn_stream_seed(cfg.attn.seed, 0, 1, MATTN_PURPOSE_INIT));
    for (int i = 0; i < m->n_params; i++) {
        mattn_tensor *t = &m->params[i].t;
        size_t n = (size_t)t->shape[0] * (t->ndim > 1 ? (size_t)t->shape[1] : 1);
        const char *nm = t->name;
        size_t len = strlen(nm);
        int is_ln = strstr(nm, "ln_") != NULL;
        if (t->ndim == 2) mattn_init_normal(t->data, n, 0.02, &r);
        else if (is_ln && len > 7 && !strcmp(nm + len - 7, ".weight")) for (size_t j = 0; j < n; j++) t->data[j] = 1.0f;
        else memset(t->data, 0, n * sizeof(float));
    }
    *out = m;
    return MATTN_OK;
}

void mattn_model_free(mattn_model *m) {
    if (!m) return;
    for (int l = 0; m->layers && l < m->L; l++) mattn_layer_free(m->layers[l]);
    mattn_free(m->layers);
    mattn_free(m->stats);
    mattn_free(m->bp);
    mattn_free(m->params);
    mattn_free(m->res);
    mattn_free(m->ba);
    mattn_afree(m->own);
    mattn_afree(m->gown);
    mattn_afree(m->arena);
    mattn_afree(m->g_arena);
    mattn_free(m);
}

const char *mattn_model_errmsg(const mattn_model *m) { return m ? m->errmsg : "model is NULL"; }
const mattn_lm_config *mattn_model_config(const mattn_model *m) { return m ? &m->cfg : NULL; }
void mattn_model_set_training(mattn_model *m, int training) {
    if (!m) return;
    m->training = training != 0;
    for (int l = 0; l < m->L; l++) mattn_layer_set_training(m->layers[l], m->training);
}
void mattn_model_set_grad(mattn_model *m, int enabled) {
    if (!m) return;
    for (int l = 0; l < m->L; l++) mattn_layer_set_grad(m->layers[l], enabled);
}
uint64_t mattn_model_step(const mattn_model *m) { return m ? m->step : 0; }
void mattn_model_set_step(mattn_model *m, uint64_t step) { if (m) m->step = step; }
mattn_layer *mattn_model_layer(mattn_model *m, int i) { return m && i >= 0 && i < m->L ? m->layers[i] : NULL; }
const float *mattn_model_logits(const mattn_model *m) { return m && m->aB ? m->logits : NULL; }
int mattn_model_n_params(const mattn_model *m) { return m ? m->n_params : 0; }

mattn_status mattn_model_layer_stats(const mattn_model *m, int i, mattn_stats *out) {
    if (!m || !out || i < 0 || i >= m->L)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_layer_stats: bad model, index %d or out", i);
    *out = m->stats[i];
    return MATTN_OK;
}

mattn_status mattn_model_param(mattn_model *m, int i, mattn_tensor *t) {
    if (!m || !t) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_param: %s is NULL", !m ? "model" : "t");
    if (i < 0 || i >= m->n_params)
        return MERR(m, MATTN_ERR_INVALID_ARG, "parameter index %d out of range [0, %d)", i, m->n_params);
    *t = m->params[i].t;
    return MATTN_OK;
}

int64_t mattn_model_numel(const mattn_model *m) {
    int64_t n = 0;
    for (int i = 0; m && i < m->n_params; i++)
        n += m->params[i].t.shape[0] * (m->params[i].t.ndim > 1 ? m->params[i].t.shape[1] : 1);
    return n;
}

mattn_status mattn_model_set_routing(mattn_model *m, const mattn_config *k) {
    if (!m || !k) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_set_routing: %s is NULL", !m ? "model" : "knobs");
    mattn_config c = m->cfg.attn;
    c.cost_lambda = k->cost_lambda;
    c.elbo_weight = k->elbo_weight;
    c.temperature = k->temperature;
    c.gumbel_temp = k->gumbel_temp;
    c.hard_routing = k->hard_routing;
    c.uncertainty_threshold = k->uncertainty_threshold;
    c.hard_train = k->hard_train;
    c.cost_target = k->cost_target;
    c.full_share = k->full_share;
    if (mattn_budget_active(&c) != mattn_budget_active(&m->cfg.attn))
        return MERR(m, MATTN_ERR_INVALID_ARG, "mattn_model_set_routing: a budget (cost_target, full_share, "
                    "usage_floor) cannot be switched on or off after the model was made");
    mattn_status st = mattn_config_validate(&c);
    if (st != MATTN_OK) return MERR(m, st, "%s", mattn_last_error());
    m->cfg.attn = c;
    for (int l = 0; l < m->L; l++) {
        mattn_config *lc = mattn_layer_cfg_mut(m->layers[l]);
        lc->cost_lambda = c.cost_lambda;
        lc->elbo_weight = c.elbo_weight;
        lc->temperature = c.temperature;
        lc->gumbel_temp = c.gumbel_temp;
        lc->hard_routing = c.hard_routing;
        lc->uncertainty_threshold = c.uncertainty_threshold;
        lc->hard_train = c.hard_train;
        lc->cost_target = c.cost_target;
        lc->full_share = c.full_share;
    }
    return MATTN_OK;
}

mattn_status mattn_model_update_duals(mattn_model *m) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_update_duals: model is NULL");
    for (int l = 0; l < m->L; l++) {
        mattn_status st = mattn_layer_update_duals(m->layers[l]);
        if (st != MATTN_OK) return MERR(m, st, "layer %d: %s", l, mattn_layer_errmsg(m->layers[l]));
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// forward

static mattn_status plan(mattn_model *m, int B, int T) {
    if (m->arena && m->aB == B && m->aT == T) return MATTN_OK;
    const size_t N = (size_t)B * T, D = (size_t)m->D, F = (size_t)m->F, V = (size_t)m->V, L = (size_t)m->L;
    float **res = mattn_calloc(L + 1, sizeof *res);
    block_acts *ba = mattn_calloc(L, sizeof *ba);
    if (!res || !ba) {
        mattn_free(res);
        mattn_free(ba);
        return MERR(m, MATTN_ERR_NOMEM, "out of memory planning activations");
    }
    mattn_carver cv = {NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        cv.off = 0;
#define TAKE(ptr, bytes) MATTN_CARVE(&cv, ptr, bytes)
        TAKE(m->idx, N * sizeof(int32_t));
        TAKE(m->tgt, N * sizeof(int32_t));
        for (size_t l = 0; l <= L; l++) TAKE(res[l], N * D * sizeof(float));
        for (size_t l = 0; l < L; l++) {
            block_acts *a = &ba[l];
            TAKE(a->ln1, N * D * sizeof(float));
            TAKE(a->mean1, N * sizeof(float));
            TAKE(a->rstd1, N * sizeof(float));
            TAKE(a->att, N * D * sizeof(float));
            TAKE(a->mid, N * D * sizeof(float));
            TAKE(a->ln2, N * D * sizeof(float));
            TAKE(a->mean2, N * sizeof(float));
            TAKE(a->rstd2, N * sizeof(float));
            TAKE(a->h, N * F * sizeof(float));
            TAKE(a->g, N * F * sizeof(float));
            TAKE(a->gd, N * F * sizeof(float));
            TAKE(a->f, N * D * sizeof(float));
        }
        TAKE(m->lnf, N * D * sizeof(float));
        TAKE(m->meanf, N * sizeof(float));
        TAKE(m->rstdf, N * sizeof(float));
        TAKE(m->logits, N * V * sizeof(float));
        TAKE(m->probs, N * V * sizeof(float));
#undef TAKE
        if (pass == 0) {
            cv.base = mattn_amalloc(cv.off);
            if (!cv.base) {
                mattn_free(res);
                mattn_free(ba);
                m->aB = 0;
                return MERR(m, MATTN_ERR_NOMEM, "out of memory for activations (B=%d, T=%d: %zu bytes)", B, T, cv.off);
            }
        }
    }
    mattn_afree(m->arena);
    mattn_free(m->res);
    mattn_free(m->ba);
    m->arena = cv.base;
    m->res = res;
    m->ba = ba;
    m->aB = B;
    m->aT = T;
    return MATTN_OK;
}

static uint64_t drop_key(const mattn_model *m, int layer, int slot) {
    return mattn_stream_seed(m->cfg.attn.seed, m->f_step, (uint64_t)layer * 4 + (uint64_t)slot, MATTN_PURPOSE_LM_DROPOUT);
}

/* NaN/Inf in the model's own weights (embeddings, LayerNorms, FFNs); the
 * attention layers check theirs.  O(weights) per forward or decode cache. */
mattn_status mattn_model_check_own_weights(mattn_model *m) {
    for (int i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        if (p->layer >= 0) continue;
        const size_t n = (size_t)p->t.shape[0] * (p->t.ndim > 1 ? (size_t)p->t.shape[1] : 1);
        const size_t bad = mattn_find_nonfinite(p->t.data, n);
        if (bad < n)
            return MERR(m, MATTN_ERR_NUMERIC, "weight '%s' holds a non-finite value (%g) at %zu", p->name,
                        (double)p->t.data[bad], bad);
    }
    return MATTN_OK;
}

/* Index of the first non-finite logit of rows*V, or rows*V. */
size_t mattn_model_bad_logit(const mattn_model *m, const float *logits, int64_t rows) {
    return mattn_find_nonfinite(logits, (size_t)rows * m->V);
}

mattn_status mattn_model_forward(mattn_model *m, const int32_t *idx, const int32_t *targets, int B, int T,
                                 float *loss, float *lm_loss) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_forward: model is NULL");
    if (!idx) return MERR(m, MATTN_ERR_INVALID_ARG, "mattn_model_forward: idx is NULL");
    if (B < 1 || T < 1) return MERR(m, MATTN_ERR_INVALID_ARG, "B and T must be >= 1, got B=%d T=%d", B, T);
    if (T > m->Tmax)
        return MERR(m, MATTN_ERR_INVALID_ARG, "T = %d exceeds the model's max_seq_len %d", T, m->Tmax);
    const int64_t N = (int64_t)B * T;
    if ((double)N * m->V > 4e9) return MERR(m, MATTN_ERR_INVALID_ARG, "B*T*vocab too large (B=%d T=%d)", B, T);
    for (int64_t i = 0; i < N; i++) {
        if (idx[i] < 0 || idx[i] >= m->V)
            return MERR(m, MATTN_ERR_INVALID_ARG, "idx[%lld] = %d is outside [0, %d)", (long long)i, idx[i], m->V);
        if (targets && targets[i] >= m->V)
            return MERR(m, MATTN_ERR_INVALID_ARG, "targets[%lld] = %d is outside [0, %d)", (long long)i, targets[i], m->V);
    }
    mattn_status st = mattn_model_check_own_weights(m);
    if (st != MATTN_OK) return st;
    st = plan(m, B, T);
    if (st != MATTN_OK) return st;
    const int D = m->D, F = m->F;
    const float p = m->training ? (float)m->cfg.attn.dropout : 0.0f;
    m->f_step = m->step;
    m->f_training = m->training;
    m->has_targets = 0;
    memcpy(m->idx, idx, (size_t)N * sizeof(int32_t));

    mattn_embed_forward(m->res[0], idx, m->tok, m->pos, B, T, D);
    mattn_dropout_forward(m->res[0], m->res[0], N * D, p, drop_key(m, m->L, 0));
    double aux_sum = 0.0;
    for (int l = 0; l < m->L; l++) {
        block_params *b = &m->bp[l];
        block_acts *a = &m->ba[l];
        mattn_layernorm_forward(a->ln1, a->mean1, a->rstd1, m->res[l], b->ln1w, b->ln1b, N, D);
        float aux = 0.0f;
        mattn_layer_set_step(m->layers[l], m->step);
        st = mattn_layer_forward(m->layers[l], a->ln1, B, T, NULL, a->att, &aux, &m->stats[l]);
        if (st != MATTN_OK) return MERR(m, st, "layer %d: %s", l, mattn_layer_errmsg(m->layers[l]));
        aux_sum += aux;
        for (int64_t i = 0; i < N * D; i++) a->mid[i] = m->res[l][i] + a->att[i];
        mattn_layernorm_forward(a->ln2, a->mean2, a->rstd2, a->mid, b->ln2w, b->ln2b, N, D);
        mattn_linear_forward(a->h, a->ln2, b->w1, b->b1, N, D, F);
        mattn_gelu_forward(a->g, a->h, N * F);
        mattn_dropout_forward(a->gd, a->g, N * F, p, drop_key(m, l, 1));
        mattn_linear_forward(a->f, a->gd, b->w2, b->b2, N, F, D);
        mattn_dropout_forward(m->res[l + 1], a->f, N * D, p, drop_key(m, l, 2));
        for (int64_t i = 0; i < N * D; i++) m->res[l + 1][i] += a->mid[i];
    }
    mattn_layernorm_forward(m->lnf, m->meanf, m->rstdf, m->res[m->L], m->lnfw, m->lnfb, N, D);
    mattn_linear_forward(m->logits, m->lnf, m->tok, NULL, N, D, m->V);
    if (m->training) m->step++;
    const size_t bad = targets ? 0 : mattn_model_bad_logit(m, m->logits, N); /* with targets the loss says it */
    if (!targets && bad < (size_t)N * m->V)
        return MERR(m, MATTN_ERR_NUMERIC, "logits are not finite (%g at token %lld) although the weights are: the "
                    "activations overflowed", (double)m->logits[bad], (long long)(bad / m->V));
    if (targets) {
        memcpy(m->tgt, targets, (size_t)N * sizeof(int32_t));
        double ce = mattn_crossentropy_forward(m->probs, m->logits, targets, N, m->V, &m->count);
        if (!isfinite(ce) || !isfinite(aux_sum))
            return MERR(m, MATTN_ERR_NUMERIC, "loss is not finite (cross-entropy %g, aux %g)", ce, aux_sum);
        m->has_targets = 1;
        if (loss) *loss = (float)(ce + aux_sum);
        if (lm_loss) *lm_loss = (float)ce;
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// backward

mattn_status mattn_model_zero_grad(mattn_model *m) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_zero_grad: model is NULL");
    if (!m->gown) {
        m->gown = mattn_amalloc(m->n_own * sizeof(float));
        if (!m->gown) return MERR(m, MATTN_ERR_NOMEM, "out of memory for gradients (%zu floats)", m->n_own);
    }
    memset(m->gown, 0, m->n_own * sizeof(float));
    for (int l = 0; l < m->L; l++) {
        mattn_status st = mattn_layer_zero_grad(m->layers[l]);
        if (st != MATTN_OK) return MERR(m, st, "layer %d: %s", l, mattn_layer_errmsg(m->layers[l]));
    }
    return build_params(m); /* refresh grad pointers */
}

static float *grad_of(mattn_model *m, const float *param) { return m->gown + (param - m->own); }

mattn_status mattn_model_backward(mattn_model *m) {
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_model_backward: model is NULL");
    if (!m->has_targets) return MERR(m, MATTN_ERR_MISUSE, "mattn_model_backward: the last forward had no targets");
    if (!m->gown) {
        mattn_status st = mattn_model_zero_grad(m);
        if (st != MATTN_OK) return st;
    }
    const int B = m->aB, T = m->aT, D = m->D, F = m->F, V = m->V;
    const int64_t N = (int64_t)B * T;
    if (!m->g_arena || m->gB != B || m->gT != T) {
        size_t bytes = mattn_align_up((size_t)N * D * sizeof(float)) * 3 + mattn_align_up((size_t)N * F * sizeof(float)) * 2 +
                       mattn_align_up((size_t)N * V * sizeof(float));
        char *a = mattn_amalloc(bytes);
        if (!a) return MERR(m, MATTN_ERR_NOMEM, "out of memory for the backward (%zu bytes)", bytes);
        mattn_afree(m->g_arena);
        m->g_arena = a;
        m->gB = B;
        m->gT = T;
        m->dres = (float *)a;
        a += mattn_align_up((size_t)N * D * sizeof(float));
        m->dtmp = (float *)a;
        a += mattn_align_up((size_t)N * D * sizeof(float));
        m->dln = (float *)a;
        a += mattn_align_up((size_t)N * D * sizeof(float));
        m->dF1 = (float *)a;
        a += mattn_align_up((size_t)N * F * sizeof(float));
        m->dF2 = (float *)a;
        a += mattn_align_up((size_t)N * F * sizeof(float));
        m->dlogits = (float *)a;
    }
    const float p = m->f_training ? (float)m->cfg.attn.dropout : 0.0f;
    const size_t ND = (size_t)N * D * sizeof(float), NF = (size_t)N * F * sizeof(float);

    memset(m->dlogits, 0, (size_t)N * V * sizeof(float));
    mattn_crossentropy_backward(m->dlogits, m->probs, m->tgt, N, V, m->count, 1.0f);
    memset(m->dln, 0, ND);
    mattn_linear_backward(m->dln, grad_of(m, m->tok), NULL, m->dlogits, m->lnf, m->tok, N, D, V);
    memset(m->dres, 0, ND);
    mattn_layernorm_backward(m->dres, grad_of(m, m->lnfw), grad_of(m, m->lnfb), m->dln, m->res[m->L], m->meanf,
                             m->rstdf, m->lnfw, N, D);
    for (int l = m->L - 1; l >= 0; l--) {
        block_params *b = &m->bp[l];
        block_acts *a = &m->ba[l];
        /* res[l+1] = mid + dropout(f);  f = gd W2^T + b2 */
        memset(m->dtmp, 0, ND);
        mattn_dropout_backward(m->dtmp, m->dres, N * D, p, drop_key(m, l, 2));
        memset(m->dF1, 0, NF);
        mattn_linear_backward(m->dF1, grad_of(m, b->w2), grad_of(m, b->b2), m->dtmp, a->gd, b->w2, N, F, D);
        memset(m->dF2, 0, NF);
        mattn_dropout_backward(m->dF2, m->dF1, N * F, p, drop_key(m, l, 1));
        memset(m->dF1, 0, NF);
        mattn_gelu_backward(m->dF1, a->h, m->dF2, N * F);
        memset(m->dln, 0, ND);
        mattn_linear_backward(m->dln, grad_of(m, b->w1), grad_of(m, b->b1), m->dF1, a->ln2, b->w1, N, D, F);
        mattn_layernorm_backward(m->dres, grad_of(m, b->ln2w), grad_of(m, b->ln2b), m->dln, a->mid, a->mean2,
                                 a->rstd2, b->ln2w, N, D);
        /* mid = res[l] + attn(ln1) */
        memset(m->dln, 0, ND);
        mattn_status st = mattn_layer_backward(m->layers[l], a->ln1, NULL, m->dres, 1.0f, m->dln);
        if (st != MATTN_OK) return MERR(m, st, "layer %d: %s", l, mattn_layer_errmsg(m->layers[l]));
        mattn_layernorm_backward(m->dres, grad_of(m, b->ln1w), grad_of(m, b->ln1b), m->dln, m->res[l], a->mean1,
                                 a->rstd1, b->ln1w, N, D);
    }
    memset(m->dtmp, 0, ND);
    mattn_dropout_backward(m->dtmp, m->dres, N * D, p, drop_key(m, m->L, 0));
    mattn_embed_backward(grad_of(m, m->tok), grad_of(m, m->pos), m->dtmp, m->idx, B, T, D);
    return MATTN_OK;
}
