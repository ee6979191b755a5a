/*
 * distill.c — the distillation of a routed pretrained model (public API
 * mattn_distill_*, docs/design.md §5.3): the trainer's memory, one step
 * (the teacher's forward, the student's, the loss, the backward, Adam on
 * the new weights, the budget's dual ascent) and the optimiser's state
 * file.  The blocks' forward and backward are sg_model.c, the linear
 * expert's sg_linear.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "surgery/surgery.h"

#define LOSS_ROWS 64 /* positions whose logits are formed at once */
#define STATE_FORMAT "metaattn-distill"

#define DIST_ERR(d, st, ...) mattn_set_error_h((d)->errmsg, st, __VA_ARGS__)

mattn_distill_config mattn_distill_default(void) {
    return (mattn_distill_config){.full_share = -1.0, .lr = 1e-3, .map_lr = 1e-3, .map_weight = 1.0,
                                  .kl_weight = 1.0, .dual_lr = 1.0, .soft = 0, .st_temperature = 1.0};
}

const char *mattn_distill_errmsg(const mattn_distill *d) { return d ? d->errmsg : mattn_last_error(); }
int64_t mattn_distill_steps(const mattn_distill *d) { return d ? d->step : 0; }

// ----------------------------------------------------------------------------
// memory

/* The per-sequence buffers for Tmax rows, carved from one allocation. */
static void layout(mattn_distill *d, mattn_carver *cv) {
    const size_t T = (size_t)d->Tmax, D = d->D, Dq = d->Dq, Dkv = d->Dkv, F = d->F, H = d->H, f = sizeof(float);
    const size_t Hc = (size_t)d->m->routing->cfg.controller_hidden, K = MATTN_ROUTE_EXPERTS;
    for (int l = 0; l < d->L; l++) {
        sg_acts *A = &d->acts[l];
        MATTN_CARVE(cv, A->x, T * D * f);
        MATTN_CARVE(cv, A->h, T * D * f);
        MATTN_CARVE(cv, A->q, T * Dq * f);
        MATTN_CARVE(cv, A->k, T * Dkv * f);
        MATTN_CARVE(cv, A->v, T * Dkv * f);
        for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++) MATTN_CARVE(cv, A->a[e], T * Dq * f);
        MATTN_CARVE(cv, A->lse[MATTN_ROUTE_FULL], H * T * f);
        MATTN_CARVE(cv, A->lse[MATTN_ROUTE_LOCAL], H * T * f);
        MATTN_CARVE(cv, A->den, T * H * f);
        MATTN_CARVE(cv, A->w, T * K * f);
        MATTN_CARVE(cv, A->act.f, T * (D + 2) * f);
        MATTN_CARVE(cv, A->act.z1, T * Hc * f);
        MATTN_CARVE(cv, A->act.h, T * Hc * f);
        MATTN_CARVE(cv, A->act.logits, T * K * f);
        MATTN_CARVE(cv, A->act.alpha, T * K * f);
        MATTN_CARVE(cv, A->xm, T * D * f);
        MATTN_CARVE(cv, A->gate, T * F * f);
        MATTN_CARVE(cv, A->up, T * F * f);
    }
    float **td[] = {&d->xf, &d->hf, &d->teacher, &d->gx, &d->gh, &d->x0_delta, &d->g_x0};
    for (size_t i = 0; i < sizeof td / sizeof td[0]; i++) MATTN_CARVE(cv, *td[i], T * D * f);
    float **tq[] = {&d->ke, &d->ve, &d->gatt, &d->ga, &d->gq, &d->gke, &d->gve};
    for (size_t i = 0; i < sizeof tq / sizeof tq[0]; i++) MATTN_CARVE(cv, *tq[i], T * Dq * f);
    MATTN_CARVE(cv, d->gk, T * Dkv * f);
    MATTN_CARVE(cv, d->gv, T * Dkv * f);
    MATTN_CARVE(cv, d->gf, T * F * f);
    MATTN_CARVE(cv, d->gg, T * F * f);
    MATTN_CARVE(cv, d->gu, T * F * f);
    MATTN_CARVE(cv, d->galpha, 2 * T * K * f); /* dL/dw, then tempered()'s dL/dz */
    MATTN_CARVE(cv, d->gz2, T * K * f);
    MATTN_CARVE(cv, d->ghc, T * Hc * f);
    MATTN_CARVE(cv, d->route_y, (size_t)d->L * T * f);
    MATTN_CARVE(cv, d->lg, (size_t)LOSS_ROWS * d->V * f);
    const size_t nlt = (size_t)LOSS_ROWS * d->V, ncal = (size_t)d->L * T; /* the loss's rows; calibrate()'s */
    MATTN_CARVE(cv, d->lt, (nlt > ncal ? nlt : ncal) * f);
    MATTN_CARVE(cv, d->rope, T * d->dh * f);
    MATTN_CARVE(cv, d->rope_inv, T * d->dh * f);
    MATTN_CARVE(cv, d->lin_ws, sg_linear_ws_floats(d->Hkv, d->dh, d->m->routing->cfg.feature_dim) * f);
    MATTN_CARVE(cv, d->sm_ws, d->sm_ws_bytes);
}

