/*
 * builtin.c — what the three built-in experts (experts.c's table) share:
 * parameters (W_qkv, W_o, or none under share_qkv), workspace layout, the
 * sparse forward — queries, attention core and output projection only for
 * the listed tokens, keys/values only for the tokens those queries see — and
 * the backward.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"

// ----------------------------------------------------------------------------
// built-in experts: state and parameters

mattn_status mattn_builtin_init(const mattn_config *cfg, mattn_core_kind core, int window,
                                void **state) {
    mattn_builtin *e = mattn_calloc(1, sizeof *e);
    if (!e) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory creating an expert");
    e->core = core;
    e->D = cfg->d_model;
    e->H = cfg->n_heads;
    e->dh = cfg->d_model / cfg->n_heads;
    e->window = window;
    e->causal = cfg->causal;
    e->share = cfg->share_qkv;
    e->dropout = (float)cfg->dropout;
    if (!e->share) {
        size_t D = (size_t)e->D;
        e->w_qkv = mattn_amalloc(3 * D * D * sizeof(float));
        e->w_o = mattn_amalloc(D * D * sizeof(float));
        if (!e->w_qkv || !e->w_o) {
            mattn_builtin_free(e);
            return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for expert weights (D=%d)",
                                   cfg->d_model);
        }
        /* Deterministic default init; the layer re-initialises from its seed. */
        mattn_rng r;
        mattn_rng_seed(&r, mattn_stream_seed(cfg->seed, 0, (uint64_t)core * 7 + (uint64_t)window,
                                             MATTN_PURPOSE_INIT));
        mattn_init_uniform(e->w_qkv, 3 * D * D, e->D, &r);
        mattn_init_uniform(e->w_o, D * D, e->D, &r);
    }
    *state = e;
    return MATTN_OK;
}

void mattn_builtin_free(void *state) {
    mattn_builtin *e = state;
    if (!e) return;
    mattn_afree(e->w_qkv);
    mattn_afree(e->w_o);
    mattn_afree(e->g_w_qkv);
    mattn_afree(e->g_w_o);
    mattn_free(e);
}

int mattn_builtin_n_params(const void *state) {
    const mattn_builtin *e = state;
    return e->share ? 0 : 2;
}

mattn_status mattn_builtin_param(void *state, int i, mattn_tensor *t) {
    mattn_builtin *e = state;
    if (e->share || i < 0 || i > 1)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "expert parameter index %d out of range", i);
    t->ndim = 2;
    t->shape[0] = i == 0 ? 3 * e->D : e->D;
    t->shape[1] = e->D;
    t->name = i == 0 ? "qkv.weight" : "out_proj.weight";
    t->data = i == 0 ? e->w_qkv : e->w_o;
    t->grad = i == 0 ? e->g_w_qkv : e->g_w_o;
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// built-in experts: workspace and sparse forward

/* Workspace, in order: qkv (N,3D) | att (N,D) | lse (B,H,T) | gather x
 * (N,D) | gather y (N,2D) | key list (N int32) | need (N bytes).  qkv, att
 * and lse are the activations a backward reads. */
/* Forward workspace pieces, carved in the order workspace_size counts them. */
typedef struct {
    float *qkv, *att, *lse, *xg, *yg;
    int32_t *keys;
    uint8_t *need;
    void *kscr;          /* the attention core's per-thread scratch */
    size_t kscr_bytes;
} builtin_ws;

static size_t core_scratch(const mattn_builtin *e, int T, int backward) {
    return e->core == MATTN_CORE_LINEAR ? mattn_attn_linear_scratch(backward, mattn_max_threads())
                                        : mattn_attn_softmax_scratch(T, e->dh, backward, mattn_max_threads());
}

static builtin_ws ws_carve(const mattn_builtin *e, mattn_carver *p, int B, int T) {
    const size_t N = (size_t)B * T, D = (size_t)e->D;
    builtin_ws w = {0};
    if (!e->share) {
        w.qkv = mattn_carve(p, N * 3 * D * sizeof(float));
        w.att = mattn_carve(p, N * D * sizeof(float));
    }
    w.lse = mattn_carve(p, (size_t)B * e->H * T * sizeof(float));
    if (!e->share) {
        w.xg = mattn_carve(p, N * D * sizeof(float));
        w.yg = mattn_carve(p, N * 2 * D * sizeof(float));
        w.keys = mattn_carve(p, N * sizeof(int32_t));
        w.need = mattn_carve(p, N);
    }
    w.kscr_bytes = core_scratch(e, T, 0);
    w.kscr = mattn_carve(p, w.kscr_bytes);
    return w;
}

