/*
 * quant.c — y = x · Wᵀ with W in GGUF storage (quant.h): the GEMV and the
 * panel GEMM for F32, F16, BF16, Q8_0, Q4_0, Q4_1, and their reference.
 */
#ifndef MATTN_F64

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/kernels.h"
#include "kernels/microkernel.h"

#define QK MATTN_GGML_QK           /* elements per block (and per GEMV step for every type) */
#define NVB (QK / MATTN_VL)        /* vectors per block: 2 (AVX-512), 4 (AVX2), 8 (SSE) */
#define GR 4                       /* GEMV: rows of W per step (one load of x for GR rows) */
#define NB CW                      /* GEMM: rows of W per panel = the micro-kernel's columns */
#define GEMV_PAR_BYTES (96 << 10)  /* GEMV: one thread below this many weight bytes */

typedef uint8_t q_vb __attribute__((vector_size(MATTN_VL)));  /* MATTN_VL bytes */

/* Little-endian 16 bits (the reader refuses big-endian files; x86 and ARM
 * Linux are little-endian). */
static inline uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline mattn_vf vbytes_f(q_vb q) { return __builtin_convertvector(__builtin_convertvector(q, mattn_vi), mattn_vf); }

/* Block b (elements 32b .. 32b+31) of a row of type t as NVB vectors, each
 * value exactly what mattn_gguf_dequant_ref gives (d * q is exact in float;
 * Q4_1's one rounding, + m, is the same fused or not). */
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
    case MATTN_GGML_Q8_0: {
        const uint8_t *p = row + 34 * (size_t)b;
        const float d = mattn_h2f(ld16(p));
        for (int v = 0; v < NVB; v++) { /* q + 128 as unsigned, then - 128: a direct int8 widening
                                            * compiles to byte-by-byte code (GCC 12) */
            q_vb q;
            memcpy(&q, p + 2 + v * MATTN_VL, sizeof q);
            w[v] = (vbytes_f(q ^ 0x80) - 128.0f) * d;
        }
        break;
    }
    case MATTN_GGML_Q4_0: {
        const uint8_t *p = row + 18 * (size_t)b;
        const float d = mattn_h2f(ld16(p));
        for (int c = 0; c < NVB / 2; c++) { /* byte j: element j (low nibble), j + 16 (high) */
            q_vb q;
            memcpy(&q, p + 2 + c * MATTN_VL, sizeof q);
            w[c] = (vbytes_f(q & 15) - 8.0f) * d;
            w[c + NVB / 2] = (vbytes_f(q >> 4) - 8.0f) * d;
        }
        break;
    }
    case MATTN_GGML_Q4_1: {
        const uint8_t *p = row + 20 * (size_t)b;
        const float d = mattn_h2f(ld16(p)), m = mattn_h2f(ld16(p + 2));
        for (int c = 0; c < NVB / 2; c++) {
            q_vb q;
            memcpy(&q, p + 4 + c * MATTN_VL, sizeof q);
            w[c] = vbytes_f(q & 15) * d + m;
            w[c + NVB / 2] = vbytes_f(q >> 4) * d + m;
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
// GEMV: y[n] = <x, W_n> for n in [n0, n1), GR rows per step, two vector
// accumulators per row (alternate vectors of a block), then the tail

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

// ----------------------------------------------------------------------------
// GEMM: rows [n0, n0 + nc) of W dequantised into P (K, NB), transposed and
// zero-padded to NB columns, for the micro-kernel S = X Pᵀ (microkernel.h)

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

/* One instance per type, so that deq_block's switch folds away. */
typedef void (*gemv_fn)(const uint8_t *W, size_t rb, const float *x, float *y, int n0, int n1, int K);
typedef void (*panel_fn)(const uint8_t *W, size_t rb, int n0, int nc, int K, float *P);
#define QUANT_TYPE(name, T)                                                                                  \
    static void gemv_##name(const uint8_t *W, size_t rb, const float *x, float *y, int n0, int n1, int K) { \
        gemv_rows(T, W, rb, x, y, n0, n1, K);                                                                \
    }                                                                                                        \
    static void panel_##name(const uint8_t *W, size_t rb, int n0, int nc, int K, float *P) {                \
        panel_rows(T, W, rb, n0, nc, K, P);                                                                  \
    }
