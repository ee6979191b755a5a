/*
 * layer_impl.h — the layer's private state, shared by layer.c (forward,
 * backward, arena) and decode.c (single-token decoding with a cache).
 */
#ifndef MATTN_LAYER_IMPL_H
#define MATTN_LAYER_IMPL_H

#include "mattn_impl.h"

typedef struct layer_param {
    char name[96];
    mattn_tensor t;
} layer_param;

struct mattn_layer {
    mattn_config cfg;
    char errmsg[MATTN_ERRMSG_LEN];
    int K;
    mattn_expert *experts[MATTN_MAX_EXPERTS];
    int uses_shared[MATTN_MAX_EXPERTS];  /* expert takes the shared qkv */
    mattn_controller ctrl;
    float *w_qkv, *w_o;                  /* share_qkv: (3D,D), (D,D); else NULL */
    float costs[MATTN_MAX_EXPERTS];      /* buffer "costs" */
    int training;
    uint64_t step;                       /* noise step, advanced per training forward */

    /* per-forward arena, planned for n_cap = B*T tokens */
    int64_t n_cap;
    int plan_B, plan_T;
    char *arena;
    mattn_ctrl_act act;
    float *weights;                      /* (N,K) merge weights used */
    uint8_t *exec;                       /* (N,K) expert k ran for token n */
    int32_t *rows[MATTN_MAX_EXPERTS];    /* (N) token lists */
    int64_t n_rows[MATTN_MAX_EXPERTS];
    float *y[MATTN_MAX_EXPERTS];         /* (N,D) expert outputs (core outputs if shared) */
    void *work[MATTN_MAX_EXPERTS];
    float *qkv, *merged, *xg, *yg;       /* shared: (N,3D), (N,D), (N,D), (N,2D) */
    int32_t *srows;                      /* shared: (N) token list */
    uint8_t *need;                       /* shared: (N) */
    int64_t N;                           /* tokens of the last forward */
    int fB, fT, f_training;              /* shape and mode of the last forward */
    int no_grad, f_no_grad;              /* gradients off (mattn_layer_set_grad) now / at the last forward */
    void *work_ng;                       /* no-grad: the workspace every expert shares */
    uint64_t f_step;                     /* its noise step */

    /* gradients (allocated by the first zero_grad/backward) */
    float *g_w_qkv, *g_w_o;              /* share_qkv */
    int has_grads;
    int gB, gT;                          /* backward arena planned for (gB, gT) */
    char *g_arena;
    float *gw, *gy, *gz2, *gh, *glogits, *g_merged, *g_qkv;
    void *gwork[MATTN_MAX_EXPERTS];

    int n_params;
    layer_param *params;

    uint8_t *forced;                     /* forced routes by position, or NULL */
    int n_forced;
};


int mattn_layer_is_builtin(const mattn_expert *e);
mattn_status mattn_layer_plan(mattn_layer *l, int B, int T);
/* MATTN_ERR_NUMERIC naming the first weight that holds NaN/Inf. */
mattn_status mattn_layer_check_weights(mattn_layer *l);
/* Rows n = 0..N-1 are positions t0 + n % T of their sequences. */
void mattn_layer_route(mattn_layer *l, int64_t N, int T, int t0);
void mattn_layer_fill_stats(const mattn_layer *l, int64_t N, mattn_stats *s);

#endif
