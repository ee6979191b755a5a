/*
 * layer.c — the Meta-Attention layer: controller + experts + merge.
 *
 *   soft:            out_t = sum_k alpha_tk E_k(x)_t, every expert on every token
 *   hard, training:  top-k Gumbel-softmax weights on the logits (every expert
 *                    still runs, as in the Python library)
 *   hard, eval:      each token runs only its top-k experts (Bayesian: only the
 *                    tokens with U_t < eta; the others merge softly).  Experts
 *                    run SPARSELY: queries, core and output projection only for
 *                    their tokens; keys/values for the tokens those can see.
 *
 * With share_qkv the built-in experts share one W_qkv / W_o: Q/K/V are
 * projected once (for the rows someone needs), the experts return their core
 * outputs, and W_o is applied once to the merged core output.
 *
 * Memory: parameters live in the controller/experts; every per-forward buffer
 * (controller activations, merge weights, row lists, expert outputs and expert
 * workspaces) is carved from ONE arena sized for (B, T) on first use and
 * re-planned when B*T grows.  Also here: the parameter table under the
 * Python library's state_dict names.  Routing is route.c, RoutingStats
 * stats.c, the backward layer_backward.c, decoding layer_decode.c and the
 * weights' I/O layer_io.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"

#define LERR(l, st, ...) mattn_set_error_h((l)->errmsg, st, __VA_ARGS__)

// ----------------------------------------------------------------------------
// init / free

int mattn_layer_is_builtin(const mattn_expert *e) { return e->vt->forward == mattn_builtin_forward; }
#define is_builtin mattn_layer_is_builtin

static mattn_status add_param(mattn_layer *l, const char *prefix, mattn_tensor t) {
    layer_param *p = &l->params[l->n_params++];
    snprintf(p->name, sizeof p->name, "%s%s", prefix, t.name);
    p->t = t;
    p->t.name = p->name;
    return MATTN_OK;
}

mattn_status mattn_layer_build_params(mattn_layer *l) {
    int n = 4 + (l->cfg.share_qkv ? 2 : 0);
    for (int k = 0; k < l->K; k++)
        if (l->experts[k]->vt->n_params) n += l->experts[k]->vt->n_params(l->experts[k]->state);
    l->params = mattn_calloc((size_t)n, sizeof *l->params);
    if (!l->params) return LERR(l, MATTN_ERR_NOMEM, "out of memory for the parameter table");
    const int D = l->cfg.d_model, Hc = l->ctrl.Hc;
    for (int k = 0; k < l->K; k++) {
        mattn_expert *e = l->experts[k];
        int np = e->vt->n_params ? e->vt->n_params(e->state) : 0;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "experts.%d.", k);
        for (int i = 0; i < np; i++) {
            mattn_tensor t;
            mattn_status st = e->vt->param(e->state, i, &t);
            if (st != MATTN_OK) return LERR(l, st, "expert %d parameter %d: %s", k, i, mattn_last_error());
            add_param(l, prefix, t);
        }
    }
    if (l->cfg.share_qkv) {
        add_param(l, "", (mattn_tensor){"qkv.weight", 2, {3 * D, D}, l->w_qkv, l->g_w_qkv});
        add_param(l, "", (mattn_tensor){"out_proj.weight", 2, {D, D}, l->w_o, l->g_w_o});
    }
    add_param(l, "", (mattn_tensor){"controller.net.0.weight", 2, {Hc, D + 2}, l->ctrl.w1, l->ctrl.g_w1});
    add_param(l, "", (mattn_tensor){"controller.net.0.bias", 1, {Hc}, l->ctrl.b1, l->ctrl.g_b1});
    add_param(l, "", (mattn_tensor){"controller.net.3.weight", 2, {l->K, Hc}, l->ctrl.w2, l->ctrl.g_w2});
    add_param(l, "", (mattn_tensor){"controller.net.3.bias", 1, {l->K}, l->ctrl.b2, l->ctrl.g_b2});
    return MATTN_OK;
}

mattn_status mattn_layer_init(const mattn_config *cfg, mattn_expert **experts, mattn_layer **out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_init: out is NULL");
    *out = NULL;
    if (!cfg) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_init: cfg is NULL");
    mattn_status st = mattn_config_validate(cfg);
    if (st != MATTN_OK) return st;
    if (!experts && !cfg->experts[0][0] && cfg->n_experts > 3)
        return mattn_set_error(MATTN_ERR_INVALID_ARG,
                               "the built-in experts are 3 (full, linear, local) but expert_costs "
                               "holds %d costs: pass your experts, name them (experts) or give 1 to 3 costs",
                               cfg->n_experts);
    if (experts)
        for (int k = 0; k < cfg->n_experts; k++)
            if (!experts[k])
                return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_init: experts[%d] is NULL", k);

    mattn_layer *l = mattn_calloc(1, sizeof *l);
    if (!l) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory creating a layer");
    l->cfg = *cfg;
    l->K = cfg->n_experts;
    l->training = 1;
    const int D = cfg->d_model;

    /* Weights come from one stream in a fixed order: experts, shared, controller. */
    mattn_rng r;
    mattn_rng_seed(&r, mattn_stream_seed(cfg->seed, 0, 0, MATTN_PURPOSE_INIT));
    static const char *builtin_names[3] = {"full", "linear", "local"};
    int built = 0;
    for (int k = 0; k < l->K && st == MATTN_OK; k++) {
        if (experts) {
            l->experts[k] = experts[k];
        } else {
            st = mattn_expert_build(cfg->experts[0][0] ? cfg->experts[k] : builtin_names[k], cfg, &l->experts[k]);
            if (st != MATTN_OK) break;
            built = k + 1;
        }
        mattn_expert *e = l->experts[k];
        if (is_builtin(e)) {
            mattn_builtin *b = e->state;
            if (b->D != D || b->H != cfg->n_heads || b->share != cfg->share_qkv ||
                b->causal != cfg->causal) {
                st = mattn_set_error(MATTN_ERR_INVALID_ARG,
                                     "experts[%d] ('%s') was built for another config (d_model, "
                                     "n_heads, causal or share_qkv differ)", k, e->vt->name);
                break;
            }
            b->expert_index = k;
            if (b->w_qkv) {
                mattn_init_uniform(b->w_qkv, (size_t)3 * D * D, D, &r);
                mattn_init_uniform(b->w_o, (size_t)D * D, D, &r);
            }
        }
        l->uses_shared[k] = cfg->share_qkv && e->vt->shared_qkv;
    }
    if (st == MATTN_OK && cfg->share_qkv) {
        l->w_qkv = mattn_amalloc((size_t)3 * D * D * sizeof(float));
        l->w_o = mattn_amalloc((size_t)D * D * sizeof(float));
        if (!l->w_qkv || !l->w_o)
            st = mattn_set_error(MATTN_ERR_NOMEM, "out of memory for shared projections (D=%d)", D);
        else {
            mattn_init_uniform(l->w_qkv, (size_t)3 * D * D, D, &r);
            mattn_init_uniform(l->w_o, (size_t)D * D, D, &r);
        }
    }
    if (st == MATTN_OK) st = mattn_controller_init(&l->ctrl, cfg, &r);
    l->full_k = -1;
    for (int k = 0; k < l->K && st == MATTN_OK; k++)
        if (l->full_k < 0 && !strcmp(l->experts[k]->vt->name, "full")) l->full_k = k;
    if (st == MATTN_OK && cfg->full_share >= 0.0 && l->full_k < 0)
        st = mattn_set_error(MATTN_ERR_INVALID_ARG, "full_share = %g needs an expert named \"full\"", cfg->full_share);
    for (int k = 0; k < l->K; k++) l->costs[k] = (float)cfg->expert_costs[k];
    if (st == MATTN_OK) st = mattn_layer_build_params(l);
    if (st != MATTN_OK) {
        /* experts passed in stay the caller's */
        if (experts) memset(l->experts, 0, sizeof l->experts);
        else for (int k = 0; k < built; k++) { mattn_expert_free(l->experts[k]); l->experts[k] = NULL; }
        mattn_layer_free(l);
        return st;
    }
    *out = l;
    return MATTN_OK;
}