/* The trained floats: per block the controller (w1, b1, w2, b2), then the
 * feature maps (fq, fk); i < 6 * L.  *g its gradient, *n its length, *map
 * whether it is a feature map (its own learning rate). */
static float *param(mattn_distill *d, int i, float **g, int64_t *n, int *map) {
    const int l = i / 6, k = i % 6;
    mattn_llama_route_layer *ly = &d->m->routing->layers[l];
    const int64_t Hc = ly->ctrl.Hc, nq = (int64_t)d->H * d->dh * d->m->routing->cfg.feature_dim;
    const int64_t nk = (int64_t)d->Hkv * d->dh * d->m->routing->cfg.feature_dim;
    float *gm = d->gfq + (size_t)l * (size_t)(nq + nk);
    *map = k >= 4;
    switch (k) {
    case 0: *n = Hc * (d->D + 2); *g = ly->ctrl.g_w1; return ly->ctrl.w1;
    case 1: *n = Hc; *g = ly->ctrl.g_b1; return ly->ctrl.b1;
    case 2: *n = MATTN_ROUTE_EXPERTS * Hc; *g = ly->ctrl.g_w2; return ly->ctrl.w2;
    case 3: *n = MATTN_ROUTE_EXPERTS; *g = ly->ctrl.g_b2; return ly->ctrl.b2;
    case 4: *n = nq; *g = gm; return ly->fq;
    default: *n = nk; *g = gm + nq; return ly->fk;
    }
}

/* An fp32 copy of GGUF matrix W (rows x cols), dequantised exactly. */
static float *dequant(const mattn_gguf_tensor *W, int64_t rows, int64_t cols) {
    float *y = mattn_amalloc(sizeof(float) * (size_t)(rows * cols));
    if (!y) return NULL;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) mattn_llama_row(W, r, y + (size_t)(r * cols));
    return y;
}

void mattn_distill_free(mattn_distill *d) {
    if (!d) return;
    if (d->head != d->emb) mattn_afree(d->head);
    mattn_afree(d->emb);
    for (int l = 0; d->w && l < d->L; l++) {
        float **ws[] = {&d->w[l].wq, &d->w[l].wk, &d->w[l].wv, &d->w[l].wo, &d->w[l].wg, &d->w[l].wu, &d->w[l].wd};
        for (int i = 0; i < 7; i++) mattn_afree(*ws[i]);
    }
    mattn_free(d->w);
    if (d->acts) mattn_afree(d->acts[0].x);
    mattn_free(d->acts);
    mattn_afree(d->gfq);
    mattn_afree(d->adam_m);
    mattn_afree(d->adam_v);
    mattn_free(d);
}

