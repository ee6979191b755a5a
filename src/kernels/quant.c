/*
 * quant.c — y = x · Wᵀ with W in GGUF storage (quant.h), and its reference.
 *
 * Two ways in, one per kind of weight:
 *
 *  - quantised weights (Q8_0, Q4_0, Q4_1): x is quantised on the fly to
 *    8-bit blocks of 32, as llama.cpp does (its Q8_0 / Q8_1), but with fp32
 *    scales: d = max|x| / 127, q = round(x / d), s = d Σq.  Every weight
 *    block is 32 unsigned bytes u (the nibbles; Q8_0's int8 + 128) with
 *    w = d_w (u - z) or d_w u + m, so a block's product is one exact integer
 *    dot product (simd.h's vdot4_u8s8: vpdpbusd on AVX512-VNNI/AVX-VNNI)
 *    and two float terms:
 *        Σ_j w_j x̂_j = d_w d_x Σ_j u_j q_j + c_b s,   c_b = m (Q4_1), -8 d_w (Q4_0), -128 d_w (Q8_0)
 *    Tiles of 4 rows of x × 4 rows of W; M = 1 is the same code with one
 *    row of x.  Measured against keeping x in fp32 and dequantising W in
 *    registers (GEMV) or into a panel (GEMM): 1.4–2× faster at M = 1 and
 *    1.1–1.3× at M = 64 on this machine (bench/quant_act.c in the history,
 *    docs/performance.md), for the approximation quant.h bounds.
 *  - float weights (F32, F16, BF16): x stays fp32; the GEMV converts W in
 *    registers, the GEMM converts NB rows at a time into a per-thread panel
 *    and runs microkernel.h's S = X Yᵀ on it.
 */
#ifndef MATTN_F64

#include <float.h>
#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/kernels.h"
#include "kernels/microkernel.h"

/* 32-byte vectors pass between static inline functions only (simd.h) */
#pragma GCC diagnostic ignored "-Wpsabi"

#define QK MATTN_GGML_QK           /* elements per block (and per GEMV step for every type) */
#define NVB (QK / MATTN_VL)        /* vectors per block: 2 (AVX-512), 4 (AVX2), 8 (SSE) */
#define GR 4                       /* rows of W per step (one load of x for GR rows) */
#define TM 4                       /* quantised: rows of x per tile */
#define NB CW                      /* float GEMM: rows of W per panel = the micro-kernel's columns */
#define PAR_BYTES (96 << 10)       /* one thread below this many weight bytes x rows of x */
/* Weight bytes to prefetch ahead of each row's stream: a decode step reads
 * every matrix once, cold, in GR streams the hardware prefetchers do not
 * carry across 4 KiB pages; a page ahead took one thread's SmolLM2 decode
 * from 50 to 80 tokens/s (512 B: 58, 2 KiB: 70, 8 KiB: 80). */
#define QPF_AHEAD 4096

typedef uint8_t q_vb __attribute__((vector_size(MATTN_VL)));  /* MATTN_VL bytes */
typedef uint8_t q_v16u8 __attribute__((vector_size(16)));
typedef uint8_t q_vlu8 __attribute__((vector_size(MATTN_VL)));   /* MATTN_VL bytes, one per lane */

/* Little-endian 16 bits (the reader refuses big-endian files; x86 and ARM
 * Linux are little-endian). */
static inline uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline size_t block_bytes(int t) { return t == MATTN_GGML_Q8_0 ? 34 : t == MATTN_GGML_Q4_0 ? 18 : 20; }

