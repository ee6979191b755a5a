/*
 * mattn_impl.h — internal declarations shared by the library's files:
 * error helpers, the invariant macro, the RNG, Dirichlet special functions,
 * GEMM, the attention kernels and the built-in expert plumbing.
 * Nothing here is public API.
 */
#ifndef MATTN_IMPL_H
#define MATTN_IMPL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "metaattn.h"

// ----------------------------------------------------------------------------
// errors, logging, invariants

#define MATTN_ERRMSG_LEN 512

/* Format a message into the thread-local last-error buffer; returns st. */
mattn_status mattn_set_error(mattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Same, also copying the message into a handle's buffer (may be NULL). */
mattn_status mattn_set_error_h(char *handle_buf, mattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mattn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void mattn_abort(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define MATTN_ABORT(...) mattn_abort(__FILE__, __LINE__, __VA_ARGS__)
#define MATTN_ASSERT(x) \
    do { if (!(x)) MATTN_ABORT("MATTN_ASSERT(%s) failed", #x); } while (0)

/* Monotonic wall-clock time in seconds (for mattn_stats.seconds). */
double mattn_now(void);

/* Allocation: the library calls these, never malloc & co. directly (status.c).
 * NULL on failure; free with mattn_free (public).  mattn_amalloc is 64-byte
 * aligned (free with mattn_afree). */
void *mattn_malloc(size_t n);
void *mattn_calloc(size_t n, size_t size);
void *mattn_realloc(void *p, size_t n);
char *mattn_strdup(const char *s);
void *mattn_amalloc(size_t n);
void mattn_afree(void *p);
/* Tests only.  Fault injection: counting from this call, allocation n
 * (1-based) fails, and every later one too if persistent; n = 0 turns it off.
 * mattn_alloc_live: allocations not yet freed (cJSON's count too once its
 * hooks are set to mattn_malloc/mattn_free, as tests/test_faults.c does). */
void mattn_fault_alloc(long n, int persistent);
long mattn_alloc_live(void);
long mattn_alloc_count(void);  /* allocations since mattn_fault_alloc (n > 0) */
/* Did an allocation of this thread fail since mattn_alloc_mark()?  Tells an
 * out-of-memory inside cJSON (when its hooks are ours) from a syntax error. */
void mattn_alloc_mark(void);
int mattn_alloc_failed(void);
/* Tests only: fill new mattn_malloc/mattn_amalloc blocks with `byte` (0xff:
 * every float NaN until written), -1 = off (default). */
void mattn_alloc_fill(int byte);
#define MATTN_ALIGN 64

/* Index of the first NaN/Inf in x[0..n), or n: saves refuse non-finite
 * weights, so a diverged run never writes a poisoned checkpoint. */
static inline size_t mattn_find_nonfinite(const float *x, size_t n) {
#ifdef MATTN_F64 /* the double build of the gradient tests: float is double */
    for (size_t i = 0; i < n; i++)
        if (!(x[i] - x[i] == 0.0)) return i;
    return n;
#endif
    for (size_t i0 = 0; i0 < n; i0 += 1024) {
        const size_t e = n - i0 < 1024 ? n : i0 + 1024;
        uint32_t bad = 0;  /* exponent all ones = Inf or NaN; an OR the compiler vectorises */
        for (size_t i = i0; i < e; i++) {
            uint32_t u;
            memcpy(&u, x + i, sizeof u);
            bad |= (~u & 0x7f800000u) == 0;
        }
        if (bad)
            for (size_t i = i0; i < e; i++)
                if (!(x[i] - x[i] == 0.0f)) return i;
    }
    return n;
}
static inline size_t mattn_align_up(size_t n) { return (n + MATTN_ALIGN - 1) & ~(size_t)(MATTN_ALIGN - 1); }

// ----------------------------------------------------------------------------
// RNG (spec/bayes_math.md §4): SplitMix64, xoshiro256**, per-token streams

typedef struct mattn_rng { uint64_t s[4]; } mattn_rng;

enum { MATTN_PURPOSE_DIRICHLET = 1, MATTN_PURPOSE_GUMBEL = 2,
       MATTN_PURPOSE_CTRL_DROPOUT = 3, MATTN_PURPOSE_INIT = 4, MATTN_PURPOSE_LM_DROPOUT = 5,
       MATTN_PURPOSE_DATA = 6, MATTN_PURPOSE_SAMPLE = 7,
       MATTN_PURPOSE_ATTN_DROPOUT = 16 /* + expert index */ };

uint64_t mattn_mix64(uint64_t z);
uint64_t mattn_splitmix64_next(uint64_t *state);
void mattn_rng_seed(mattn_rng *r, uint64_t seed);
uint64_t mattn_rng_next(mattn_rng *r);
uint64_t mattn_stream_seed(uint64_t base, uint64_t step, uint64_t n, uint64_t purpose);
double mattn_rng_u01(mattn_rng *r);                 /* open interval (0,1) */
double mattn_rng_normal(mattn_rng *r);              /* Box-Muller, 2 uniforms */
double mattn_rng_gamma(mattn_rng *r, double a, double *log_g); /* Marsaglia-Tsang */
/* Counter-based uniform in (0,1) for dropout masks: a pure function of
 * (key, i), so forward and backward regenerate the same mask. */
static inline double mattn_hash_u01(uint64_t key, uint64_t i) {
    return ((double)(mattn_mix64(key ^ (i * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL)) >> 11) + 0.5)
           * (1.0 / 9007199254740992.0);
}

// ----------------------------------------------------------------------------
// Dirichlet special functions (spec §2-§3), double precision

double mattn_digamma(double x);
double mattn_trigamma(double x);
double mattn_lgamma(double x);     /* thread-safe lgamma for x > 0 */
double mattn_dir_entropy(const double *a, int K, double *grad /* may be NULL */);
double mattn_dir_kl(const double *a, const double *b, int K, double *grad /* may be NULL */);
/* dg/da of a Gamma(a,1) sample g = x (implicit reparameterisation, PyTorch's
 * approximation, spec §5.2), and d ln g/da from ln g (§5.4). */
double mattn_gamma_grad(double a, double x);
double mattn_dlng_da(double a, double log_x);

// ----------------------------------------------------------------------------
// GEMM: C = alpha * op(A) op(B) + beta * C, row-major; sole CBLAS call site

void mattn_gemm(int transA, int transB, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb,
                float beta, float *C, int ldc);
const char *mattn_gemm_backend(void); /* which GEMM mattn_gemm runs, for reports */
void mattn_gemm_ref(int transA, int transB, int M, int N, int K, float alpha,
                    const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);

/* Dot product with 16 independent partial sums: without -ffast-math the
 * compiler may not reorder a float reduction, so one accumulator would run
 * scalar; 16 lanes vectorise (AVX-512: one register, AVX2: two).  The
 * summation order is fixed, so results stay deterministic. */
static inline float mattn_dot(const float *restrict a, const float *restrict b, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

/* y += alpha x */
static inline void mattn_axpy(float *restrict y, float alpha, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += alpha * x[i];
}

// ----------------------------------------------------------------------------
// attention kernels (one query row = one token; heads are column slices)

/* Geometry of q/k/v inside a (B,T,ld) buffer: q at column offset 0, k at kofs,
 * v at vofs, head h at h*dh. */
typedef struct mattn_attn_args {
    int B, T, H, dh;
    const float *q; const float *k; const float *v; int ld; /* row stride */
    float *out; int ldo;                                    /* (B,T,ldo), head h at h*dh */
    const int32_t *rows; int64_t n_rows;                    /* queries to compute (NULL: all) */
    const mattn_masks *masks;                               /* may be NULL */
    int causal;
    int window;            /* softmax: radius, < 0 = unlimited (full) */
    float dropout;         /* softmax: probability (0 = off) */
    uint64_t dropout_key;  /* softmax: stream key for the mask */
    float *lse;            /* softmax: (B,H,T) log-sum-exp cache or NULL */
} mattn_attn_args;

/* Gradients of an attention core: gout (B,T,ldgo) in, gq/gk/gv accumulated
 * (+=) into (B,T,ldg) buffers, head h at column h*dh of each. */
typedef struct mattn_attn_grad {
    const float *gout; int ldgo;
    float *gq, *gk, *gv; int ldg;
    float *state;          /* linear: mattn_attn_linear_backward_scratch() bytes */
} mattn_attn_grad;

/* Each returns the floating-point operations it executed; the tiled softmax
 * forward returns -1 when it cannot allocate its per-thread packs. */
double mattn_attn_softmax_forward(const mattn_attn_args *a);
double mattn_attn_softmax_forward_ref(const mattn_attn_args *a);
double mattn_attn_linear_forward(const mattn_attn_args *a);
double mattn_attn_linear_forward_ref(const mattn_attn_args *a);
/* Backward over every query row (a->rows must be NULL).  softmax needs a->lse
 * and a->out from its forward; linear needs a->out and g->state. */
int mattn_attn_softmax_backward(const mattn_attn_args *a, const mattn_attn_grad *g); /* -1: out of memory */
void mattn_attn_softmax_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g);
int mattn_attn_linear_backward(const mattn_attn_args *a, const mattn_attn_grad *g);   /* -1: out of memory */
void mattn_attn_linear_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g);
size_t mattn_attn_linear_backward_scratch(int B, int T, int H, int dh);

/* First index in rows[0..n) whose value is >= v (rows ascending). */
static inline int64_t mattn_lower_bound(const int32_t *rows, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (rows[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* fn(ctx, b, h, ws) for every (batch, head) in parallel (dynamic schedule;
 * a task owns its head's rows, so results do not depend on threads), each
 * thread with a work buffer of ws_floats floats.  Returns the sum of fn's
 * results (FLOP counts: integers, exact in any order), or -1 when a work
 * buffer could not be allocated — then fn never ran. */
typedef double (*mattn_head_fn)(void *ctx, int b, int h, float *ws);
double mattn_for_heads(int B, int H, size_t ws_floats, mattn_head_fn fn, void *ctx);

/* Key range [lo, hi] a query at t may see (before masks), for the softmax and
 * linear kernels; empty when lo > hi. */
static inline void mattn_attn_key_range(int t, int T, int causal, int window, int *lo, int *hi) {
    int l = 0, h = causal ? t : T - 1;
    if (window >= 0) {
        l = t - window > 0 ? t - window : 0;
        if (!causal) h = t + window < T - 1 ? t + window : T - 1;
    }
    *lo = l; *hi = h;
}

// ----------------------------------------------------------------------------
// built-in experts (experts.c, expert_full.c, expert_linear.c, expert_local.c)

extern const mattn_expert_vtable mattn_expert_full_vt;
extern const mattn_expert_vtable mattn_expert_linear_vt;
extern const mattn_expert_vtable mattn_expert_local_vt;

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
/* The vtable slots every built-in expert shares; each expert file adds its
 * name, cost and init. */
#define MATTN_BUILTIN_OPS                                                    \
    .free = mattn_builtin_free, .workspace_size = mattn_builtin_workspace_size, \
    .forward = mattn_builtin_forward, .n_params = mattn_builtin_n_params,    \
    .param = mattn_builtin_param, .backward = mattn_builtin_backward,             \
    .backward_workspace_size = mattn_builtin_backward_workspace_size, .shared_qkv = 1

/* Mark (need[b*T+s] = 1) every key the listed query rows can see. */
void mattn_builtin_mark_keys(const mattn_builtin *e, int B, int T, const int32_t *rows,
                             int64_t n_rows, uint8_t *need);
/* Backward of the core over all rows: gout (B,T,D) -> g_qkv (B,T,3D) (+=);
 * att and lse as the forward left them; scratch for the linear core. */
mattn_status mattn_builtin_core_backward(const mattn_builtin *e, const float *qkv, const float *att, const float *gout,
                                 float *g_qkv, int B, int T, const mattn_masks *masks, int training,
                                 uint64_t seed, uint64_t step, const float *lse, float *scratch);
/* Run the attention core of a built-in on qkv (B,T,3D) for rows -> att rows;
 * returns the FLOPs executed, or -1 when out of memory. */
double mattn_builtin_core(const mattn_builtin *e, const float *qkv, float *att, int B, int T,
                          const int32_t *rows, int64_t n_rows, const mattn_masks *masks,
                          int training, uint64_t seed, uint64_t step, float *lse);

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
    int pos_len;      /* > 0: pos_t = (t + pos_offset)/(pos_len - 1); 0: t/(T - 1) */
    int pos_offset;   /* decoding: absolute position of the first row */
    float prior_beta[MATTN_MAX_EXPERTS];  /* buffer controller.prior_beta */
    double prior[MATTN_MAX_EXPERTS];      /* b_i in double (spec §1.2) */
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
} mattn_ctrl_act;

extern int mattn_freeze_norm_feature;   /* tests only: see controller.c */
mattn_status mattn_controller_init(mattn_controller *c, const mattn_config *cfg, mattn_rng *r);
void mattn_controller_free(mattn_controller *c);
/* Forward for N = B*T tokens; returns the aux loss in *aux. */
mattn_status mattn_controller_forward(const mattn_controller *c, const mattn_config *cfg,
                                      mattn_ctrl_act *act, const float *x, int B, int T,
                                      int training, uint64_t step, double *aux);
/* Top-k Gumbel weights (variant C, spec decision 3) from logits. */
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
 * terms (spec §6.5-§6.6, §5.5); sample: alpha was a Dirichlet sample. */
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
// language-model building blocks (nn.c); backward passes accumulate (+=)

void mattn_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int64_t N, int C);
void mattn_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                              const float *mean, const float *rstd, const float *w, int64_t N, int C);
void mattn_gelu_forward(float *out, const float *x, int64_t n);
void mattn_gelu_backward(float *dx, const float *x, const float *dout, int64_t n);
void mattn_gelu_grad_mul(float *g, const float *x, int64_t n);  /* g *= GELU'(x) */
void mattn_linear_forward(float *out, const float *x, const float *W, const float *b, int64_t N, int I, int O);
void mattn_linear_backward(float *dx, float *dW, float *db, const float *dout, const float *x, const float *W,
                           int64_t N, int I, int O);
void mattn_embed_forward(float *out, const int32_t *idx, const float *tok, const float *pos, int B, int T, int C);
void mattn_embed_backward(float *dtok, float *dpos, const float *dout, const int32_t *idx, int B, int T, int C);
void mattn_dropout_forward(float *out, const float *x, int64_t n, float p, uint64_t key);
void mattn_dropout_backward(float *dx, const float *dout, int64_t n, float p, uint64_t key);
double mattn_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int64_t N, int V,
                                  int64_t *n_counted);
void mattn_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int64_t N, int V,
                                 int64_t count, float dloss);

// ----------------------------------------------------------------------------
// layer internals shared with layer_io.c

char *mattn_layer_errbuf(mattn_layer *l);
/* The layer's config, for the model's routing schedules (knobs only). */
mattn_config *mattn_layer_cfg_mut(mattn_layer *l);

/* Refuse further decode steps until reset (a model step failed half-way,
 * after some layers' caches took the position). */
void mattn_layer_cache_poison(mattn_layer_cache *c);

#endif
