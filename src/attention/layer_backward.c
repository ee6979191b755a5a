/*
 * layer_backward.c — the layer's backward (training mode, or soft routing in
 * eval mode): the merge (dL/dw_k = <dL/dout, E_k>), every expert, the shared
 * projections, the routing weights (soft: alpha; hard training: the Gumbel
 * top-k) and the controller.  Gradients are allocated by the first
 * zero_grad/backward and accumulate (+=); the scratch is one arena per
 * (B, T), carved like the forward's.
 */
#include <string.h>

#include "attention/attention.h"

#define LERR(l, st, ...) mattn_set_error_h((l)->errmsg, st, __VA_ARGS__)
#define is_builtin mattn_layer_is_builtin

/* Allocate every gradient (zeroed) and refresh the parameter table. */
static mattn_status ensure_grads(mattn_layer *l) {
    if (l->has_grads) return MATTN_OK;
    const size_t D = (size_t)l->cfg.d_model;
    mattn_status st = mattn_controller_alloc_grads(&l->ctrl);
    for (int k = 0; k < l->K && st == MATTN_OK; k++) {
        mattn_expert *e = l->experts[k];
        if (!e->vt->backward)
            return LERR(l, MATTN_ERR_UNSUPPORTED, "expert %d ('%s') has no backward: the layer cannot be trained",
                        k, e->vt->name);
        if (is_builtin(e)) st = mattn_builtin_alloc_grads(e->state);
    }
    if (st == MATTN_OK && l->cfg.share_qkv) {
        l->g_w_qkv = mattn_amalloc(3 * D * D * sizeof(float));
        l->g_w_o = mattn_amalloc(D * D * sizeof(float));
        if (!l->g_w_qkv || !l->g_w_o) st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory for gradients");
        else {
            memset(l->g_w_qkv, 0, 3 * D * D * sizeof(float));
            memset(l->g_w_o, 0, D * D * sizeof(float));
        }
    }
    if (st != MATTN_OK) return LERR(l, st, "%s", mattn_last_error());
    /* the table holds copies of the tensors: rebuild it with the grad pointers */
    mattn_free(l->params);
    l->params = NULL;
    l->n_params = 0;
    st = mattn_layer_build_params(l);
    if (st != MATTN_OK) return st;
    l->has_grads = 1;
    return MATTN_OK;
}

mattn_status mattn_layer_zero_grad(mattn_layer *l) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_zero_grad: layer is NULL");
    mattn_status st = ensure_grads(l);
    if (st != MATTN_OK) return st;
    for (int i = 0; i < l->n_params; i++) {
        mattn_tensor *t = &l->params[i].t;
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        if (t->grad) memset(t->grad, 0, n * sizeof(float));
    }
    return MATTN_OK;
}

/* The backward's scratch, carved like the forward's arena. */
static size_t grad_layout(mattn_layer *l, char *base, int B, int T) {
    const int64_t N = (int64_t)B * T;
    const size_t D = (size_t)l->cfg.d_model, K = (size_t)l->K, Hc = (size_t)l->ctrl.Hc;
    mattn_carver cv = {base, 0};
    l->gw = mattn_carve(&cv, N * K * sizeof(float));
    l->gy = mattn_carve(&cv, N * D * sizeof(float));
    l->gz2 = mattn_carve(&cv, N * K * sizeof(float));
    l->gh = mattn_carve(&cv, N * Hc * sizeof(float));
    l->glogits = mattn_carve(&cv, N * K * sizeof(float));
    l->g_merged = l->cfg.share_qkv ? mattn_carve(&cv, N * D * sizeof(float)) : NULL;
    l->g_qkv = l->cfg.share_qkv ? mattn_carve(&cv, N * 3 * D * sizeof(float)) : NULL;
    for (int k = 0; k < l->K; k++) {
        mattn_expert *e = l->experts[k];
        l->gwork[k] = mattn_carve(&cv, e->vt->backward_workspace_size ? e->vt->backward_workspace_size(e->state, B, T) : 0);
    }
    return cv.off;
}

static mattn_status plan_grad(mattn_layer *l, int B, int T) {
    if (!l->g_arena || l->gB != B || l->gT != T) {
        const size_t bytes = grad_layout(l, NULL, B, T);
        char *a = mattn_amalloc(bytes ? bytes : 1);
        if (!a) return LERR(l, MATTN_ERR_NOMEM, "out of memory for the backward (B=%d, T=%d: %zu bytes)", B, T, bytes);
        mattn_afree(l->g_arena);
        l->g_arena = a;
        l->gB = B;
        l->gT = T;
    }
    grad_layout(l, l->g_arena, B, T);
    return MATTN_OK;
}