void mattn_layer_free(mattn_layer *l) {
    if (!l) return;
    for (int k = 0; k < l->K; k++) mattn_expert_free(l->experts[k]);
    mattn_controller_free(&l->ctrl);
    mattn_afree(l->w_qkv);
    mattn_afree(l->w_o);
    mattn_afree(l->g_w_qkv);
    mattn_afree(l->g_w_o);
    mattn_afree(l->arena);
    mattn_afree(l->g_arena);
    mattn_free(l->params);
    mattn_free(l->forced);
    mattn_free(l);
}

const char *mattn_layer_errmsg(const mattn_layer *l) { return l ? l->errmsg : "layer is NULL"; }
char *mattn_layer_errbuf(mattn_layer *l) { return l->errmsg; }
const mattn_config *mattn_layer_config(const mattn_layer *l) { return l ? &l->cfg : NULL; }
mattn_config *mattn_layer_cfg_mut(mattn_layer *l) { return &l->cfg; }
void mattn_layer_set_training(mattn_layer *l, int training) { if (l) l->training = training != 0; }
void mattn_layer_set_grad(mattn_layer *l, int enabled) { if (l) l->no_grad = !enabled; }

mattn_status mattn_layer_force_routes(mattn_layer *l, const uint8_t *expert, int n) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_force_routes: layer is NULL");
    mattn_free(l->forced);
    l->forced = NULL;
    l->n_forced = 0;
    if (!expert) return MATTN_OK;
    if (n < 1) return LERR(l, MATTN_ERR_INVALID_ARG, "forced routes: n must be >= 1, got %d", n);
    for (int t = 0; t < n; t++)
        if (expert[t] >= l->K)
            return LERR(l, MATTN_ERR_INVALID_ARG, "forced routes: expert[%d] = %d, the layer has %d experts", t,
                        expert[t], l->K);
    l->forced = mattn_malloc((size_t)n);
    if (!l->forced) return LERR(l, MATTN_ERR_NOMEM, "out of memory for %d forced routes", n);
    memcpy(l->forced, expert, (size_t)n);
    l->n_forced = n;
    return MATTN_OK;
}
uint64_t mattn_layer_step(const mattn_layer *l) { return l ? l->step : 0; }
mattn_status mattn_layer_set_position_norm(mattn_layer *l, int length) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_set_position_norm: layer is NULL");
    if (length < 0) return LERR(l, MATTN_ERR_INVALID_ARG, "position length must be >= 0, got %d", length);
    l->ctrl.pos_len = length;
    return MATTN_OK;
}
void mattn_layer_set_step(mattn_layer *l, uint64_t step) { if (l) l->step = step; }

