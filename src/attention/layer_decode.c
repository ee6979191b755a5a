/*
 * decode.c — generation with a decode cache.  Per layer and built-in expert:
 *   full    K and V of every position so far       (B, capacity, D)
 *   local   a ring of the last window+1 positions   (B, window+1, D)
 *   linear  the running state S = sum phi(k) v^T, z = sum phi(k)   (B, H, dh^2 + dh)
 * Each new token is routed on its own (eval mode; hard routing executes only
 * the chosen experts' queries, cores and output projections), and every
 * expert's cache takes the token's keys/values whatever the routing, so a
 * later token may pick any expert.  With share_qkv the projections run once.
 * Nothing is allocated per token.  The model's step embeds the token, runs
 * the blocks on one position and returns the logits; with causal positions
 * (position_norm "max_seq_len") the result equals the full forward over the
 * same prefix (tests/test_decode.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"

typedef struct expert_cache {
    float *K, *V;   /* full: (B, cap, D); local: ring (B, ring, D) */
    float *S;       /* linear: (B, H, dh*dh + dh), z after S */
    int ring;       /* local: ring length (window + 1); 0: flat */
} expert_cache;

struct mattn_layer_cache {
    int B, cap, n;
    int poisoned;                    /* a step wrote non-finite state: reset first */
    expert_cache e[MATTN_MAX_EXPERTS];
    float *qkv, *att, *y, *merged;   /* scratch: (B,3D), (B,D), (B,D), (B,D) */
};

void mattn_layer_cache_free(mattn_layer_cache *c) {
    if (!c) return;
    for (int k = 0; k < MATTN_MAX_EXPERTS; k++) {
        mattn_afree(c->e[k].K);
        mattn_afree(c->e[k].V);
        mattn_afree(c->e[k].S);
    }
    mattn_afree(c->qkv);
    mattn_afree(c->att);
    mattn_afree(c->y);
    mattn_afree(c->merged);
    mattn_free(c);
}

mattn_status mattn_layer_cache_init(mattn_layer *l, int B, int capacity, mattn_layer_cache **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_cache_init: out is NULL");
    *out = NULL;
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_cache_init: layer is NULL");
    if (B < 1 || capacity < 1)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "decode cache needs B >= 1 and capacity >= 1, got %d, %d", B, capacity);
    if (!l->cfg.causal)
        return mattn_set_error(MATTN_ERR_UNSUPPORTED, "decoding needs causal experts (config causal = false)");
    /* the weights are checked here, once, not per step (as every forward
     * does): a step's cost is O(weights) itself */
    if (mattn_layer_check_weights(l) != MATTN_OK) return MATTN_ERR_NUMERIC;
    mattn_layer_cache *c = mattn_calloc(1, sizeof *c);
    if (!c) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for a decode cache");
    c->B = B;
    c->cap = capacity;
    const size_t D = (size_t)l->cfg.d_model;
    int bad = 0;
    for (int k = 0; k < l->K; k++) {
        mattn_expert *e = l->experts[k];
        if (!mattn_layer_is_builtin(e)) {
            mattn_layer_cache_free(c);
            return mattn_set_error(MATTN_ERR_UNSUPPORTED, "expert %d ('%s') has no decode step", k, e->vt->name);
        }
        const mattn_builtin *b = e->state;
        expert_cache *ec = &c->e[k];
        if (b->core == MATTN_CORE_LINEAR) {
            ec->S = mattn_amalloc((size_t)B * b->H * ((size_t)b->dh * b->dh + b->dh) * sizeof(float));
            bad |= !ec->S;
        } else {
            const size_t rows = b->window >= 0 && b->window + 1 < capacity ? (size_t)b->window + 1 : (size_t)capacity;
            ec->ring = b->window >= 0 ? (int)rows : 0;
            ec->K = mattn_amalloc((size_t)B * rows * D * sizeof(float));
            ec->V = mattn_amalloc((size_t)B * rows * D * sizeof(float));
            bad |= !ec->K || !ec->V;
        }
    }
    c->qkv = mattn_amalloc((size_t)B * 3 * D * sizeof(float));
    c->att = mattn_amalloc((size_t)B * D * sizeof(float));
    c->y = mattn_amalloc((size_t)B * D * sizeof(float));
    c->merged = mattn_amalloc((size_t)B * D * sizeof(float));
    if (bad || !c->qkv || !c->att || !c->y || !c->merged) {
        mattn_layer_cache_free(c);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for a decode cache (B=%d, capacity=%d)", B, capacity);
    }
    mattn_layer_cache_reset(c);
    *out = c;
    return MATTN_OK;
}