static mattn_status check_config(mattn_llama *m, const mattn_distill_config *c) {
    const struct { const char *name; double v, lo, hi; } f[] = {
        {"lr", c->lr, 0, 1}, {"map_lr", c->map_lr, 0, 1}, {"map_weight", c->map_weight, 0, 1e6},
        {"kl_weight", c->kl_weight, 0, 1e6}, {"dual_lr", c->dual_lr, 0, 1e6},
        {"st_temperature", c->st_temperature, 1e-3, 1e3}, {"route_weight", c->route_weight, 0, 1e6}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!(f[i].v >= f[i].lo && f[i].v <= f[i].hi))
            return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_distill_new: %s = %g is outside [%g, %g]", f[i].name,
                             f[i].v, f[i].lo, f[i].hi);
    if (!(c->full_share <= 1.0) || (c->full_share < 0.0 && c->full_share != -1.0))
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_distill_new: full_share = %g is neither in [0, 1] nor -1 "
                         "(no budget)", c->full_share);
    return MATTN_OK;
}

mattn_status mattn_distill_set_config(mattn_distill *d, const mattn_distill_config *cfg) {
    if (!d || !cfg)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_distill_set_config: %s is NULL", d ? "cfg" : "trainer");
    mattn_status st = check_config(d->m, cfg);
    if (st != MATTN_OK) return DIST_ERR(d, st, "%s", mattn_llama_errmsg(d->m));
    d->cfg = *cfg;
    return MATTN_OK;
}

static mattn_status alloc_weights(mattn_distill *d) {
    const mattn_llama *m = d->m;
    d->emb = dequant(m->tok_embd, d->V, d->D);
    d->head = m->output == m->tok_embd ? d->emb : dequant(m->output, d->V, d->D);
    d->w = mattn_calloc((size_t)d->L, sizeof *d->w);
    if (!d->emb || !d->head || !d->w) return MATTN_ERR_NOMEM;
    for (int l = 0; l < d->L; l++) {
        const mattn_llama_layer *ly = &m->layers[l];
        sg_weights *w = &d->w[l];
        if (!(w->wq = dequant(ly->wq, d->Dq, d->D)) || !(w->wk = dequant(ly->wk, d->Dkv, d->D)) ||
            !(w->wv = dequant(ly->wv, d->Dkv, d->D)) || !(w->wo = dequant(ly->wo, d->D, d->Dq)) ||
            !(w->wg = dequant(ly->w_gate, d->F, d->D)) || !(w->wu = dequant(ly->w_up, d->F, d->D)) ||
            !(w->wd = dequant(ly->w_down, d->D, d->F)))
            return MATTN_ERR_NOMEM;
    }
    return MATTN_OK;
}