int mattn_layer_n_params(const mattn_layer *l) { return l ? l->n_params : 0; }

mattn_status mattn_layer_param(mattn_layer *l, int i, mattn_tensor *t) {
    if (!l || !t) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_param: %s is NULL", !l ? "layer" : "t");
    if (i < 0 || i >= l->n_params)
        return LERR(l, MATTN_ERR_INVALID_ARG, "parameter index %d out of range [0, %d)", i, l->n_params);
    *t = l->params[i].t;
    return MATTN_OK;
}

const float *mattn_layer_alpha(const mattn_layer *l) { return l && l->N ? l->act.alpha : NULL; }
const float *mattn_layer_merge_weights(const mattn_layer *l) { return l && l->N ? l->weights : NULL; }
const float *mattn_layer_beta_hat(const mattn_layer *l) {
    return l && l->N && l->ctrl.kind == MATTN_CONTROLLER_BAYESIAN ? l->act.beta_hat : NULL;
}
const float *mattn_layer_uncertainty(const mattn_layer *l) {
    return l && l->N && l->ctrl.kind == MATTN_CONTROLLER_BAYESIAN ? l->act.unc : NULL;
}

// ----------------------------------------------------------------------------
// arena planning: one allocation per (B, T) plan

/* Walk the layout; with base == NULL only sizes are summed. */
static size_t layout(mattn_layer *l, char *base, int B, int T) {
    const int64_t N = (int64_t)B * T;
    const size_t D = (size_t)l->cfg.d_model, K = (size_t)l->K, Hc = (size_t)l->ctrl.Hc;
    mattn_carver cv = {base, 0};
#define TAKE(ptr, bytes) MATTN_CARVE(&cv, ptr, bytes)
    TAKE(l->act.f, N * (D + 2) * sizeof(float));
    TAKE(l->act.z1, N * Hc * sizeof(float));
    TAKE(l->act.h, N * Hc * sizeof(float));
    TAKE(l->act.logits, N * K * sizeof(float));
    TAKE(l->act.alpha, N * K * sizeof(float));
    TAKE(l->act.beta_hat, N * K * sizeof(float));
    TAKE(l->act.a, N * K * sizeof(double));
    TAKE(l->act.logg, N * K * sizeof(double));
    TAKE(l->act.unc, N * sizeof(float));
    TAKE(l->act.kl, N * sizeof(double));
    TAKE(l->weights, N * K * sizeof(float));
    TAKE(l->exec, N * K);
    for (int k = 0; k < l->K; k++) {
        mattn_expert *e = l->experts[k];
        TAKE(l->rows[k], N * sizeof(int32_t));
        TAKE(l->y[k], N * D * sizeof(float));
        TAKE(l->work[k], e->vt->workspace_size ? e->vt->workspace_size(e->state, B, T) : 0);
    }
    size_t wmax = 0; /* no-grad forwards run every expert in one workspace (touched only then) */
    for (int k = 0; k < l->K; k++) {
        mattn_expert *e = l->experts[k];
        const size_t w = e->vt->workspace_size ? e->vt->workspace_size(e->state, B, T) : 0;
        wmax = w > wmax ? w : wmax;
    }
    TAKE(l->work_ng, wmax);
    if (l->cfg.share_qkv) {
        TAKE(l->qkv, N * 3 * D * sizeof(float));
        TAKE(l->merged, N * D * sizeof(float));
        TAKE(l->xg, N * D * sizeof(float));
        TAKE(l->yg, N * 2 * D * sizeof(float));
        TAKE(l->srows, N * sizeof(int32_t));
        TAKE(l->need, N);
    }
#undef TAKE
    return cv.off;
}