/* The linear state is zeroed by the step at position 0; K/V rows are
 * written before they are read. */
void mattn_layer_cache_reset(mattn_layer_cache *c) {
    if (c) c->n = c->poisoned = 0;
}

void mattn_layer_cache_poison(mattn_layer_cache *c) {
    if (c) c->poisoned = 1;
}

int mattn_layer_cache_length(const mattn_layer_cache *c) { return c ? c->n : 0; }

static mattn_status check_step(mattn_layer *l, const mattn_layer_cache *c, const float *x) {
    if (c->poisoned)
        return mattn_set_error_h(l->errmsg, MATTN_ERR_MISUSE, "the decode cache holds the non-finite state of a failed "
                                 "step: reset the cache first");
    if (c->n >= c->cap)
        return mattn_set_error_h(l->errmsg, MATTN_ERR_INVALID_ARG, "decode cache is full (%d positions)", c->cap);
    if (l->ctrl.pos_len > 0 && c->n >= l->ctrl.pos_len)
        return mattn_set_error_h(l->errmsg, MATTN_ERR_INVALID_ARG, "position %d exceeds the layer's position length %d",
                                 c->n, l->ctrl.pos_len);
    if (l->ctrl.pos_len <= 0)
        return mattn_set_error_h(l->errmsg, MATTN_ERR_UNSUPPORTED,
                                 "decoding needs a fixed position length (mattn_layer_set_position_norm): with "
                                 "pos_t = t/(T-1) every token's routing changes as the sequence grows");
    const int B = c->B, D = l->cfg.d_model;
    for (int i = 0; i < B * D; i++)
        if (!isfinite(x[i]))
            return mattn_set_error_h(l->errmsg, MATTN_ERR_NUMERIC, "x holds a non-finite value (%g) at sequence %d, "
                                     "feature %d", (double)x[i], i / D, i % D);
    if (l->forced && c->n >= l->n_forced)
        return mattn_set_error_h(l->errmsg, MATTN_ERR_INVALID_ARG, "forced routes cover %d positions, decoding position %d",
                                 l->n_forced, c->n);
    return MATTN_OK;
}

/* Expert k's part of a step: its keys/values (and queries if it runs for
 * any sequence) unless shared, every sequence's token into its cache, its
 * core for the routed sequences, merged into out (or c->merged, shared).
 * Returns its FLOPs. */
static double expert_step(mattn_layer *l, mattn_layer_cache *c, int k, const float *x, float *out) {
    const int B = c->B, D = l->cfg.d_model, K = l->K, t = c->n;
    const mattn_builtin *e = l->experts[k]->state;
    expert_cache *ec = &c->e[k];
    const int H = e->H, dh = e->dh;
    double fl = 0.0;
    int64_t nrun = 0;
    for (int b = 0; b < B; b++) nrun += l->exec[b * K + k];
    l->n_rows[k] = nrun;
    if (!e->share) { /* this expert's q (only if it runs), k, v */
        const int off = nrun ? 0 : D, rows = nrun ? 3 * D : 2 * D;
        mattn_gemm(0, 1, B, rows, D, 1.0f, x, D, e->w_qkv + (size_t)off * D, D, 0.0f, c->qkv + off, 3 * D);
        fl += 2.0 * B * rows * D;
    }
    /* every token enters every cache */
    for (int b = 0; b < B; b++) {
        const float *kt = c->qkv + (size_t)b * 3 * D + D, *vt = kt + D;
        if (ec->S) {
            float *S = ec->S + (size_t)b * H * ((size_t)dh * dh + dh);
            if (t == 0) memset(S, 0, (size_t)H * ((size_t)dh * dh + dh) * sizeof(float));
            fl += mattn_attn_linear_decode_update(S, kt, vt, H, dh);
        } else {
            const int rows = ec->ring ? ec->ring : c->cap, slot = ec->ring ? t % ec->ring : t;
            memcpy(ec->K + ((size_t)b * rows + slot) * D, kt, (size_t)D * sizeof(float));
            memcpy(ec->V + ((size_t)b * rows + slot) * D, vt, (size_t)D * sizeof(float));
        }
    }
    /* queries of the routed tokens */
    for (int b = 0; nrun && b < B; b++) {
        if (!l->exec[b * K + k]) continue;
        const float *q = c->qkv + (size_t)b * 3 * D;
        float *att = c->att + (size_t)b * D;
        if (ec->S) {
            const float *S = ec->S + (size_t)b * H * ((size_t)dh * dh + dh);
            fl += mattn_attn_linear_decode_query(S, q, att, H, dh);
        } else {
            const int rows = ec->ring ? ec->ring : c->cap;
            const int lo = e->window >= 0 && t - e->window > 0 ? t - e->window : 0;
            fl += mattn_attn_softmax_decode(q, ec->K + (size_t)b * rows * D, ec->V + (size_t)b * rows * D, D, H, dh,
                                            lo, t, ec->ring, att);
        }
        const float w = l->weights[b * K + k];
        if (e->share) {
            mattn_axpy(c->merged + (size_t)b * D, w, att, D);
        } else {
            mattn_gemm(0, 1, 1, D, D, 1.0f, att, D, e->w_o, D, 0.0f, c->y + (size_t)b * D, D);
            mattn_axpy(out + (size_t)b * D, w, c->y + (size_t)b * D, D);
            fl += 2.0 * D * D;
        }
    }
    return fl;
}

