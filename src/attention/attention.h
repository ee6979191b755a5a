/*
 * attention.h — the attention floor, internal: Dirichlet special functions,
 * the built-in experts, the controller and the layer's private state.
 */
#ifndef MATTN_ATTENTION_H
#define MATTN_ATTENTION_H

#include "io/io.h"
#include "kernels/kernels.h"

// ----------------------------------------------------------------------------
// Dirichlet special functions (docs/bayes-math.md §2-§3), double precision

double mattn_digamma(double x);
double mattn_trigamma(double x);
double mattn_lgamma(double x);     /* thread-safe lgamma for x > 0 */
double mattn_dir_entropy(const double *a, int K, double *grad /* may be NULL */);
double mattn_dir_kl(const double *a, const double *b, int K, double *grad /* may be NULL */);
/* Mutual information between the route and alpha ~ Dir(a): the epistemic
 * part of the routing entropy, H[Cat(a/a0)] - E H[Cat(alpha)], in [0, ln K]. */
double mattn_dir_mutual_info(const double *a, int K);
/* dg/da of a Gamma(a,1) sample g = x (implicit reparameterisation, PyTorch's
 * approximation, docs/bayes-math.md §5.2), and d ln g/da from ln g (§5.4). */
double mattn_gamma_grad(double a, double x);
double mattn_dlng_da(double a, double log_x);

// ----------------------------------------------------------------------------
// built-in experts (experts.c: the table; builtin.c: what they share)

struct mattn_expert {
    const mattn_expert_vtable *vt;
    void *state;
};

/* Which attention core a built-in expert runs. */
typedef enum { MATTN_CORE_SOFTMAX, MATTN_CORE_LINEAR } mattn_core_kind;

/* State shared by the three built-ins: projections + core parameters. */
typedef struct mattn_builtin {
    mattn_core_kind core;
    int D, H, dh, window, causal, share;   /* window < 0: unlimited */
    float dropout;
    int expert_index;                      /* set by the layer, for noise streams */
    float *w_qkv;  /* (3D, D), NULL under share_qkv */
    float *w_o;    /* (D, D),  NULL under share_qkv */
    float *g_w_qkv, *g_w_o;                /* gradients, allocated on first backward */
} mattn_builtin;

mattn_status mattn_builtin_init(const mattn_config *cfg, mattn_core_kind core, int window,
                                void **state);
void mattn_builtin_free(void *state);
size_t mattn_builtin_workspace_size(const void *state, int B, int T);
mattn_status mattn_builtin_forward(void *state, mattn_expert_call *call);
size_t mattn_builtin_backward_workspace_size(const void *state, int B, int T);
mattn_status mattn_builtin_alloc_grads(mattn_builtin *e);   /* zeroed; no-op if present */
mattn_status mattn_builtin_backward(void *state, mattn_expert_grad_call *call);
int mattn_builtin_n_params(const void *state);
mattn_status mattn_builtin_param(void *state, int i, mattn_tensor *t);
/* Mark (need[b*T+s] = 1) every key the listed query rows can see. */
void mattn_builtin_mark_keys(const mattn_builtin *e, int B, int T, const int32_t *rows,
                             int64_t n_rows, uint8_t *need);
/* Y[rows] = X[rows] W^T for W (out x in) through the gather buffers xg
 * (n x in) and yg (n x out) when rows is a strict subset; returns FLOPs. */
double mattn_project_rows(const float *X, int ldx, const int32_t *rows, int64_t n, int64_t N,
                          const float *W, int out, int in, float *Y, int ldy, float *xg, float *yg);

/* PyTorch nn.Linear default init: U(-1/sqrt(in), 1/sqrt(in)). */
void mattn_init_uniform(float *w, size_t n, int fan_in, mattn_rng *r);
void mattn_init_normal(float *w, size_t n, double std, mattn_rng *r);

// ----------------------------------------------------------------------------
// controller (controller.c)