mattn_status mattn_layer_plan(mattn_layer *l, int B, int T) {
    if (l->arena && l->plan_B == B && l->plan_T == T) return MATTN_OK;
    size_t bytes = layout(l, NULL, B, T);
    char *a = mattn_amalloc(bytes);
    if (!a) return LERR(l, MATTN_ERR_NOMEM, "out of memory for activations (B=%d, T=%d: %zu bytes)", B, T, bytes);
    mattn_afree(l->arena);
    l->arena = a;
    l->plan_B = B;
    l->plan_T = T;
    layout(l, a, B, T);
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// forward

/* Q/K/V under share_qkv: queries for tokens any shared expert runs on, keys
 * and values for every token one of their queries can see. */
static double shared_projections(mattn_layer *l, const float *x, int B, int T) {
    const int D = l->cfg.d_model;
    const int64_t N = (int64_t)B * T;
    int64_t nq = 0, nk = 0;
    if (N < 1) return 0.0; /* (check_forward refused it; tells the compiler) */
    memset(l->need, 0, (size_t)N);
    for (int64_t n = 0; n < N; n++) {
        int any = 0;
        for (int k = 0; k < l->K; k++) any |= l->uses_shared[k] && l->exec[n * l->K + k];
        if (any) l->srows[nq++] = (int32_t)n;
    }
    double f = mattn_project_rows(x, D, l->srows, nq, N, l->w_qkv, D, D, l->qkv, 3 * D, l->xg, l->yg);
    for (int k = 0; k < l->K; k++)
        if (l->uses_shared[k] && l->n_rows[k])
            mattn_builtin_mark_keys(l->experts[k]->state, B, T, l->rows[k], l->n_rows[k], l->need);
    int32_t *keys = (int32_t *)l->merged; /* scratch: merged is written only later */
    for (int64_t n = 0; n < N; n++)
        if (l->need[n]) keys[nk++] = (int32_t)n;
    f += mattn_project_rows(x, D, keys, nk, N, l->w_qkv + (size_t)D * D, 2 * D, D, l->qkv + D, 3 * D,
                            l->xg, l->yg);
    return f;
}

/* NaN/Inf weights: the kernels' clamped exp would turn a NaN score into a
 * zero probability, silently.  O(weights), vs O(B T weights) for a forward;
 * decoding checks once, when its cache is made. */
mattn_status mattn_layer_check_weights(mattn_layer *l) {
    for (int i = 0; i < mattn_layer_n_params(l); i++) {
        mattn_tensor t;
        mattn_layer_param(l, i, &t);
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
        const size_t bad = mattn_find_nonfinite(t.data, n);
        if (bad < n)
            return LERR(l, MATTN_ERR_NUMERIC, "weight '%s' holds a non-finite value (%g) at %zu", t.name,
                        (double)t.data[bad], bad);
    }
    return MATTN_OK;
}

/* Arguments, input values and shape limits of a forward. */
static mattn_status check_forward(mattn_layer *l, const float *x, int B, int T, const mattn_masks *masks,
                                  const float *out) {
    if (!x || !out) return LERR(l, MATTN_ERR_INVALID_ARG, "mattn_layer_forward: %s is NULL", !x ? "x" : "out");
    if (B < 1 || T < 1) return LERR(l, MATTN_ERR_INVALID_ARG, "B and T must be >= 1, got B=%d T=%d", B, T);
    if (l->ctrl.pos_len > 0 && T > l->ctrl.pos_len)
        return LERR(l, MATTN_ERR_INVALID_ARG, "T = %d exceeds the layer's position length %d", T, l->ctrl.pos_len);
    const int D = l->cfg.d_model;
    const int64_t N = (int64_t)B * T;
    if (N > INT32_MAX / 4 || (double)N * 3 * D > 9e15)
        return LERR(l, MATTN_ERR_INVALID_ARG, "B*T = %lld tokens is too many", (long long)N);
    for (int64_t i = 0; i < N * D; i++)
        if (!isfinite(x[i]))
            return LERR(l, MATTN_ERR_NUMERIC, "x holds a non-finite value (%g) at token %lld, feature %lld",
                        (double)x[i], (long long)(i / D), (long long)(i % D));
    if (masks && masks->additive)
        for (int64_t i = 0; i < (masks->additive_batched ? (int64_t)B : 1) * T * T; i++)
            if (isnan(masks->additive[i]) || masks->additive[i] == INFINITY)
                return LERR(l, MATTN_ERR_NUMERIC, "additive mask holds %g at index %lld (only finite "
                            "values and -inf are allowed)", (double)masks->additive[i], (long long)i);
    if (l->forced && T > l->n_forced)
        return LERR(l, MATTN_ERR_INVALID_ARG, "forced routes cover %d positions, the input has T = %d", l->n_forced, T);
    return mattn_layer_check_weights(l);
}

/* acc[n] += w[n,k] y[n] for the tokens expert k ran on (all of them when
 * skip_shared is 0; under share_qkv the others' outputs are merged here). */
static void merge_into(const mattn_layer *l, float *acc, int64_t N, int k, const float *y) {
    const int D = l->cfg.d_model, K = l->K;
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        if (!l->exec[n * K + k]) continue;
        const float w = l->weights[n * K + k], *yn = y + n * D;
        float *o = acc + n * D;
        for (int d = 0; d < D; d++) o[d] += w * yn[d];
    }
}