mattn_status mattn_distill_new(mattn_llama *m, const mattn_distill_config *cfg, int max_tokens, mattn_distill **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_distill_new: out is NULL");
    *out = NULL;
    if (!m) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_distill_new: model is NULL");
    if (!cfg) return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_distill_new: cfg is NULL");
    if (!m->routing)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_distill_new: no routing is attached (mattn_llama_routing_new "
                         "or _load first)");
    const mattn_llama_info *hp = &m->hp;
    if (max_tokens < 2 || max_tokens > hp->context_length)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_distill_new: max_tokens = %d is outside [2, %d]", max_tokens,
                         hp->context_length);
    if (2 * m->routing->cfg.feature_dim > SG_MAX_F)
        return LLAMA_ERR(m, MATTN_ERR_INVALID_ARG, "mattn_distill_new: the routing's feature_dim %d is above %d, the "
                         "most training takes", m->routing->cfg.feature_dim, SG_MAX_F / 2);
    mattn_status st = check_config(m, cfg);
    if (st != MATTN_OK) return st;
    mattn_distill *d = mattn_calloc(1, sizeof *d);
    if (!d) return LLAMA_ERR(m, MATTN_ERR_NOMEM, "out of memory for a trainer");
    *d = (mattn_distill){.m = m, .cfg = *cfg, .L = hp->n_layers, .D = hp->d_model, .H = hp->n_heads,
                         .Hkv = hp->n_kv_heads, .dh = hp->head_dim, .F = hp->ffn_dim, .V = hp->vocab_size,
                         .Dq = hp->n_heads * hp->head_dim, .Dkv = hp->n_kv_heads * hp->head_dim, .Tmax = max_tokens,
                         .route_grad_x = 1, .serial = m->routing->serial};
    const int threads = mattn_max_threads();
    const size_t f = mattn_attn_softmax_scratch(max_tokens, d->dh, 0, threads),
                 b = mattn_attn_softmax_scratch(max_tokens, d->dh, 1, threads);
    d->sm_ws_bytes = f > b ? f : b;
    size_t arena = 0;
    st = alloc_weights(d);
    d->acts = st == MATTN_OK ? mattn_calloc((size_t)d->L, sizeof *d->acts) : NULL;
    if (d->acts) {
        mattn_carver cv = {NULL, 0};
        layout(d, &cv);
        arena = cv.off;
        cv.base = mattn_amalloc(cv.off);
        if (cv.base) {
            cv.off = 0;
            layout(d, &cv);
        }
        st = cv.base ? MATTN_OK : MATTN_ERR_NOMEM;
    } else {
        st = MATTN_ERR_NOMEM;
    }
    for (int l = 0; st == MATTN_OK && l < d->L; l++) st = mattn_controller_alloc_grads(&m->routing->layers[l].ctrl);
    if (st == MATTN_OK) {
        for (int i = 0; i < 6 * d->L; i++) {
            float *g;
            int64_t n;
            int map;
            param(d, i, &g, &n, &map);
            d->n_params += n;
        }
        const int64_t nm = (int64_t)d->L * (d->H + d->Hkv) * d->dh * m->routing->cfg.feature_dim;
        d->gfq = mattn_amalloc(sizeof(float) * (size_t)nm);
        d->adam_m = mattn_amalloc(sizeof(float) * (size_t)d->n_params);
        d->adam_v = mattn_amalloc(sizeof(float) * (size_t)d->n_params);
        st = d->gfq && d->adam_m && d->adam_v ? MATTN_OK : MATTN_ERR_NOMEM;
    }
    if (st != MATTN_OK) {
        mattn_distill_free(d);
        return LLAMA_ERR(m, MATTN_ERR_NOMEM, "out of memory for a trainer of %d tokens (%.2f GB of activations and "
                         "scratch beside %.2f GB of fp32 weights)", max_tokens, (double)arena / 1e9,
                         4e-9 * ((double)hp->vocab_size * hp->d_model + (double)hp->n_layers * hp->d_model *
                                 (2.0 * hp->n_heads * hp->head_dim + 2.0 * hp->n_kv_heads * hp->head_dim +
                                  3.0 * hp->ffn_dim)));
    }
    memset(d->adam_m, 0, sizeof(float) * (size_t)d->n_params);
    memset(d->adam_v, 0, sizeof(float) * (size_t)d->n_params);
    mattn_llama_rope_table(d->rope, 0, max_tokens, d->dh, (double)hp->rope_base);
    memcpy(d->rope_inv, d->rope, sizeof(float) * (size_t)max_tokens * d->dh);
    for (size_t i = 1; i < (size_t)max_tokens * d->dh; i += 2) d->rope_inv[i] = -d->rope_inv[i];
    memset(d->x0_delta, 0, sizeof(float) * (size_t)max_tokens * d->D);
    *out = d;
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// a step

/* RMSNorm(x) * out_norm of T rows, into y. */
static void final_norm(const mattn_distill *d, const float *x, float *y, int T) {
    mattn_llama_rmsnorm(y, x, d->m->out_norm, T, d->D, d->m->hp.rms_eps);
}

/* The forward: the teacher (KL wanted) then the student, from the tokens'
 * embeddings; mode 2 (the layer-local stage) runs the student on the
 * original stream, every expert computed. */