typedef struct mattn_controller {
    mattn_controller_kind kind;
    int D, Hc, K;
    float *w1;    /* (Hc, D+2)  controller.net.0.weight */
    float *b1;    /* (Hc)       controller.net.0.bias */
    float *w2;    /* (K, Hc)    controller.net.3.weight */
    float *b2;    /* (K)        controller.net.3.bias */
    float *g_w1, *g_b1, *g_w2, *g_b2;     /* gradients, allocated on first backward */
    int pos_len;      /* > 0: pos_t = (t + pos_offset)/(pos_len - 1); 0: t/(T - 1); < 0: pos_t = 0 */
    int pos_offset;   /* decoding: absolute position of the first row */
    int freeze_norm;  /* gradient checks only (docs/bayes-math.md §10.2): the forward keeps
                         the norm column of the previous forward's features, so finite
                         differences see the stop-gradient the analytic gradient uses */
    float prior_beta[MATTN_MAX_EXPERTS];  /* buffer controller.prior_beta */
    double prior[MATTN_MAX_EXPERTS];      /* b_i in double (docs/bayes-math.md §1.2) */
    double costs[MATTN_MAX_EXPERTS];
} mattn_controller;

/* Per-forward activations of the controller (carved from the layer arena). */
typedef struct mattn_ctrl_act {
    float *f;        /* (N, D+2) features */
    float *z1;       /* (N, Hc) pre-GELU */
    float *h;        /* (N, Hc) GELU output after dropout */
    float *logits;   /* (N, K) z2 */
    float *alpha;    /* (N, K) routing weights */
    float *beta_hat; /* (N, K) posterior concentrations (Bayesian) */
    double *a;       /* (N, K) beta_hat in double (Bayesian) */
    double *logg;    /* (N, K) ln g of the Dirichlet sample (training) */
    float *unc;      /* (N) Dirichlet entropy U_t (Bayesian) */
    double *kl;      /* (N) KL to the prior (Bayesian) */
    double kl_bar_grad[MATTN_MAX_EXPERTS]; /* kl_mode batch: dKL/da at the batch's mean a */
} mattn_ctrl_act;

/* The Bayesian prior beta_k = epsilon + beta_0 (1 - c_k) (docs/bayes-math.md
 * §1.2), in double, and the buffers a checkpoint stores: "costs" and
 * "controller.prior_beta", computed in float32 as PyTorch computes them. */
double mattn_prior_beta(const mattn_config *cfg, int k);
void mattn_prior_buffers(const mattn_config *cfg, float *costs, float *prior_beta);
mattn_status mattn_controller_init(mattn_controller *c, const mattn_config *cfg, mattn_rng *r);
void mattn_controller_free(mattn_controller *c);
/* Forward for N = B*T tokens; returns the aux loss in *aux. */
mattn_status mattn_controller_forward(const mattn_controller *c, const mattn_config *cfg,
                                      mattn_ctrl_act *act, const float *x, int B, int T,
                                      int training, uint64_t step, double *aux);
/* Asks for W1 (the bulk of a decode step's bytes in the controller) into L2,
 * ahead of the forward: for a caller with other work to do in between. */
void mattn_controller_prefetch(const mattn_controller *c);
/* softmax(v / tau) into out, in double, stable. */
void mattn_softmax_tau(const double *v, int K, double tau, float *out);
/* Top-k Gumbel weights (variant C, docs/bayes-math.md decision 3) from logits (route.c). */
void mattn_gumbel_topk(float *w, const float *logits, int64_t N, int K, int k, double tau,
                       uint64_t seed, uint64_t step);
double mattn_controller_flops(const mattn_controller *c, int64_t N);
/* Allocate (zeroed) gradient buffers if not yet there. */
mattn_status mattn_controller_alloc_grads(mattn_controller *c);
/* Backward of the last forward (act, step, training as there).  galpha (N,K):
 * dL/dalpha from the merge, or NULL; glogits (N,K): extra dL/dz2 (the Gumbel
 * path), or NULL; g_aux = dL/d(aux loss).  Accumulates the parameter
 * gradients and, if gx is non-NULL, dL/dx (N,D) (+=).  Scratch: gz2 (N,K),
 * gh (N,Hc). */