/* W_o applied once to the merged core outputs of the tokens any expert ran on. */
static double shared_output(mattn_layer *l, int64_t N, float *out) {
    const int D = l->cfg.d_model, K = l->K;
    int64_t nq = 0;
    for (int64_t n = 0; n < N; n++) {
        int any = 0;
        for (int k = 0; k < K; k++) any |= l->exec[n * K + k];
        if (any) l->srows[nq++] = (int32_t)n;
    }
    return mattn_project_rows(l->merged, D, l->srows, nq, N, l->w_o, D, D, out, D, l->xg, l->yg);
}

/* Run every expert on its token list.  ng (gradients off): every expert
 * computes into one workspace and one output buffer, merged as soon as it is
 * done (same sums in the same order as merge_outputs), so memory does not
 * grow with the number of experts. */
static mattn_status run_experts(mattn_layer *l, const float *x, int B, int T, const mattn_masks *masks, int ng,
                                uint64_t step, float *out, mattn_stats *s) {
    const int D = l->cfg.d_model, K = l->K;
    const int64_t N = (int64_t)B * T;
    if (ng) {
        memset(out, 0, (size_t)N * D * sizeof(float));
        if (l->cfg.share_qkv) memset(l->merged, 0, (size_t)N * D * sizeof(float));
    }
    for (int k = 0; k < K; k++) {
        if (!l->n_rows[k]) continue;
        mattn_expert *e = l->experts[k];
        mattn_expert_call c = {
            .x = x, .qkv = l->uses_shared[k] ? l->qkv : NULL, .B = B, .T = T, .masks = masks,
            .rows = l->n_rows[k] == N ? NULL : l->rows[k], .n_rows = l->n_rows[k],
            .out = ng ? l->y[0] : l->y[k], .work = ng ? l->work_ng : l->work[k], .training = l->training,
            .seed = l->cfg.seed, .step = step,
        };
        mattn_status st = e->vt->forward(e->state, &c);
        if (st != MATTN_OK)
            return LERR(l, st, "expert %d ('%s') failed: %s", k, e->vt->name, mattn_last_error());
        s->flops[k] = c.flops;
        if (ng) merge_into(l, l->cfg.share_qkv ? l->merged : out, N, k, l->y[0]);
    }
    if (ng && l->cfg.share_qkv) s->flops_shared += shared_output(l, N, out);
    return MATTN_OK;
}

