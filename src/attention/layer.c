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
 * re-planned when B*T grows.  Also here: RoutingStats and the parameter table
 * under the Python library's state_dict names.
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

static mattn_status build_param_table(mattn_layer *l) {
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
    if (!experts && cfg->n_experts > 3)
        return mattn_set_error(MATTN_ERR_INVALID_ARG,
                               "the built-in experts are 3 (full, linear, local) but expert_costs "
                               "holds %d costs: pass your experts or 1 to 3 costs", cfg->n_experts);
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
            st = mattn_expert_build(builtin_names[k], cfg, &l->experts[k]);
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
    for (int k = 0; k < l->K; k++) l->costs[k] = (float)cfg->expert_costs[k];
    if (st == MATTN_OK) st = build_param_table(l);
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
mattn_status mattn_layer_set_position_length(mattn_layer *l, int length) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_set_position_length: layer is NULL");
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
const float *mattn_layer_weights(const mattn_layer *l) { return l && l->N ? l->weights : NULL; }
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
// routing: merge weights and which experts run for which token

void mattn_layer_route(mattn_layer *l, int64_t N, int T, int t0) {
    const int K = l->K, k_top = l->cfg.hard_top_k;
    const float *alpha = l->act.alpha;
    if (l->forced && l->cfg.hard_routing && !l->training) {
        memset(l->weights, 0, (size_t)N * K * sizeof(float));
        memset(l->exec, 0, (size_t)N * K);
        for (int64_t n = 0; n < N; n++) {
            const int k = l->forced[t0 + n % T];
            l->weights[n * K + k] = 1.0f;
            l->exec[n * K + k] = 1;
        }
        return;
    }
    if (!l->cfg.hard_routing) {
        memcpy(l->weights, alpha, (size_t)N * K * sizeof(float));
        memset(l->exec, 1, (size_t)N * K);
        return;
    }
    if (l->training) { /* Gumbel top-k weights; every expert still computed */
        mattn_gumbel_topk(l->weights, l->act.logits, N, K, k_top, l->cfg.gumbel_temp, l->cfg.seed,
                          l->step);
        memset(l->exec, 1, (size_t)N * K);
        return;
    }
    const int bayes = l->ctrl.kind == MATTN_CONTROLLER_BAYESIAN;
    const float eta = (float)l->cfg.uncertainty_threshold;
    for (int64_t n = 0; n < N; n++) {
        const float *al = alpha + n * K;
        float *w = l->weights + n * K;
        uint8_t *ex = l->exec + n * K;
        if (bayes && !(l->act.unc[n] < eta)) { /* uncertain: soft merge */
            memcpy(w, al, (size_t)K * sizeof(float));
            memset(ex, 1, (size_t)K);
            continue;
        }
        mattn_topk_mask(al, K, k_top, ex);
        double s = 0.0;
        for (int k = 0; k < K; k++) s += ex[k] ? al[k] : 0.0f;
        for (int k = 0; k < K; k++) w[k] = ex[k] ? (k_top == 1 ? 1.0f : (float)(al[k] / s)) : 0.0f;
    }
}

// ----------------------------------------------------------------------------
// statistics

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
// forward

/* Q/K/V under share_qkv: queries for tokens any shared expert runs on, keys
 * and values for every token one of their queries can see. */
static double shared_projections(mattn_layer *l, const float *x, int B, int T) {
    const int D = l->cfg.d_model;
    const int64_t N = (int64_t)B * T;
    int64_t nq = 0, nk = 0;
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

mattn_status mattn_layer_forward(mattn_layer *l, const float *x, int B, int T,
                                 const mattn_masks *masks, float *out, float *aux_loss,
                                 mattn_stats *stats) {
    if (!l) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_layer_forward: layer is NULL");
    if (!x || !out) return LERR(l, MATTN_ERR_INVALID_ARG, "mattn_layer_forward: %s is NULL", !x ? "x" : "out");
    if (B < 1 || T < 1) return LERR(l, MATTN_ERR_INVALID_ARG, "B and T must be >= 1, got B=%d T=%d", B, T);
    if (l->ctrl.pos_len > 0 && T > l->ctrl.pos_len)
        return LERR(l, MATTN_ERR_INVALID_ARG, "T = %d exceeds the layer's position length %d", T, l->ctrl.pos_len);
    const int D = l->cfg.d_model, K = l->K;
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
    mattn_status st = mattn_layer_check_weights(l);
    if (st != MATTN_OK) return st;
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

    /* token lists per expert */
    for (int k = 0; k < K; k++) {
        int64_t c = 0;
        for (int64_t n = 0; n < N; n++)
            if (l->exec[n * K + k]) l->rows[k][c++] = (int32_t)n;
        l->n_rows[k] = c;
    }

    mattn_stats s;
    memset(&s, 0, sizeof s);
    s.flops_controller = mattn_controller_flops(&l->ctrl, N);
    if (l->cfg.share_qkv) s.flops_shared = shared_projections(l, x, B, T);

    /* Gradients off: every expert computes into one workspace and one output
     * buffer, merged as soon as it is done (same sums in the same order as
     * below), so memory does not grow with the number of experts.  Not with
     * a mix of shared and unshared experts (custom experts under share_qkv). */
    int all_shared = 1;
    for (int k = 0; k < K; k++) all_shared &= l->uses_shared[k];
    const int ng = l->no_grad && (!l->cfg.share_qkv || all_shared);
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
        st = e->vt->forward(e->state, &c);
        if (st != MATTN_OK)
            return LERR(l, st, "expert %d ('%s') failed: %s", k, e->vt->name, mattn_last_error());
        s.flops[k] = c.flops;
        if (ng) {
            float *acc = l->cfg.share_qkv ? l->merged : out;
            #pragma omp parallel for schedule(static)
            for (int64_t n = 0; n < N; n++) {
                if (!l->exec[n * K + k]) continue;
                const float w = l->weights[n * K + k], *y = l->y[0] + n * D;
                float *o = acc + n * D;
                for (int d = 0; d < D; d++) o[d] += w * y[d];
            }
        }
    }
    if (ng && l->cfg.share_qkv) {
        int64_t nq = 0;
        for (int64_t n = 0; n < N; n++) {
            int any = 0;
            for (int k = 0; k < K; k++) any |= l->exec[n * K + k];
            if (any) l->srows[nq++] = (int32_t)n;
        }
        s.flops_shared += mattn_project_rows(l->merged, D, l->srows, nq, N, l->w_o, D, D, out, D,
                                             l->xg, l->yg);
    }

    /* merge: out = W_o (sum of shared core outputs) + sum of the others */
    if (!ng) memset(out, 0, (size_t)N * D * sizeof(float));
    if (!ng && l->cfg.share_qkv) {
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
        s.flops_shared += mattn_project_rows(l->merged, D, l->srows, nq, N, l->w_o, D, D, out, D,
                                             l->xg, l->yg);
    }
    if (!ng) {
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
    l->f_no_grad = ng;
    l->f_step = step;
    if (l->training) l->step++;
    if (aux_loss) *aux_loss = (float)aux;
    if (stats) {
        double fl[MATTN_MAX_EXPERTS];
        memcpy(fl, s.flops, sizeof fl);
        double fs = s.flops_shared, fc = s.flops_controller;
        mattn_layer_fill_stats(l, N, stats);
        memcpy(stats->flops, fl, sizeof fl);
        stats->flops_shared = fs;
        stats->flops_controller = fc;
        stats->flops_total = fs + fc;
        for (int k = 0; k < K; k++) stats->flops_total += fl[k];
        stats->seconds = mattn_now() - t_start;
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// backward

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
    st = build_param_table(l);
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

    /* routing weights: alpha itself (soft), or the Gumbel top-k of the logits */
    const float *galpha = l->gw, *glogits = NULL;
    if (l->cfg.hard_routing && training) {
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