/* Backward scratch: dL/datt (N,D) and dL/dqkv (N,3D) unless shared, the
 * linear core's state. */
typedef struct { float *gatt, *gqkv, *scratch; void *kscr; size_t kscr_bytes; } builtin_gws;
static builtin_gws gws_carve(const mattn_builtin *e, mattn_carver *p, int B, int T) {
    const size_t N = (size_t)B * T, D = (size_t)e->D;
    builtin_gws g = {0};
    if (!e->share) {
        g.gatt = mattn_carve(p, N * D * sizeof(float));
        g.gqkv = mattn_carve(p, N * 3 * D * sizeof(float));
    }
    if (e->core == MATTN_CORE_LINEAR) g.scratch = mattn_carve(p, mattn_attn_linear_backward_scratch(B, T, e->H, e->dh));
    g.kscr_bytes = core_scratch(e, T, 1);
    g.kscr = mattn_carve(p, g.kscr_bytes);
    return g;
}

static builtin_ws ws_layout(const mattn_builtin *e, void *work, int B, int T) {
    mattn_carver p = {work, 0};
    return ws_carve(e, &p, B, T);
}

size_t mattn_builtin_workspace_size(const void *state, int B, int T) {
    mattn_carver p = {NULL, 0};
    ws_carve(state, &p, B, T);
    return p.off;
}

void mattn_builtin_mark_keys(const mattn_builtin *e, int B, int T, const int32_t *rows,
                             int64_t n_rows, uint8_t *need) {
    (void)B;
    int64_t n = rows ? n_rows : (int64_t)B * T;
    int cur_b = -1, marked = -1; /* keys [0, marked] of batch cur_b handled */
    for (int64_t r = 0; r < n; r++) {
        int tok = rows ? rows[r] : (int)r, b = tok / T, t = tok % T, lo, hi;
        if (b != cur_b) { cur_b = b; marked = -1; }
        int window = e->core == MATTN_CORE_LINEAR ? -1 : e->window;
        mattn_attn_key_range(t, T, e->causal, window, &lo, &hi);
        if (lo <= marked) lo = marked + 1;
        for (int s = lo; s <= hi; s++) need[(size_t)b * T + s] = 1;
        if (hi > marked) marked = hi;
    }
}

static mattn_attn_args core_args(const mattn_builtin *e, const float *qkv, float *att, int B, int T,
                                 const int32_t *rows, int64_t n_rows, const mattn_masks *masks,
                                 int training, uint64_t seed, uint64_t step, float *lse, void *kscr,
                                 size_t kscr_bytes) {
    return (mattn_attn_args){
        .B = B, .T = T, .H = e->H, .dh = e->dh,
        .q = qkv, .k = qkv + e->D, .v = qkv + 2 * e->D, .ld = 3 * e->D,
        .out = att, .ldo = e->D, .rows = rows, .n_rows = n_rows, .masks = masks,
        .causal = e->causal, .window = e->window,
        .dropout = training ? e->dropout : 0.0f,
        .dropout_key = mattn_stream_seed(seed, step, 0,
                                         MATTN_PURPOSE_ATTN_DROPOUT + (uint64_t)e->expert_index),
        .lse = lse, .scratch = kscr, .scratch_bytes = kscr_bytes,
    };
}

/* The attention core on qkv (B,T,3D) for rows -> att rows; the FLOPs, or -1
 * (scratch too small: a bug). */
static double core_forward(const mattn_builtin *e, const float *qkv, float *att, int B, int T, const int32_t *rows,
                           int64_t n_rows, const mattn_masks *masks, int training, uint64_t seed, uint64_t step,
                           const builtin_ws *w) {
    mattn_attn_args a = core_args(e, qkv, att, B, T, rows, n_rows, masks, training, seed, step, w->lse, w->kscr,
                                  w->kscr_bytes);
    return e->core == MATTN_CORE_LINEAR ? mattn_attn_linear_forward(&a)
                                        : mattn_attn_softmax_forward(&a);
}