/* out = W_o (sum of shared core outputs) + sum of the others' outputs. */
static void merge_outputs(mattn_layer *l, int64_t N, float *out, mattn_stats *s) {
    const int D = l->cfg.d_model, K = l->K;
    memset(out, 0, (size_t)N * D * sizeof(float));
    if (l->cfg.share_qkv) {
        int64_t nq = 0;
        for (int64_t n = 0; n < N; n++) {
            float *m = l->merged + n * D;
            int any = 0;
            for (int k = 0; k < K; k++) {
                if (!l->uses_shared[k] || !l->exec[n * K + k]) continue;
                const float w = l->weights[n * K + k], *y = l->y[k] + n * D;
                if (!any) for (int d = 0; d < D; d++) m[d] = w * y[d];
                else for (int d = 0; d < D; d++) m[d] += w * y[d];
                any = 1;
            }
            if (any) l->srows[nq++] = (int32_t)n;
        }
        s->flops_shared += mattn_project_rows(l->merged, D, l->srows, nq, N, l->w_o, D, D, out, D, l->xg, l->yg);
    }
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *o = out + n * D;
        for (int k = 0; k < K; k++) {
            if (l->uses_shared[k] || !l->exec[n * K + k]) continue;
            const float w = l->weights[n * K + k], *y = l->y[k] + n * D;
            for (int d = 0; d < D; d++) o[d] += w * y[d];
        }
    }
}

