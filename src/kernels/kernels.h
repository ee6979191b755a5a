/*
 * kernels.h — the kernels floor, internal: GEMM, dot products, the softmax
 * and linear attention cores with their plain reference twins.  Kernels
 * take their scratch from the caller.
 */
#ifndef MATTN_KERNELS_H
#define MATTN_KERNELS_H

#include <math.h>

#include "base/base.h"
#include "kernels/quant.h" /* products with GGUF-quantised weights */

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

/* Geometry: q (B,T,ld) and out (B,T,ldo), query head h at column h*dh; k and
 * v (B,Tk,ldkv), K/V head j at column j*dh (q, k, v may be column slices of
 * one fused buffer).  The defaults of the last three fields (0) give plain
 * multi-head attention of T queries over their own T keys.
 *
 * Grouped-query attention (kv_group = g > 1): H query heads share H/g K/V
 * heads, query head h reading K/V head h / g (H a multiple of g).
 * A query chunk against a cache (Tk > T): each sequence has Tk keys and its
 * T queries are the last T positions, query row t at position Tk - T + t;
 * causality and windows are in positions (query t sees keys <= Tk - T + t
 * when causal).  Then key_padding is (B,Tk), the additive mask (T,Tk) or
 * (B,T,Tk) (query rows by keys), lse stays (B,H,T), rows index the (B,T)
 * query rows, and the scratch is sized for Tk keys.  The backward passes
 * take the defaults only (MHA, Tk = T, ldkv = ld) and sinks. */
/* Where a cache keeps its keys and values, when not as the rows above:
 * position s of K/V head j at element s*ld + j*hstride of k and of v, as
 * floats or (f16 != 0) IEEE halves — a LLaMA-style model's cache, head by
 * head (hstride = context*dh, ld = dh) so that a head's keys are one
 * sequential stream. */
typedef struct mattn_kv {
    const void *k, *v;
    int64_t ld, hstride;
    int f16;
} mattn_kv;

/* Keys and values packed as the grouped forward reads them, kept by the
 * caller across the chunks of one sequence (B = 1): K/V head j's keys
 * [0, n) in its slot of buf (mattn_attn_pack_bytes(cap, dh, n_kv_heads)
 * bytes, zeroed once).  A forward with .pack packs only its new keys
 * [n, Tk) and sets n = Tk, so a prefill in chunks packs each key once
 * instead of every chunk's whole prefix; the owner sets n = 0 when the keys
 * behind it change (another layer, a reset cache).  The same bits as
 * without it. */
typedef struct mattn_attn_pack {
    float *buf;
    int cap, n;
} mattn_attn_pack;
size_t mattn_attn_pack_bytes(int cap, int dh, int n_kv_heads);

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
    void *scratch;         /* per-thread packing buffers (kernels never allocate): */
    size_t scratch_bytes;  /* mattn_attn_*_scratch() bytes for the team that runs */
    int kv_group;          /* softmax: query heads per K/V head (0 or 1: multi-head) */
    int ldkv;              /* softmax: row stride of k and v (0: ld) */
    int Tk;                /* softmax: keys per sequence, >= T (0: T) */
    const mattn_kv *kv;    /* softmax forwards: keys and values from this view (batch b's position s at
                            * b*Tk + s) instead of k, v, ldkv (NULL: those) */
    int sinks;             /* softmax, causal: keys [0, sinks) stay visible beside the window
                            * (attention sinks; 0: none) */
    mattn_attn_pack *pack; /* softmax forwards with kv_group > 1 and B = 1: the keys packed across calls
                            * (NULL: each call packs what its rows see in the scratch) */
} mattn_attn_args;

/* Gradients of an attention core: gout (B,T,ldgo) in, gq/gk/gv accumulated
 * (+=) into (B,T,ldg) buffers, head h at column h*dh of each. */
typedef struct mattn_attn_grad {
    const float *gout; int ldgo;
    float *gq, *gk, *gv; int ldg;
    float *state;          /* linear: mattn_attn_linear_backward_scratch() bytes */
} mattn_attn_grad;

/* Bytes of scratch a call needs for a team of `threads` (the forward or the
 * backward of a (T, dh) problem, T the keys per sequence: Tk when set); a
 * call runs at most as many threads as its scratch holds slots for, and
 * fails (-1) when it holds none. */
size_t mattn_attn_softmax_scratch(int T, int dh, int backward, int threads);
size_t mattn_attn_linear_scratch(int backward, int threads);

/* Each returns the floating-point operations it executed, or -1 when
 * a->scratch is too small for one thread. */
double mattn_attn_softmax_forward(const mattn_attn_args *a);
/* n forwards over one query chunk in one pass: calls with the same queries,
 * keys (k/v or kv), B, T, Tk, H, dh, kv_group, causal and scratch, each with
 * its own rows, window, sinks, masks, dropout and out (rows of different
 * calls disjoint); with grouped-query heads the keys every call's rows see
 * are packed once per thread and K/V head for all of them, the threads
 * share the tiles by cost.  Each call's output is what its own forward
 * gives; returns the FLOPs summed (-1: scratch too small). */
double mattn_attn_softmax_forward_n(const mattn_attn_args *calls, int n);
double mattn_attn_softmax_forward_ref(const mattn_attn_args *a);
double mattn_attn_linear_forward(const mattn_attn_args *a);
double mattn_attn_linear_forward_ref(const mattn_attn_args *a);
/* Backward over every query row (a->rows must be NULL).  softmax needs a->lse
 * and a->out from its forward; linear needs a->out and g->state. */