static mattn_status core_nomem(const mattn_builtin *e, int T) {
    return mattn_set_error(MATTN_ERR_MISUSE, "the attention kernel's scratch is too small (T = %d, head dim %d): "
                           "the workspace was sized for another shape", T, e->dh);
}

/* Backward of the core over all rows: gout (B,T,D) -> g_qkv (B,T,3D) (+=). */
static mattn_status core_backward(const mattn_builtin *e, const float *qkv, const float *att, const float *gout,
                                  float *g_qkv, int B, int T, const mattn_masks *masks, int training, uint64_t seed,
                                  uint64_t step, const float *lse, const builtin_gws *gw) {
    mattn_attn_args a = core_args(e, qkv, (float *)att, B, T, NULL, 0, masks, training, seed, step, (float *)lse,
                                  gw->kscr, gw->kscr_bytes);
    float *scratch = gw->scratch;
    const int D = e->D;
    mattn_attn_grad g = {.gout = gout, .ldgo = D, .gq = g_qkv, .gk = g_qkv + D, .gv = g_qkv + 2 * D,
                         .ldg = 3 * D, .state = scratch};
    const int rc = e->core == MATTN_CORE_LINEAR ? mattn_attn_linear_backward(&a, &g) : mattn_attn_softmax_backward(&a, &g);
    if (rc != 0) return core_nomem(e, T);
    return MATTN_OK;
}

double mattn_project_rows(const float *X, int ldx, const int32_t *rows, int64_t n, int64_t N,
                           const float *W, int out, int in, float *Y, int ldy, float *xg,
                           float *yg) {
    if (n == 0) return 0.0;
    if (!rows || n == N) {
        mattn_gemm(0, 1, (int)N, out, in, 1.0f, X, ldx, W, in, 0.0f, Y, ldy);
    } else {
        for (int64_t r = 0; r < n; r++)
            memcpy(xg + r * in, X + (size_t)rows[r] * ldx, (size_t)in * sizeof(float));
        mattn_gemm(0, 1, (int)n, out, in, 1.0f, xg, in, W, in, 0.0f, yg, out);
        for (int64_t r = 0; r < n; r++)
            memcpy(Y + (size_t)rows[r] * ldy, yg + r * out, (size_t)out * sizeof(float));
    }
    return 2.0 * (double)n * out * in;
}