QUANT_TYPE(f32, MATTN_GGML_F32)
QUANT_TYPE(f16, MATTN_GGML_F16)
QUANT_TYPE(bf16, MATTN_GGML_BF16)
QUANT_TYPE(q8_0, MATTN_GGML_Q8_0)
QUANT_TYPE(q4_0, MATTN_GGML_Q4_0)
QUANT_TYPE(q4_1, MATTN_GGML_Q4_1)

static int kernels_of(mattn_ggml_type t, gemv_fn *g, panel_fn *p) {
    switch (t) {
    case MATTN_GGML_F32: *g = gemv_f32, *p = panel_f32; return 0;
    case MATTN_GGML_F16: *g = gemv_f16, *p = panel_f16; return 0;
    case MATTN_GGML_BF16: *g = gemv_bf16, *p = panel_bf16; return 0;
    case MATTN_GGML_Q8_0: *g = gemv_q8_0, *p = panel_q8_0; return 0;
    case MATTN_GGML_Q4_0: *g = gemv_q4_0, *p = panel_q4_0; return 0;
    case MATTN_GGML_Q4_1: *g = gemv_q4_1, *p = panel_q4_1; return 0;
    }
    return -1;
}

// ----------------------------------------------------------------------------
// entry points

size_t mattn_qmatmul_row_bytes(mattn_ggml_type type, int K) {
    if (K < 0 || !mattn_gguf_type_supported(type) || K % mattn_gguf_block_size(type)) return 0;
    return mattn_gguf_nbytes(type, K);
}

/* One thread's slot: the panel (K, NB) and the (M, NB) tile of a last,
 * narrower panel. */
static size_t slot_bytes(int M, int K) {
    return mattn_align_up((size_t)K * NB * sizeof(float)) + mattn_align_up((size_t)M * NB * sizeof(float));
}

size_t mattn_qmatmul_scratch(mattn_ggml_type type, int M, int K, int threads) {
    (void)type;
    if (M <= 1 || K <= 0) return 0;
    return (size_t)(threads > 0 ? threads : 1) * slot_bytes(M, K);
}

static int team_size(size_t slots, int tasks) {
    int team = mattn_max_threads();
    if ((size_t)team > slots) team = (int)slots;
    if (team > tasks) team = tasks;
    return team > 0 ? team : 1;
}

static void gemv(gemv_fn g, const uint8_t *W, size_t rb, const float *x, float *y, int N, int K) {
    const int groups = (N + GR - 1) / GR;
    const int team = rb * (size_t)N >= GEMV_PAR_BYTES ? team_size((size_t)groups, groups) : 1;
    #pragma omp parallel num_threads(team)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        /* contiguous ranges of whole groups, as schedule(static) */
        const int g0 = (int)((int64_t)groups * tid / nt), g1 = (int)((int64_t)groups * (tid + 1) / nt);
        const int n1 = g1 * GR < N ? g1 * GR : N;
        if (g0 * GR < n1) g(W, rb, x, y, g0 * GR, n1, K);
    }
}

static void gemm(panel_fn pf, const uint8_t *W, size_t rb, const float *x, float *y, int M, int N, int K,
                 char *scratch, size_t slots) {
    const int panels = (N + NB - 1) / NB;
    const size_t slot = slot_bytes(M, K), pbytes = mattn_align_up((size_t)K * NB * sizeof(float));
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
            pf(W, rb, n0, nc, K, P);
            if (nc == NB) {
                mk_xyt(M, K, x, K, P, NB, NB, y + n0, N);
            } else {
                mk_xyt(M, K, x, K, P, NB, NB, tile, NB);
                for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N + n0, tile + (size_t)i * NB, sizeof(float) * nc);
            }
        }
    }
}

int mattn_qmatmul(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K,
                  void *scratch, size_t scratch_bytes) {
    gemv_fn g;
    panel_fn pf;
    const size_t rb = mattn_qmatmul_row_bytes(type, K);
    if (M < 0 || N < 0 || K < 0 || kernels_of(type, &g, &pf) || (K > 0 && rb == 0)) return -1;
    if (M == 0 || N == 0) return 0;
    if (K == 0) {
        memset(y, 0, sizeof(float) * (size_t)M * N);
        return 0;
    }
    if (M == 1) {
        gemv(g, W, rb, x, y, N, K);
        return 0;
    }
    const size_t slots = scratch ? scratch_bytes / slot_bytes(M, K) : 0;
    if (slots < 1) return -1;
    gemm(pf, W, rb, x, y, M, N, K, scratch, slots);
    return 0;
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