mattn_status mattn_layer_backward(mattn_layer *l, const float *x, const mattn_masks *masks, const float *gout,
                                  float g_aux, float *gx) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_backward: layer is NULL");
    if (!x || !gout) return LERR(l, MATTN_ERR_INVALID_ARG, "mattn_layer_backward: %s is NULL", !x ? "x" : "gout");
    if (!l->N) return LERR(l, MATTN_ERR_MISUSE, "mattn_layer_backward: no forward to differentiate");
    if (l->f_no_grad)
        return LERR(l, MATTN_ERR_MISUSE, "mattn_layer_backward: the last forward ran with gradients off "
                    "(mattn_layer_set_grad(l, 1) before the forward)");
    const int B = l->fB, T = l->fT, D = l->cfg.d_model, K = l->K;
    const int64_t N = l->N;
    for (int k = 0; k < K; k++)
        if (l->n_rows[k] != N)
            return LERR(l, MATTN_ERR_MISUSE, "mattn_layer_backward: the last forward ran expert %d on %lld of %lld "
                        "tokens (eval-mode hard routing executes sparsely and has no backward); use training "
                        "mode or soft routing", k, (long long)l->n_rows[k], (long long)N);
    mattn_status st = ensure_grads(l);
    if (st == MATTN_OK) st = plan_grad(l, B, T);
    if (st != MATTN_OK) return st;
    const int training = l->f_training;
    const uint64_t step = l->f_step;

    /* merge: out = sum_k w_k y_k  (shared: out = W_o sum_k w_k core_k) */
    const float *gm = gout;
    if (l->cfg.share_qkv) {
        mattn_gemm(0, 0, (int)N, D, D, 1.0f, gout, D, l->w_o, D, 0.0f, l->g_merged, D);
        mattn_gemm(1, 0, D, D, (int)N, 1.0f, gout, D, l->merged, D, 1.0f, l->g_w_o, D);
        memset(l->g_qkv, 0, (size_t)N * 3 * D * sizeof(float));
        gm = l->g_merged;
    }
    for (int k = 0; k < K; k++) {
        const float *g = l->uses_shared[k] ? gm : gout, *y = l->y[k];
        #pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float w = l->weights[n * K + k];
            double dot = 0.0;
            for (int d = 0; d < D; d++) {
                dot += (double)g[n * D + d] * y[n * D + d];
                l->gy[n * D + d] = w * g[n * D + d];
            }
            l->gw[n * K + k] = (float)dot;
        }
        mattn_expert *e = l->experts[k];
        mattn_expert_grad_call c = {
            .x = x, .qkv = l->uses_shared[k] ? l->qkv : NULL, .g_qkv = l->uses_shared[k] ? l->g_qkv : NULL,
            .B = B, .T = T, .masks = masks, .out = y, .gout = l->gy, .gx = gx, .work = l->work[k],
            .gwork = l->gwork[k], .training = training, .seed = l->cfg.seed, .step = step,
        };
        st = e->vt->backward(e->state, &c);
        if (st != MATTN_OK)
            return LERR(l, st, "expert %d ('%s') backward failed: %s", k, e->vt->name, mattn_last_error());
    }
    if (l->cfg.share_qkv) {
        mattn_gemm(1, 0, 3 * D, D, (int)N, 1.0f, l->g_qkv, 3 * D, x, D, 1.0f, l->g_w_qkv, D);
        if (gx) mattn_gemm(0, 0, (int)N, D, 3 * D, 1.0f, l->g_qkv, 3 * D, l->w_qkv, D, 1.0f, gx, D);
    }

    if (l->f_forced) return MATTN_OK; /* forced routes: the weights are constants */

    /* routing weights: alpha itself (soft), or the Gumbel top-k of the logits */
    const float *galpha = l->gw, *glogits = NULL;
    mattn_budget_backward(l, N, g_aux, l->gw);
    if (l->cfg.hard_routing && training && l->cfg.hard_train == MATTN_HARD_GUMBEL) {
        memset(l->glogits, 0, (size_t)N * K * sizeof(float));
        mattn_gumbel_topk_backward(l->gw, l->act.logits, N, K, l->cfg.hard_top_k, l->cfg.gumbel_temp, l->cfg.seed,
                                   step, l->glogits);
        galpha = NULL;
        glogits = l->glogits;
    }
    st = mattn_controller_backward(&l->ctrl, &l->cfg, &l->act, B, T, training, step, galpha, glogits, g_aux, gx,
                                   l->gz2, l->gh);
    if (st != MATTN_OK) return LERR(l, st, "%s", mattn_last_error());
    return MATTN_OK;
}