mattn_status mattn_controller_backward(mattn_controller *c, const mattn_config *cfg, const mattn_ctrl_act *act,
                                       int B, int T, int training, uint64_t step, const float *galpha,
                                       const float *glogits, double g_aux, float *gx, float *gz2, float *gh);
/* dL/dz2 of token n (of N) into gz2 (K): the routing-weight and aux-loss
 * terms (docs/bayes-math.md §6.5-§6.6, §5.5); sample: alpha was a Dirichlet sample. */
void mattn_controller_logits_grad(const mattn_controller *c, const mattn_config *cfg, const mattn_ctrl_act *act,
                                  int64_t n, int64_t N, int sample, const float *galpha, double g_aux, float *gz2);
/* Gradient of mattn_gumbel_topk's weights w.r.t. the logits (+= glogits). */
void mattn_gumbel_topk_backward(const float *gw, const float *logits, int64_t N, int K, int k, double tau,
                                uint64_t seed, uint64_t step, float *glogits);

/* sel[i] = 1 for the k largest v[i] (ties go to the lower index), else 0. */
static inline void mattn_topk_mask(const float *v, int K, int k, uint8_t *sel) {
    for (int i = 0; i < K; i++) sel[i] = 0;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < K; i++)
            if (!sel[i] && (best < 0 || v[i] > v[best])) best = i;
        sel[best] = 1;
    }
}

// ----------------------------------------------------------------------------
// layer internals shared with layer_io.c

char *mattn_layer_errbuf(mattn_layer *l);
/* The layer's config, for the model's routing schedules (knobs only). */
mattn_config *mattn_layer_cfg_mut(mattn_layer *l);

/* Refuse further decode steps until reset (a model step failed half-way,
 * after some layers' caches took the position). */
void mattn_layer_cache_poison(mattn_layer_cache *c);

// ----------------------------------------------------------------------------
// the layer's private state (layer.c, layer_decode.c, layer_io.c)

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
    int fB, fT, f_training, f_forced;    /* shape and mode of the last forward */
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

    /* the budget (budget.c): Lagrange multipliers (buffer "controller.duals":
     * cost, full share, then one usage floor per expert) and what the last
     * forward measured of the merge weights */
    int full_k;                          /* index of the "full" expert, -1 if none */
    double duals[2 + MATTN_MAX_EXPERTS];
    double m_cost, m_share[MATTN_MAX_EXPERTS];
    int m_valid;                         /* a training forward measured them */
};


int mattn_layer_is_builtin(const mattn_expert *e);
/* (Re)build the parameter table (after the gradients appear). */
mattn_status mattn_layer_build_params(mattn_layer *l);
mattn_status mattn_layer_plan(mattn_layer *l, int B, int T);
/* MATTN_ERR_NUMERIC naming the first weight that holds NaN/Inf. */
mattn_status mattn_layer_check_weights(mattn_layer *l);
/* Rows n = 0..N-1 are positions t0 + n % T of their sequences. */
void mattn_layer_route(mattn_layer *l, int64_t N, int T, int t0);
void mattn_layer_fill_stats(const mattn_layer *l, int64_t N, mattn_stats *s);

/* budget.c: is any constraint on; the term added to the aux loss, from the
 * merge weights of the N tokens just routed (it records what they measured);
 * its gradient added to dL/dweights (N,K) with g_aux = dL/d(aux). */
int mattn_budget_active(const mattn_config *cfg);
/* The "controller.duals" buffer of a file: its n values into duals, or an
 * error naming path and name when its shape is not [n] or a value is not
 * finite. */
mattn_status mattn_duals_read(const mattn_st_tensor *t, const char *path, int n, double *duals);
double mattn_budget_forward(mattn_layer *l, int64_t N);
void mattn_budget_backward(const mattn_layer *l, int64_t N, double g_aux, float *gw);

#endif