static mattn_status forward(mattn_distill *d, const int32_t *tok, int T, int kl) {
    const size_t D = (size_t)d->D;
    mattn_status st = MATTN_OK;
    if (kl) {
        sg_acts *A = &d->acts[0];
        for (int t = 0; t < T; t++) memcpy(A->x + t * D, d->emb + (size_t)tok[t] * D, sizeof(float) * D);
        for (int l = 0; st == MATTN_OK && l < d->L; l++) st = sg_block_forward(d, l, A, T, 1, A->x);
        if (st != MATTN_OK) return st;
        final_norm(d, A->x, d->teacher, T);
    }
    sg_acts *A0 = &d->acts[0];
    for (int t = 0; t < T; t++)
        for (size_t i = 0; i < D; i++) A0->x[t * D + i] = d->emb[(size_t)tok[t] * D + i] + d->x0_delta[t * D + i];
    for (int l = 0; st == MATTN_OK && l < d->L; l++)
        st = sg_block_forward(d, l, &d->acts[l], T, kl ? 0 : 2, l + 1 < d->L ? d->acts[l + 1].x : d->xf);
    if (st == MATTN_OK) final_norm(d, d->xf, d->hf, T);
    return st;
}

/* KL(teacher || student) of the next-token distributions, mean over the T
 * positions weighted by w (NULL: uniform); with backward, dL/d(hf) *
 * kl_weight into d->gh. */
static double kl_loss(mattn_distill *d, const float *w, int T, int backward) {
    const int V = d->V, D = d->D;
    double kl = 0.0, wsum = 0.0;
    for (int t = 0; t < T; t++) wsum += w ? w[t] : 1.0;
    for (int r0 = 0; r0 < T; r0 += LOSS_ROWS) {
        const int n = T - r0 < LOSS_ROWS ? T - r0 : LOSS_ROWS;
        mattn_gemm(0, 1, n, V, D, 1.0f, d->teacher + (size_t)r0 * D, D, d->head, D, 0.0f, d->lt, V);
        mattn_gemm(0, 1, n, V, D, 1.0f, d->hf + (size_t)r0 * D, D, d->head, D, 0.0f, d->lg, V);
        double part = 0.0;
        #pragma omp parallel for schedule(static) reduction(+ : part)
        for (int i = 0; i < n; i++) {
            float *lt = d->lt + (size_t)i * V, *ls = d->lg + (size_t)i * V;
            double mt = lt[0], ms = ls[0], zt = 0.0, zs = 0.0, s = 0.0;
            for (int v = 1; v < V; v++) mt = lt[v] > mt ? lt[v] : mt, ms = ls[v] > ms ? ls[v] : ms;
            for (int v = 0; v < V; v++) zt += exp(lt[v] - mt), zs += exp(ls[v] - ms);
            const double wt = w ? w[r0 + i] : 1.0;
            const double lzt = mt + log(zt), lzs = ms + log(zs), c = d->cfg.kl_weight * wt / wsum;
            for (int v = 0; v < V; v++) {
                const double lp = lt[v] - lzt, lq = ls[v] - lzs, p = exp(lp);
                s += p * (lp - lq);
                ls[v] = (float)(c * (exp(lq) - p)); /* dL/dlogit */
            }
            part += wt * s;
        }
        kl += part;
        if (backward) mattn_gemm(0, 0, n, D, V, 1.0f, d->lg, V, d->head, D, 0.0f, d->gh + (size_t)r0 * D, D);
    }
    return kl / wsum;
}