/* The routing statistics with the FLOPs the forward counted in s. */
static void finish_stats(const mattn_layer *l, int64_t N, const mattn_stats *s, double t_start, mattn_stats *out) {
    mattn_layer_fill_stats(l, N, out);
    memcpy(out->flops, s->flops, sizeof out->flops);
    out->flops_shared = s->flops_shared;
    out->flops_controller = s->flops_controller;
    out->flops_total = s->flops_shared + s->flops_controller;
    for (int k = 0; k < l->K; k++) out->flops_total += s->flops[k];
    out->seconds = mattn_now() - t_start;
}

mattn_status mattn_layer_forward(mattn_layer *l, const float *x, int B, int T,
                                 const mattn_masks *masks, float *out, float *aux_loss,
                                 mattn_stats *stats) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_forward: layer is NULL");
    mattn_status st = check_forward(l, x, B, T, masks, out);
    if (st != MATTN_OK) return st;
    const int D = l->cfg.d_model, K = l->K;
    const int64_t N = (int64_t)B * T;
    const double t_start = mattn_now();
    st = mattn_layer_plan(l, B, T);
    if (st != MATTN_OK) return st;
    l->N = 0;

    const uint64_t step = l->step;
    double aux = 0.0;
    st = mattn_controller_forward(&l->ctrl, &l->cfg, &l->act, x, B, T, l->training, step, &aux);
    if (st != MATTN_OK) return LERR(l, st, "%s", mattn_last_error());
    l->N = N;
    mattn_layer_route(l, N, T, 0);
    const int forced = l->forced && l->cfg.hard_routing; /* the controller plays no part */
    if (forced) aux = 0.0;
    else aux += mattn_budget_forward(l, N);
    for (int k = 0; k < K; k++) { /* token lists per expert */
        int64_t c = 0;
        for (int64_t n = 0; n < N; n++)
            if (l->exec[n * K + k]) l->rows[k][c++] = (int32_t)n;
        l->n_rows[k] = c;
    }

    mattn_stats s;
    memset(&s, 0, sizeof s);
    s.flops_controller = mattn_controller_flops(&l->ctrl, N);
    if (l->cfg.share_qkv) s.flops_shared = shared_projections(l, x, B, T);
    /* Not with a mix of shared and unshared experts (custom experts under
     * share_qkv): their outputs need W_o and no W_o separately. */
    int all_shared = 1;
    for (int k = 0; k < K; k++) all_shared &= l->uses_shared[k];
    const int ng = l->no_grad && (!l->cfg.share_qkv || all_shared);
    st = run_experts(l, x, B, T, masks, ng, step, out, &s);
    if (st != MATTN_OK) return st;
    if (!ng) merge_outputs(l, N, out, &s);

    /* x was finite: a non-finite output means a weight holds NaN/Inf (or
     * the activations overflowed) — say so instead of passing it on */
    for (int64_t i = 0; i < N * D; i++)
        if (!(out[i] - out[i] == 0.0f)) {
            l->N = 0; /* nothing to differentiate */
            return LERR(l, MATTN_ERR_NUMERIC, "output is not finite (%g at token %lld, feature %lld) although x is: "
                        "a weight holds NaN/Inf or the activations overflowed", (double)out[i], (long long)(i / D), (long long)(i % D));
        }
    l->fB = B;
    l->fT = T;
    l->f_training = l->training;
    l->f_forced = forced;
    l->f_no_grad = ng;
    l->f_step = step;
    if (l->training) l->step++;
    if (aux_loss) *aux_loss = (float)aux;
    if (stats) finish_stats(l, N, &s, t_start, stats);
    return MATTN_OK;
}