/* The 32 unsigned bytes u of a weight block (element j at byte j). */
static inline __attribute__((always_inline)) mattn_v32u8 w_bytes(int t, const uint8_t *p) {
    if (t == MATTN_GGML_Q8_0) {
        mattn_v32u8 q;
        memcpy(&q, p + 2, 32);
        return q ^ 0x80;
    }
    q_v16u8 q; /* byte j: element j (low nibble), j + 16 (high) */
    memcpy(&q, p + (t == MATTN_GGML_Q4_1 ? 4 : 2), 16);
    return __builtin_shufflevector(q & 15, q >> 4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                   19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
}

/* Elements 32b .. 32b+31 of a row of type t as NVB vectors, exactly
 * mattn_gguf_dequant_ref's values (the float conversions are exact, the
 * quantised types round as the reference does). */
static inline __attribute__((always_inline)) void deq_block(int t, const uint8_t *row, int b, mattn_vf *w) {
    switch (t) {
    case MATTN_GGML_F32:
        for (int v = 0; v < NVB; v++) w[v] = vload((const float *)(const void *)row + QK * b + v * MATTN_VL);
        break;
    case MATTN_GGML_F16:
        for (int v = 0; v < NVB; v++) w[v] = vload_f16(row + 2 * (QK * b + v * MATTN_VL));
        break;
    case MATTN_GGML_BF16:
        for (int v = 0; v < NVB; v++) {
            mattn_vh h;
            memcpy(&h, row + 2 * (QK * b + v * MATTN_VL), sizeof h);
            w[v] = (mattn_vf)(__builtin_convertvector(h, mattn_vu) << 16);
        }
        break;
    default: { /* quantised (the fp32-activation path): w = d (u - z) or d u + m, as the reference rounds */
        const uint8_t *p = row + block_bytes(t) * (size_t)b;
        const mattn_v32u8 u = w_bytes(t, p);
        const float d = mattn_h2f(ld16(p)), m = t == MATTN_GGML_Q4_1 ? mattn_h2f(ld16(p + 2)) : 0.0f;
        const int z = t == MATTN_GGML_Q4_1 ? 0 : t == MATTN_GGML_Q4_0 ? 8 : 128;
        for (int v = 0; v < NVB; v++) {
            q_vlu8 uv;
            memcpy(&uv, (const uint8_t *)&u + v * MATTN_VL, sizeof uv);
            const mattn_vf f = __builtin_convertvector(__builtin_convertvector(uv, mattn_vi) - z, mattn_vf);
            w[v] = t == MATTN_GGML_Q4_1 ? f * d + m : f * d;
        }
        break;
    }
    }
}

/* Element k of a row of a float type (the last K % 32 of F32/F16/BF16 rows). */
static inline float deq_one(int t, const uint8_t *row, int k) {
    if (t == MATTN_GGML_F32) return ((const float *)(const void *)row)[k];
    const uint16_t h = ld16(row + 2 * (size_t)k);
    if (t == MATTN_GGML_F16) return mattn_h2f(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// ----------------------------------------------------------------------------
// float weights, GEMV: y[n] = <x, W_n> for n in [n0, n1), GR rows per step,
// two vector accumulators per row (alternate vectors of a block), the tail

static inline __attribute__((always_inline)) void gemv_step(int t, int R, const uint8_t *W, size_t rb,
                                                            const float *x, float *y, int n, int K) {
    const int nb = K / QK;
    mattn_vf acc[GR][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vset1(0.0f);
    for (int b = 0; b < nb; b++) {
        mattn_vf xv[NVB];
        for (int v = 0; v < NVB; v++) xv[v] = vload(x + QK * b + v * MATTN_VL);
        for (int r = 0; r < R; r++) {
            mattn_vf w[NVB];
            __builtin_prefetch(W + (size_t)(n + r) * rb + (size_t)b * (rb / nb) + QPF_AHEAD);
            deq_block(t, W + (size_t)(n + r) * rb, b, w);
            for (int v = 0; v < NVB; v++) acc[r][v & 1] += w[v] * xv[v];
        }
    }
    for (int r = 0; r < R; r++) {
        float s = vhsum(acc[r][0] + acc[r][1]);
        for (int k = nb * QK; k < K; k++) s += x[k] * deq_one(t, W + (size_t)(n + r) * rb, k);
        y[n + r] = s;
    }
}

static inline __attribute__((always_inline)) void gemv_rows(int t, const uint8_t *W, size_t rb, const float *x,
                                                            float *y, int n0, int n1, int K) {
    int n = n0;
    for (; n + GR <= n1; n += GR) gemv_step(t, GR, W, rb, x, y, n, K);
    for (; n < n1; n++) gemv_step(t, 1, W, rb, x, y, n, K);
}

// float weights, GEMM: rows [n0, n0 + nc) of W converted into P (K, NB),
// transposed and zero-padded to NB columns, for the micro-kernel S = X Pᵀ
// (microkernel.h)

static inline __attribute__((always_inline)) void panel_rows(int t, const uint8_t *W, size_t rb, int n0, int nc,
                                                             int K, float *restrict P) {
    const int nb = K / QK;
    for (int j = 0; j < NB; j++) {
        if (j >= nc) {
            for (int k = 0; k < K; k++) P[(size_t)k * NB + j] = 0.0f;
            continue;
        }
        const uint8_t *row = W + (size_t)(n0 + j) * rb;
        for (int b = 0; b < nb; b++) {
            _Alignas(64) float buf[QK];
            mattn_vf w[NVB];
            deq_block(t, row, b, w);
            for (int v = 0; v < NVB; v++) vstore(buf + v * MATTN_VL, w[v]);
            for (int e = 0; e < QK; e++) P[(size_t)(QK * b + e) * NB + j] = buf[e];
        }
        for (int k = nb * QK; k < K; k++) P[(size_t)k * NB + j] = deq_one(t, row, k);
    }
}


// ----------------------------------------------------------------------------
// quantised weights: x's 8-bit blocks (q (M, K) int8, d and s (M, K/32)
// floats, carved from the scratch), the weights' unsigned bytes, the tiles

typedef struct { int8_t *q; float *d, *s; } xq_t;

static size_t xq_bytes(int M, int K) {
    return mattn_align_up((size_t)M * K) + 2 * mattn_align_up(sizeof(float) * (size_t)M * (K / QK));
}

static void xq_carve(char *scratch, int M, int K, xq_t *o) {
    o->q = (int8_t *)scratch;
    o->d = (float *)(void *)(scratch + mattn_align_up((size_t)M * K));
    o->s = (float *)(void *)((char *)o->d + mattn_align_up(sizeof(float) * (size_t)M * (K / QK)));
}

/* Row i of x to 8-bit blocks: d = max|x| / 127 (0 for a zero block: q = 0),
 * q = x / d rounded to nearest (|q| <= 127), s = d Σq. */
static void quantize_row_x(const float *x, int K, int8_t *q, float *d, float *s) {
    typedef int8_t q_vsb __attribute__((vector_size(MATTN_VL)));
    for (int b = 0; b < K / QK; b++, x += QK, q += QK) {
        mattn_vf a = vset1(0.0f), z = vset1(0.0f);
        for (int v = 0; v < NVB; v++) {
            const mattn_vf xv = vload(x + v * MATTN_VL);
            a = vmax(a, vmax(xv, -xv));
            z += xv - xv; /* 0 unless a lane is Inf or NaN (which vmax may drop) */
        }
        const float amax = vhmax(a), db = amax / 127, id = db != 0.0f ? 1.0f / db : 0.0f;
        if (vhsum(z) != 0.0f) { /* x not finite (an overflowing model): the block's products become NaN, which
                                 * the caller's check reports, instead of undefined float-to-int conversions */
            memset(q, 0, QK);
            d[b] = s[b] = NAN;
            continue;
        }
        mattn_vi sum = {0};
        for (int v = 0; v < NVB; v++) {
            /* nearest, |r| <= 127; a block so small that 1 / d overflows (subnormal d) divides instead */
            const mattn_vf xv = vload(x + v * MATTN_VL), xs = id <= FLT_MAX ? xv * id : xv / vset1(db);
            const mattn_vf r = (xs + 0x1.8p23f) - 0x1.8p23f;
            const mattn_vi qi = __builtin_convertvector(r, mattn_vi);
            const q_vsb qb = __builtin_convertvector(qi, q_vsb);
            memcpy(q + v * MATTN_VL, &qb, sizeof qb);
            sum += qi;
        }
        int n = 0;
        for (int l = 0; l < MATTN_VL; l++) n += sum[l];
        d[b] = db, s[b] = db * (float)n;
    }
}

static inline float hsum8(mattn_v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

/* y[i][n] for i in [i0, i0 + MI), n in [n0, n0 + NR): per block one integer
 * dot product per (i, n), converted and scaled into 8 float lanes, and the
 * block's c_b s term summed apart. */
static inline __attribute__((always_inline)) void qtile(int t, int MI, int NR, const uint8_t *W, size_t rb,
                                                        const xq_t *x, int i0, int n0, int K, float *y, int N) {
    const int nb = K / QK;
    const size_t bb = block_bytes(t);
    mattn_v8f acc[TM][GR];
    float corr[TM][GR];
    for (int i = 0; i < MI; i++)
        for (int r = 0; r < NR; r++) acc[i][r] = (mattn_v8f){0}, corr[i][r] = 0.0f;
    for (int b = 0; b < nb; b++) {
        mattn_v32u8 u[GR];
        float dw[GR], c[GR];
        for (int r = 0; r < NR; r++) {
            const uint8_t *p = W + (size_t)(n0 + r) * rb + bb * b;
            __builtin_prefetch(p + QPF_AHEAD);
            u[r] = w_bytes(t, p);
            dw[r] = mattn_h2f(ld16(p));
            c[r] = t == MATTN_GGML_Q4_1 ? mattn_h2f(ld16(p + 2)) : (t == MATTN_GGML_Q4_0 ? -8.0f : -128.0f) * dw[r];
        }
        for (int i = 0; i < MI; i++) {
            mattn_v32s8 xb;
            memcpy(&xb, x->q + (size_t)(i0 + i) * K + QK * b, 32);
            const float dx = x->d[(size_t)(i0 + i) * nb + b], sx = x->s[(size_t)(i0 + i) * nb + b];
            for (int r = 0; r < NR; r++) {
                const mattn_v8i dot = vdot4_u8s8((mattn_v8i){0}, u[r], xb);
                acc[i][r] += __builtin_convertvector(dot, mattn_v8f) * (dw[r] * dx);
                corr[i][r] += c[r] * sx;
            }
        }
    }
    for (int i = 0; i < MI; i++)
        for (int r = 0; r < NR; r++) y[(size_t)(i0 + i) * N + n0 + r] = hsum8(acc[i][r]) + corr[i][r];
}

/* Rows [n0, n1) of y^T: GR rows of W at a time against TM rows of x, then
 * single rows of each. */
static inline __attribute__((always_inline)) void qrows(int t, const uint8_t *W, size_t rb, const xq_t *x, int M,
                                                        int n0, int n1, int K, float *y, int N) {
    int n = n0;
    for (; n + GR <= n1; n += GR) {
        int i = 0;
        for (; i + TM <= M; i += TM) qtile(t, TM, GR, W, rb, x, i, n, K, y, N);
        for (; i < M; i++) qtile(t, 1, GR, W, rb, x, i, n, K, y, N);
    }
    for (; n < n1; n++) {
        int i = 0;
        for (; i + TM <= M; i += TM) qtile(t, TM, 1, W, rb, x, i, n, K, y, N);
        for (; i < M; i++) qtile(t, 1, 1, W, rb, x, i, n, K, y, N);
    }
}

// ----------------------------------------------------------------------------
// one instance of each per type, so that the type's branches fold away

typedef struct {
    const uint8_t *W;
    size_t rb;
    const float *x;
    float *y;
    int M, N, K;
    xq_t xq;
} job;
typedef void (*rows_fn)(const job *j, int n0, int n1);              /* y[:, n0:n1) */
typedef void (*panel_fn)(const uint8_t *W, size_t rb, int n0, int nc, int K, float *P);

#define FLOAT_TYPE(name, T)                                                                                \
    static void rows_##name(const job *j, int n0, int n1) { gemv_rows(T, j->W, j->rb, j->x, j->y, n0, n1, j->K); } \
    static void panel_##name(const uint8_t *W, size_t rb, int n0, int nc, int K, float *P) {              \
        panel_rows(T, W, rb, n0, nc, K, P);                                                                \
    }
#define QUANT_TYPE(name, T) \
    static void rows_##name(const job *j, int n0, int n1) { qrows(T, j->W, j->rb, &j->xq, j->M, n0, n1, j->K, j->y, j->N); }
FLOAT_TYPE(f32, MATTN_GGML_F32)
FLOAT_TYPE(f16, MATTN_GGML_F16)
FLOAT_TYPE(bf16, MATTN_GGML_BF16)
QUANT_TYPE(q8_0, MATTN_GGML_Q8_0)
QUANT_TYPE(q4_0, MATTN_GGML_Q4_0)
QUANT_TYPE(q4_1, MATTN_GGML_Q4_1)
FLOAT_TYPE(q8_0_f32x, MATTN_GGML_Q8_0) /* fp32 activations: the weights dequantised in registers / panels */
FLOAT_TYPE(q4_0_f32x, MATTN_GGML_Q4_0)
FLOAT_TYPE(q4_1_f32x, MATTN_GGML_Q4_1)

/* The type's row function and, for the float types (every type with fp32
 * activations), its panel function. */
static int kernels_of(mattn_ggml_type t, int f32x, rows_fn *rf, panel_fn *pf) {
    *pf = NULL;
    switch (t) {
    case MATTN_GGML_F32: *rf = rows_f32, *pf = panel_f32; return 0;
    case MATTN_GGML_F16: *rf = rows_f16, *pf = panel_f16; return 0;
    case MATTN_GGML_BF16: *rf = rows_bf16, *pf = panel_bf16; return 0;
    case MATTN_GGML_Q8_0: if (f32x) *rf = rows_q8_0_f32x, *pf = panel_q8_0_f32x; else *rf = rows_q8_0; return 0;
    case MATTN_GGML_Q4_0: if (f32x) *rf = rows_q4_0_f32x, *pf = panel_q4_0_f32x; else *rf = rows_q4_0; return 0;
    case MATTN_GGML_Q4_1: if (f32x) *rf = rows_q4_1_f32x, *pf = panel_q4_1_f32x; else *rf = rows_q4_1; return 0;
    }
    return -1;
}

// ----------------------------------------------------------------------------
// drivers and entry points

size_t mattn_qmatmul_row_bytes(mattn_ggml_type type, int K) {
    if (K < 0 || !mattn_gguf_type_supported(type) || K % mattn_gguf_block_size(type)) return 0;
    return mattn_gguf_nbytes(type, K);
}

static int is_quantised(mattn_ggml_type t) { return mattn_gguf_block_size(t) > 1; }

/* Float GEMM: one thread's slot, the panel (K, NB) and the (M, NB) tile of
 * a last, narrower panel. */
static size_t slot_bytes(int M, int K) {
    return mattn_align_up((size_t)K * NB * sizeof(float)) + mattn_align_up((size_t)M * NB * sizeof(float));
}

static size_t scratch_bytes_of(mattn_ggml_type type, int M, int K, int threads, int f32x) {
    if (M <= 0 || K <= 0 || !mattn_gguf_type_supported(type)) return 0;
    if (is_quantised(type) && !f32x) return xq_bytes(M, K);
    return M == 1 ? 0 : (size_t)(threads > 0 ? threads : 1) * slot_bytes(M, K);
}
size_t mattn_qmatmul_scratch(mattn_ggml_type type, int M, int K, int threads) {
    return scratch_bytes_of(type, M, K, threads, 0);
}
size_t mattn_qmatmul_scratch_f32x(mattn_ggml_type type, int M, int K, int threads) {
    return scratch_bytes_of(type, M, K, threads, 1);
}

static int team_size(size_t slots, int tasks) {
    int team = mattn_max_threads();
    if ((size_t)team > slots) team = (int)slots;
    if (team > tasks) team = tasks;
    return team > 0 ? team : 1;
}

/* Rows of the nj matrices of js (one x, one K and type; their rows taken as
 * one run) in contiguous ranges of whole groups of GR per matrix
 * (schedule(static) over the groups of all of them), after the quantised
 * types' x blocks (rows of x split the same way; js[0]'s, which every job
 * shares).  One parallel region for the lot: a decode step's q, k, v (or
 * gate, up) are one fork/join, and x is quantised once. */
static void run_rows(rows_fn rf, job *js, int nj, int quantised) {
    int groups = 0;
    size_t bytes = 0;
    for (int i = 0; i < nj; i++) groups += (js[i].N + GR - 1) / GR, bytes += js[i].rb * (size_t)js[i].N * js[i].M;
    const int team = bytes >= PAR_BYTES ? team_size((size_t)groups, groups) : 1;
    (void)team; /* only read by OpenMP clauses */
    const job *j0 = &js[0];
    #pragma omp parallel num_threads(team)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        if (quantised) {
            const int nb = j0->K / QK;
            #pragma omp for schedule(static)
            for (int i = 0; i < j0->M; i++)
                quantize_row_x(j0->x + (size_t)i * j0->K, j0->K, j0->xq.q + (size_t)i * j0->K,
                               j0->xq.d + (size_t)i * nb, j0->xq.s + (size_t)i * nb);
        }
        const int g0 = (int)((int64_t)groups * tid / nt), g1 = (int)((int64_t)groups * (tid + 1) / nt);
        for (int i = 0, off = 0; i < nj; off += (js[i].N + GR - 1) / GR, i++) {
            const int gi = (js[i].N + GR - 1) / GR;
            const int lo = g0 > off ? g0 - off : 0, hi = g1 - off < gi ? g1 - off : gi;
            const int n1 = hi * GR < js[i].N ? hi * GR : js[i].N;
            if (lo < hi && lo * GR < n1) rf(&js[i], lo * GR, n1);
        }
    }
}

static void run_panels(panel_fn pf, const job *j, char *scratch, size_t slots) {
    const int M = j->M, N = j->N, K = j->K, panels = (N + NB - 1) / NB;
    const size_t slot = slot_bytes(M, K), pbytes = mattn_align_up((size_t)K * NB * sizeof(float));
    (void)slots; /* only read by OpenMP clauses */
    #pragma omp parallel num_threads(team_size(slots, panels))
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *P = (float *)(void *)(scratch + (size_t)tid * slot);
        float *tile = (float *)(void *)(scratch + (size_t)tid * slot + pbytes);
        #pragma omp for schedule(dynamic, 1)
        for (int p = 0; p < panels; p++) {
            const int n0 = p * NB, nc = N - n0 < NB ? N - n0 : NB;
            pf(j->W, j->rb, n0, nc, K, P);
            if (nc == NB) {
                mk_xyt(M, K, j->x, K, P, NB, NB, j->y + n0, N);
            } else {
                mk_xyt(M, K, j->x, K, P, NB, NB, tile, NB);
                for (int i = 0; i < M; i++)
                    memcpy(j->y + (size_t)i * N + n0, tile + (size_t)i * NB, sizeof(float) * nc);
            }
        }
    }
}

/* y_i = x W_iᵀ for nj matrices of one type and K (N_i rows each). */
static int qmatmul(int nj, float *const *ys, const void *const *Ws, const int *Ns, mattn_ggml_type type,
                   const float *x, int M, int K, void *scratch, size_t scratch_bytes, int f32x) {
    rows_fn rf;
    panel_fn pf;
    const size_t rb = mattn_qmatmul_row_bytes(type, K);
    if (M < 0 || K < 0 || nj < 1 || nj > MATTN_QMATMUL_MAX || kernels_of(type, f32x, &rf, &pf) || (K > 0 && rb == 0))
        return -1;
    int rows = 0;
    for (int i = 0; i < nj; i++) {
        if (Ns[i] < 0) return -1;
        rows += Ns[i];
    }
    if (M == 0 || rows == 0) return 0;
    if (K == 0) {
        for (int i = 0; i < nj; i++) memset(ys[i], 0, sizeof(float) * (size_t)M * Ns[i]);
        return 0;
    }
    job js[MATTN_QMATMUL_MAX];
    for (int i = 0; i < nj; i++) js[i] = (job){.W = Ws[i], .rb = rb, .x = x, .y = ys[i], .M = M, .N = Ns[i], .K = K};
    if (is_quantised(type) && !f32x) {
        if (!scratch || scratch_bytes < xq_bytes(M, K)) return -1;
        xq_carve(scratch, M, K, &js[0].xq);
        for (int i = 1; i < nj; i++) js[i].xq = js[0].xq;
        run_rows(rf, js, nj, 1);
    } else if (M == 1) {
        run_rows(rf, js, nj, 0);
    } else {
        const size_t slots = scratch ? scratch_bytes / slot_bytes(M, K) : 0;
        if (slots < 1) return -1;
        for (int i = 0; i < nj; i++)
            if (js[i].N) run_panels(pf, &js[i], scratch, slots);
    }
    return 0;
}

int mattn_qmatmul(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K,
                  void *scratch, size_t scratch_bytes) {
    return qmatmul(1, &y, &W, &N, type, x, M, K, scratch, scratch_bytes, 0);
}

int mattn_qmatmul_f32x(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K,
                       void *scratch, size_t scratch_bytes) {
    return qmatmul(1, &y, &W, &N, type, x, M, K, scratch, scratch_bytes, 1);
}

int mattn_qmatmul_n(int n, float *const *ys, const void *const *Ws, const int *Ns, mattn_ggml_type type,
                    const float *x, int M, int K, void *scratch, size_t scratch_bytes, int f32x) {
    if (!ys || !Ws || !Ns) return -1;
    return qmatmul(n, ys, Ws, Ns, type, x, M, K, scratch, scratch_bytes, f32x != 0);
}

int mattn_qmatmul_ref(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K) {
    const size_t rb = mattn_qmatmul_row_bytes(type, K);
    if (M < 0 || N < 0 || K < 0 || !mattn_gguf_type_supported(type) || (K > 0 && rb == 0)) return -1;
    for (int n = 0; n < N; n++) {
        const uint8_t *row = (const uint8_t *)W + (size_t)n * rb;
        for (int i0 = 0; i0 < M; i0 += 16) { /* 16 rows of x per dequantised block */
            const int i1 = M - i0 < 16 ? M : i0 + 16;
            double s[16] = {0};
            for (int k0 = 0; k0 < K; k0 += QK) {
                float w[QK];
                const int n_el = K - k0 < QK ? K - k0 : QK;
                /* k0 is a whole number of blocks for every type, so its byte offset is exact */
                mattn_gguf_dequant_ref(type, row + mattn_gguf_nbytes(type, k0), w, n_el);
                for (int i = i0; i < i1; i++)
                    for (int e = 0; e < n_el; e++) s[i - i0] += (double)x[(size_t)i * K + k0 + e] * w[e];
            }
            for (int i = i0; i < i1; i++) y[(size_t)i * N + n] = (float)s[i - i0];
        }
    }
    return 0;
}

#endif