mattn_status sg_run(mattn_distill *d, const int32_t *tok, const float *w, int T, int backward,
                    mattn_distill_stats *st) {
    const int kl = d->cfg.kl_weight > 0.0;
    mattn_status s = forward(d, tok, T, kl);
    if (s != MATTN_OK) return DIST_ERR(d, s, "forward: %s", mattn_last_error());
    memset(st, 0, sizeof *st);
    double full = 0.0;
    for (int l = 0; l < d->L; l++) {
        st->map_mse += sg_map_mse(d, l, T) / d->L;
        for (int t = 0; t < T; t++)
            for (int e = 0; e < MATTN_ROUTE_EXPERTS; e++)
                st->share[e] += d->acts[l].w[t * MATTN_ROUTE_EXPERTS + e] / ((double)T * d->L);
    }
    full = st->share[MATTN_ROUTE_FULL];
    const double target = d->cfg.full_share, excess = target >= 0.0 ? full - target : 0.0;
    st->kl = kl ? kl_loss(d, w, T, backward) : 0.0;
    st->dual = d->dual;
    if (kl && d->cfg.route_weight > 0.0) sg_route_labels(d, T);
    st->route = kl && d->cfg.route_weight > 0.0 ? sg_route_target(d, -1, T, NULL) : 0.0;
    st->loss = d->cfg.kl_weight * st->kl + d->cfg.map_weight * st->map_mse + d->dual * excess +
               d->cfg.route_weight * st->route;
    if (!isfinite(st->loss))
        return DIST_ERR(d, MATTN_ERR_NUMERIC, "the loss is not finite (KL %g, map %g)", st->kl, st->map_mse);
    if (!backward) return MATTN_OK;
    /* zero the gradients */
    for (int i = 0; i < 6 * d->L; i++) {
        float *g;
        int64_t n;
        int map;
        param(d, i, &g, &n, &map);
        memset(g, 0, sizeof(float) * (size_t)n);
    }
    const int64_t nm = (int64_t)(d->H + d->Hkv) * d->dh * d->m->routing->cfg.feature_dim;
    const double g_share = target >= 0.0 ? d->dual / ((double)T * d->L) : 0.0, map_w = d->cfg.map_weight / d->L;
    memset(d->gx, 0, sizeof(float) * (size_t)T * d->D);
    if (kl) sg_rmsnorm_backward(d->gx, d->gh, d->xf, d->m->out_norm, T, d->D, d->m->hp.rms_eps);
    for (int l = d->L - 1; l >= 0; l--) {
        float *gfq = d->gfq + (size_t)l * (size_t)nm, *gfk = gfq + (size_t)d->H * d->dh * d->m->routing->cfg.feature_dim;
        s = kl ? sg_block_backward(d, l, T, d->gx, g_share, map_w, gfq, gfk) : sg_map_backward(d, l, T, map_w, gfq, gfk);
        if (s != MATTN_OK) return DIST_ERR(d, s, "backward, block %d: %s", l, mattn_last_error());
    }
    memcpy(d->g_x0, d->gx, sizeof(float) * (size_t)T * d->D);
    return MATTN_OK;
}

static mattn_status check_tokens(mattn_distill *d, const int32_t *tok, const float *w, int n,
                                 const mattn_distill_stats *st, const char *fn) {
    if (!d->m->routing || d->m->routing->serial != d->serial)
        return DIST_ERR(d, MATTN_ERR_INVALID_ARG, "%s: the model's routing was replaced, fixed or dropped since the "
                        "trainer was made: make a new trainer", fn);
    if (!tok || !st) return DIST_ERR(d, MATTN_ERR_INVALID_ARG, "%s: %s is NULL", fn, tok ? "stats" : "tokens");
    if (n < 2 || n > d->Tmax)
        return DIST_ERR(d, MATTN_ERR_INVALID_ARG, "%s: n = %d tokens is outside [2, %d] (max_tokens)", fn, n, d->Tmax);
    for (int i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= d->V)
            return DIST_ERR(d, MATTN_ERR_INVALID_ARG, "%s: tokens[%d] = %d is outside [0, %d)", fn, i, tok[i], d->V);
    double sum = 0.0;
    for (int i = 0; w && i < n; i++) {
        if (!(w[i] >= 0.0f && w[i] <= 1e6f))
            return DIST_ERR(d, MATTN_ERR_INVALID_ARG, "%s: weights[%d] = %g is outside [0, 1e6]", fn, i, (double)w[i]);
        sum += w[i];
    }
    if (w && !(sum > 0.0)) return DIST_ERR(d, MATTN_ERR_INVALID_ARG, "%s: the weights are all 0", fn);
    return MATTN_OK;
}

mattn_status mattn_distill_eval(mattn_distill *d, const int32_t *tokens, const float *weights, int n,
                               mattn_distill_stats *st) {
    if (!d) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_distill_eval: trainer is NULL");
    mattn_status s = check_tokens(d, tokens, weights, n, st, "mattn_distill_eval");
    return s != MATTN_OK ? s : sg_run(d, tokens, weights, n, 0, st);
}