mattn_status mattn_layer_decode(mattn_layer *l, mattn_layer_cache *c, const float *x, float *out, mattn_stats *stats) {
    if (!l || !c || !x || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_decode: NULL argument");
    mattn_status st = check_step(l, c, x);
    if (st != MATTN_OK) return st;
    const double t_start = mattn_now();
    const int B = c->B, D = l->cfg.d_model, K = l->K, t = c->n;
    st = mattn_layer_plan(l, B, 1);
    if (st != MATTN_OK) return st;
    double aux;
    l->ctrl.pos_offset = t;
    st = mattn_controller_forward(&l->ctrl, &l->cfg, &l->act, x, B, 1, 0, 0, &aux);
    l->ctrl.pos_offset = 0;
    if (st != MATTN_OK) return mattn_set_error_h(l->errmsg, st, "%s", mattn_last_error());
    const int training = l->training;
    l->training = 0; /* decoding is inference: eval-mode routing */
    mattn_layer_route(l, B, 1, t);
    l->training = training;
    l->N = B;

    double fl[MATTN_MAX_EXPERTS] = {0}, f_shared = 0.0;
    if (l->cfg.share_qkv) {
        mattn_gemm(0, 1, B, 3 * D, D, 1.0f, x, D, l->w_qkv, D, 0.0f, c->qkv, 3 * D);
        f_shared += 2.0 * B * 3 * D * D;
        memset(c->merged, 0, (size_t)B * D * sizeof(float));
    }
    memset(out, 0, (size_t)B * D * sizeof(float));
    for (int k = 0; k < K; k++) fl[k] = expert_step(l, c, k, x, out);
    if (l->cfg.share_qkv) {
        mattn_gemm(0, 1, B, D, D, 1.0f, c->merged, D, l->w_o, D, 0.0f, out, D);
        f_shared += 2.0 * B * D * D;
    }
    /* x was finite: a non-finite output means a weight turned NaN/Inf after
     * the cache was made, or the activations overflowed.  Every cache already
     * holds this position: the cache is unusable until reset. */
    for (int i = 0; i < B * D; i++)
        if (!(out[i] - out[i] == 0.0f)) {
            c->poisoned = 1;
            return mattn_set_error_h(l->errmsg, MATTN_ERR_NUMERIC, "output is not finite (%g at sequence %d, feature "
                                     "%d) at position %d although x is: a weight holds NaN/Inf or the activations "
                                     "overflowed; reset the cache", (double)out[i], i / D, i % D, t);
        }
    c->n++;
    if (stats) {
        mattn_layer_fill_stats(l, B, stats);
        memcpy(stats->flops, fl, sizeof fl);
        stats->flops_shared = f_shared;
        stats->flops_controller = mattn_controller_flops(&l->ctrl, B);
        stats->flops_total = f_shared + stats->flops_controller;
        for (int k = 0; k < K; k++) stats->flops_total += fl[k];
        stats->seconds = mattn_now() - t_start;
    }
    return MATTN_OK;
}