mattn_status mattn_builtin_forward(void *state, mattn_expert_call *c) {
    mattn_builtin *e = state;
    const int B = c->B, T = c->T, D = e->D;
    const int64_t N = (int64_t)B * T, n = c->rows ? c->n_rows : N;
    builtin_ws w = ws_layout(e, c->work, B, T);
    float *qkv = e->share ? (float *)c->qkv : w.qkv, *att = e->share ? c->out : w.att;
    float *xg = w.xg, *yg = w.yg;
    int32_t *keys = w.keys;
    uint8_t *need = w.need;
    if (e->share) {
        if (!qkv) return mattn_set_error(MATTN_ERR_MISUSE, "share_qkv expert called without qkv");
        c->flops = core_forward(e, qkv, att, B, T, c->rows, n, c->masks, c->training, c->seed, c->step, &w);
        return c->flops < 0 ? core_nomem(e, T) : MATTN_OK;
    }
    double f = 0.0;
    /* queries for the routed tokens */
    f += mattn_project_rows(c->x, D, c->rows, n, N, e->w_qkv, D, D, qkv, 3 * D, xg, yg);
    /* keys and values for every token those queries can see */
    int64_t nk = N;
    if (c->rows && n < N) {
        memset(need, 0, (size_t)N);
        mattn_builtin_mark_keys(e, B, T, c->rows, n, need);
        nk = 0;
        for (int64_t i = 0; i < N; i++) {
            if (need[i]) keys[nk++] = (int32_t)i;
            /* unneeded keys are skipped by score masks, but the kernel's
             * tiles still read them (p = 0 times V): zeros, not whatever
             * the workspace held (0 x NaN would be NaN) */
            else memset(qkv + (size_t)i * 3 * D + D, 0, 2 * (size_t)D * sizeof(float));
        }
    }
    f += mattn_project_rows(c->x, D, nk < N ? keys : NULL, nk, N, e->w_qkv + (size_t)D * D, 2 * D, D,
                      qkv + D, 3 * D, xg, yg);
    const double fc = core_forward(e, qkv, att, B, T, c->rows, n, c->masks, c->training, c->seed, c->step, &w);
    if (fc < 0) return core_nomem(e, T);
    f += fc;
    f += mattn_project_rows(att, D, c->rows, n, N, e->w_o, D, D, c->out, D, xg, yg);
    c->flops = f;
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// built-in experts: backward (every token; training runs experts densely)
//
//   out = att W_o^T,  att = core(q, k, v),  [q k v] = x W_qkv^T
//   gW_o += gout^T att;  gatt = gout W_o;  core backward -> gqkv;
//   gW_qkv += gqkv^T x;  gx += gqkv W_qkv.
// Under share_qkv the layer owns the projections: only the core runs here.

mattn_status mattn_builtin_alloc_grads(mattn_builtin *e) {
    if (e->share || e->g_w_qkv) return MATTN_OK;
    const size_t DD = (size_t)e->D * e->D;
    e->g_w_qkv = mattn_amalloc(3 * DD * sizeof(float));
    e->g_w_o = mattn_amalloc(DD * sizeof(float));
    if (!e->g_w_qkv || !e->g_w_o) {
        mattn_afree(e->g_w_qkv);
        mattn_afree(e->g_w_o);
        e->g_w_qkv = e->g_w_o = NULL;
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory for expert gradients (D=%d)", e->D);
    }
    memset(e->g_w_qkv, 0, 3 * DD * sizeof(float));
    memset(e->g_w_o, 0, DD * sizeof(float));
    return MATTN_OK;
}

size_t mattn_builtin_backward_workspace_size(const void *state, int B, int T) {
    mattn_carver p = {NULL, 0};
    gws_carve(state, &p, B, T);
    return p.off;
}

mattn_status mattn_builtin_backward(void *state, mattn_expert_grad_call *c) {
    mattn_builtin *e = state;
    const int B = c->B, T = c->T, D = e->D;
    const int64_t N = (int64_t)B * T;
    builtin_ws w = ws_layout(e, c->work, B, T);
    mattn_carver p = {c->gwork, 0};
    const builtin_gws g = gws_carve(e, &p, B, T);
    if (e->share) {
        if (!c->qkv || !c->g_qkv) return mattn_set_error(MATTN_ERR_MISUSE, "share_qkv expert backward without qkv");
        return core_backward(e, c->qkv, c->out, c->gout, c->g_qkv, B, T, c->masks, c->training, c->seed, c->step,
                             w.lse, &g);
    }
    if (!e->g_w_qkv) return mattn_set_error(MATTN_ERR_MISUSE, "expert backward before its gradients exist");
    float *gatt = g.gatt, *gqkv = g.gqkv;
    mattn_gemm(0, 0, (int)N, D, D, 1.0f, c->gout, D, e->w_o, D, 0.0f, gatt, D);
    memset(gqkv, 0, (size_t)N * 3 * D * sizeof(float));
    mattn_status st = core_backward(e, w.qkv, w.att, gatt, gqkv, B, T, c->masks, c->training, c->seed, c->step,
                                    w.lse, &g);
    if (st != MATTN_OK) return st; /* no gradient touched yet */
    mattn_gemm(1, 0, D, D, (int)N, 1.0f, c->gout, D, w.att, D, 1.0f, e->g_w_o, D);
    mattn_gemm(1, 0, 3 * D, D, (int)N, 1.0f, gqkv, 3 * D, c->x, D, 1.0f, e->g_w_qkv, D);
    if (c->gx) mattn_gemm(0, 0, (int)N, D, 3 * D, 1.0f, gqkv, 3 * D, e->w_qkv, D, 1.0f, c->gx, D);
    return MATTN_OK;
}