static int cmp_desc(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Shift the full bias of every controller by -tau, tau between the k-th and
 * (k+1)-th largest margin z_full - max(z_linear, z_local) of the step's
 * tokens in the controlled blocks, k the full tokens the budget leaves them
 * beside the fixed blocks': the step's routes would have had the budget's
 * share of full.  The margins are the updated controllers' on the step's
 * block inputs (the controllers run again: their activations are done with). */
static void calibrate(mattn_distill *d, int T) {
    const mattn_llama_routing *r = d->m->routing;
    float *mg = d->lt; /* L * T floats of scratch */
    int64_t n = 0, fixed_full = 0;
    for (int l = 0; l < d->L; l++) {
        sg_acts *A = &d->acts[l];
        double aux;
        if (!r->layers[l].fixed &&
            mattn_controller_forward(&r->layers[l].ctrl, &r->ccfg, &A->act, A->h, 1, T, 1, (uint64_t)d->step, &aux) !=
                MATTN_OK)
            return; /* non-finite logits: the next step reports them */
        for (int t = 0; t < T; t++) {
            if (r->layers[l].fixed) {
                fixed_full += A->w[t * MATTN_ROUTE_EXPERTS + MATTN_ROUTE_FULL] != 0.0f;
                continue;
            }
            const float *z = A->act.logits + (size_t)t * MATTN_ROUTE_EXPERTS;
            const int mask = r->cfg.experts ? r->cfg.experts : 7, lin = mask >> 1 & 1, loc = mask >> 2 & 1;
            const float other = lin && loc ? (z[1] > z[2] ? z[1] : z[2]) : lin ? z[1] : z[2];
            mg[n++] = z[MATTN_ROUTE_FULL] - other;
        }
    }
    if (n == 0) return;
    qsort(mg, (size_t)n, sizeof *mg, cmp_desc);
    int64_t k = (int64_t)llround(d->cfg.full_share * (double)d->L * T) - fixed_full;
    const float tau = k <= 0 ? mg[0] + 1e-3f : k >= n ? mg[n - 1] - 1e-3f : 0.5f * (mg[k - 1] + mg[k]);
    for (int l = 0; l < d->L; l++)
        if (!r->layers[l].fixed) r->layers[l].ctrl.b2[MATTN_ROUTE_FULL] -= tau;
}

#define ADAM_B1 0.9
#define ADAM_B2 0.999
#define ADAM_EPS 1e-8
#define GRAD_CLIP 1.0

mattn_status mattn_distill_step(mattn_distill *d, const int32_t *tokens, const float *weights, int n,
                               mattn_distill_stats *st) {
    if (!d) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_distill_step: trainer is NULL");
    mattn_status s = check_tokens(d, tokens, weights, n, st, "mattn_distill_step");
    if (s == MATTN_OK) s = sg_run(d, tokens, weights, n, 1, st);
    if (s != MATTN_OK) return s;
    double ss = 0.0;
    for (int i = 0; i < 6 * d->L; i++) {
        float *g;
        int64_t k;
        int map;
        param(d, i, &g, &k, &map);
        for (int64_t j = 0; j < k; j++) ss += (double)g[j] * g[j];
    }
    st->grad_norm = sqrt(ss);
    if (!isfinite(st->grad_norm))
        return DIST_ERR(d, MATTN_ERR_NUMERIC, "step %lld: the gradient is not finite; nothing was updated",
                        (long long)d->step);
    const double clip = st->grad_norm > GRAD_CLIP ? GRAD_CLIP / st->grad_norm : 1.0;
    d->step++;
    const double c1 = 1.0 - pow(ADAM_B1, (double)d->step), c2 = 1.0 - pow(ADAM_B2, (double)d->step);
    int64_t off = 0;
    for (int i = 0; i < 6 * d->L; i++) {
        float *g;
        int64_t k;
        int map;
        float *w = param(d, i, &g, &k, &map);
        const double lr = map ? d->cfg.map_lr : d->cfg.lr;
        float *m1 = d->adam_m + off, *m2 = d->adam_v + off;
        for (int64_t j = 0; j < k; j++) {
            const double gj = g[j] * clip;
            m1[j] = (float)(ADAM_B1 * m1[j] + (1.0 - ADAM_B1) * gj);
            m2[j] = (float)(ADAM_B2 * m2[j] + (1.0 - ADAM_B2) * gj * gj);
            w[j] -= (float)(lr * (m1[j] / c1) / (sqrt(m2[j] / c2) + ADAM_EPS));
        }
        off += k;
    }
    const int mask = d->m->routing->cfg.experts;
    if (d->cfg.calibrate && d->cfg.full_share >= 0.0 && d->cfg.kl_weight > 0.0 && !d->cfg.soft &&
        (!mask || ((mask & 1) && (mask & 6))))
        calibrate(d, n);
    if (d->cfg.full_share >= 0.0 && d->cfg.kl_weight > 0.0) { /* the layer-local stage routes nothing */
        d->dual += d->cfg.dual_lr * (st->share[MATTN_ROUTE_FULL] - d->cfg.full_share);
        if (d->dual < 0.0) d->dual = 0.0;
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// the optimiser's state

mattn_status mattn_distill_save_state(mattn_distill *d, const char *path) {
    if (!d || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_distill_save_state: %s is NULL", d ? "path" : "trainer");
    const int64_t np[1] = {d->n_params}, one[1] = {1};
    const int64_t step = d->step;
    const mattn_st_entry e[] = {{"adam.m", MATTN_ST_F32, 1, np, d->adam_m}, {"adam.v", MATTN_ST_F32, 1, np, d->adam_v},
                                {"step", MATTN_ST_I64, 1, one, &step}, {"dual", MATTN_ST_F64, 1, one, &d->dual}};
    const char *meta[] = {"format", STATE_FORMAT};
    char err[MATTN_ERRMSG_LEN];
    mattn_status st = mattn_st_write(path, e, 4, meta, 1, err, sizeof err);
    return st == MATTN_OK ? st : DIST_ERR(d, st, "%s", err);
}

mattn_status mattn_distill_load_state(mattn_distill *d, const char *path) {
    if (!d || !path)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_distill_load_state: %s is NULL", d ? "path" : "trainer");
    char err[MATTN_ERRMSG_LEN];
    mattn_st_file *f = NULL;
    mattn_status st = mattn_st_open(path, &f, err, sizeof err);
    if (st != MATTN_OK) return DIST_ERR(d, st, "%s", err);
    const char *fmt = mattn_st_meta(f, "format");
    const mattn_st_tensor *m1 = mattn_st_find(f, "adam.m"), *m2 = mattn_st_find(f, "adam.v");
    const mattn_st_tensor *ts = mattn_st_find(f, "step"), *td = mattn_st_find(f, "dual");
    if (!fmt || strcmp(fmt, STATE_FORMAT) != 0)
        st = DIST_ERR(d, MATTN_ERR_FORMAT, "%s: not a trainer state (format '%s')", path, fmt ? fmt : "(missing)");
    else if (!m1 || !m2 || !ts || !td || m1->dtype != MATTN_ST_F32 || m2->dtype != MATTN_ST_F32 ||
             ts->dtype != MATTN_ST_I64 || td->dtype != MATTN_ST_F64 || ts->numel != 1 || td->numel != 1)
        st = DIST_ERR(d, MATTN_ERR_FORMAT, "%s: adam.m, adam.v (F32), step (I64) and dual (F64) are required", path);
    else if (m1->numel != d->n_params || m2->numel != d->n_params)
        st = DIST_ERR(d, MATTN_ERR_INVALID_ARG, "%s: holds %lld moments, this trainer's routing has %lld parameters",
                      path, (long long)m1->numel, (long long)d->n_params);
    if (st == MATTN_OK) {
        int64_t step;
        double dual;
        memcpy(&step, ts->data, sizeof step);
        memcpy(&dual, td->data, sizeof dual);
        if (step < 0 || !(dual >= 0.0) || !isfinite(dual)) {
            st = DIST_ERR(d, MATTN_ERR_FORMAT, "%s: step %lld / dual %g out of range", path, (long long)step, dual);
        } else {
            mattn_st_to_f32(m1, d->adam_m);
            mattn_st_to_f32(m2, d->adam_v);
            d->step = step;
            d->dual = dual;
        }
    }
    mattn_st_close(f);
    return st;
}