int mattn_attn_softmax_backward(const mattn_attn_args *a, const mattn_attn_grad *g); /* -1: scratch too small */
void mattn_attn_softmax_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g);
int mattn_attn_linear_backward(const mattn_attn_args *a, const mattn_attn_grad *g);   /* -1: scratch too small */
void mattn_attn_linear_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g);
size_t mattn_attn_linear_backward_scratch(int B, int T, int H, int dh);

/* Decoding: one new query per sequence against its cache.
 * softmax: q (H*dh) against keys/values of positions [lo, hi] stored as rows
 * of K and V with stride ldkv (ring > 0: position s at row s % ring) -> out
 * (H*dh); query head h reads K/V head h / kv_group at column
 * (h / kv_group)*dh (kv_group 0 or 1: multi-head, K/V head h at h*dh; a
 * grouped cache has rows of H/kv_group*dh); _decode_kv reads any mattn_kv
 * view (position s at element s*ld, ring or not) and also the attention
 * sinks [0, min(sinks, lo)) beside [lo, hi] (not with a ring), _decode_gqa
 * is it on rows of floats without sinks.  mattn_attn_softmax_decode is the multi-head form with K/V
 * rows of stride D.  linear: the running state
 * of one sequence, S (H, dh, dh) then z (H, dh) — update adds phi(k) v^T and
 * phi(k), query reads phi(q)^T S / (phi(q)^T z + 1e-6).  Each returns its
 * FLOPs; the _ref twins are the plain formulas in double. */
double mattn_attn_softmax_decode_kv(const float *q, const mattn_kv *kv, int H, int kv_group, int dh, int sinks,
                                    int lo, int hi, int ring, float *out);
double mattn_attn_softmax_decode_kv_ref(const float *q, const mattn_kv *kv, int H, int kv_group, int dh, int sinks,
                                        int lo, int hi, int ring, float *out);
static inline double mattn_attn_softmax_decode_gqa(const float *q, const float *K, const float *V, int ldkv, int H,
                                                   int kv_group, int dh, int lo, int hi, int ring, float *out) {
    const mattn_kv kv = {K, V, ldkv, dh, 0};
    return mattn_attn_softmax_decode_kv(q, &kv, H, kv_group, dh, 0, lo, hi, ring, out);
}
static inline double mattn_attn_softmax_decode_gqa_ref(const float *q, const float *K, const float *V, int ldkv,
                                                       int H, int kv_group, int dh, int lo, int hi, int ring,
                                                       float *out) {
    const mattn_kv kv = {K, V, ldkv, dh, 0};
    return mattn_attn_softmax_decode_kv_ref(q, &kv, H, kv_group, dh, 0, lo, hi, ring, out);
}
static inline double mattn_attn_softmax_decode(const float *q, const float *K, const float *V, int D, int H, int dh,
                                               int lo, int hi, int ring, float *out) {
    return mattn_attn_softmax_decode_gqa(q, K, V, D, H, 1, dh, lo, hi, ring, out);
}
static inline double mattn_attn_softmax_decode_ref(const float *q, const float *K, const float *V, int D, int H,
                                                   int dh, int lo, int hi, int ring, float *out) {
    return mattn_attn_softmax_decode_gqa_ref(q, K, V, D, H, 1, dh, lo, hi, ring, out);
}
double mattn_attn_linear_decode_update(float *state, const float *k, const float *v, int H, int dh);
double mattn_attn_linear_decode_update_ref(float *state, const float *k, const float *v, int H, int dh);
double mattn_attn_linear_decode_query(const float *state, const float *q, float *out, int H, int dh);
double mattn_attn_linear_decode_query_ref(const float *state, const float *q, float *out, int H, int dh);

/* phi(x) = ELU(x) + 1, the linear core's feature map (simd.h has vphi). */
static inline float mattn_phi(float x) { return x > 0.0f ? x + 1.0f : expf(x); }

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
 * thread with its own ws_floats floats of the scratch (as many threads as
 * it has slots for, at most the OpenMP team size).  Returns the sum of fn's
 * results (FLOP counts: integers, exact in any order), or -1 when the
 * scratch holds no slot — then fn never ran. */
typedef double (*mattn_head_fn)(void *ctx, int b, int h, float *ws);
/* Bytes of scratch for `threads` slots of ws_floats floats. */
size_t mattn_heads_scratch(size_t ws_floats, int threads);
double mattn_for_heads(int B, int H, size_t ws_floats, void *scratch, size_t scratch_bytes, mattn_head_fn fn,
                       void *ctx);

/* Packing for the tiled softmax kernels (attn_pack.c): keys [s0, s0+nb)
 * of a head transposed into Kt (dh x ncols, rows of ldt, zero columns from
 * nb), or rows [s0, s0+n) as X (nmax rows of dhp, times mult, zero-padded);
 * the _f16 forms from a cache view's halves (position s at element s*ld). */
void mattn_pack_kt(const float *k, int ld, int s0, int nb, int dh, float *restrict Kt, int ldt, int ncols);
void mattn_pack_kt_f16(const uint16_t *k, int64_t ld, int s0, int nb, int dh, float *restrict Kt, int ldt, int ncols);
void mattn_pack_rows(const float *x, int ld, int s0, int n, int dh, int dhp, int nmax, float *restrict X, float mult);
void mattn_pack_rows_f16(const uint16_t *x, int64_t ld, int s0, int n, int dh, int dhp, int nmax, float *restrict X);

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
// vector functions (gelu.c)

void mattn_gelu_forward(float *out, const float *x, int64_t n);
void mattn_gelu_backward(float *dx, const float *x, const float *dout, int64_t n);
void mattn_gelu_grad_mul(float *g, const float *x, int64_t n);  /* g *= GELU'(x) */
void mattn_gelu_forward_ref(float *out, const float *x, int64_t n);
void mattn_gelu_backward_ref(float *dx, const float *x, const float *dout, int64_t n);

#endif
