/*
 * llama_matmul.c — the one matrix product of the LLaMA decoder: y = x W^T
 * with W a GGUF matrix left in its own type (F32, F16, BF16, Q8_0, Q4_0,
 * Q4_1) in the mapping.
 *
 * The body is the quantised kernels' mattn_qmatmul (src/kernels/quant.c):
 * x quantised on the fly to 8-bit blocks for the quantised types, fp32 for
 * the float types; its error bound is in kernels/quant.h.  With the model's
 * fp32 activations (mattn_llama_set_activations) mattn_qmatmul_f32x.  Every output is
 * computed by one thread in a fixed order, so the result is the same bits
 * for any thread count; x's blocks do not depend on M either, so a chunk of
 * rows gives the rows' GEMVs bit for bit for the quantised types.
 *
 * The double build (MATTN_F64, for the gradient tests) has no quantised
 * kernel: there each thread dequantises rows of W exactly
 * (mattn_gguf_dequant_ref) into its slot of the scratch and takes double
 * dot products.
 */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "llama/llama.h"

#ifndef MATTN_F64

size_t mattn_llama_matmul_scratch(int64_t K, int M, int threads) {
    if (K < 1) K = 1;
    if (M < 1) M = 1;
    const size_t q = mattn_qmatmul_scratch(MATTN_GGML_Q8_0, M, (int)K, threads);   /* every quantised type */
    const size_t f = mattn_qmatmul_scratch(MATTN_GGML_F32, M, (int)K, threads);    /* float types, fp32 x */
    return mattn_align_up(q > f ? q : f);
}

void mattn_llama_matmul(const mattn_gguf_tensor *W, const float *x, int M, float *y, void *scratch,
                        size_t scratch_bytes, int f32x) {
    const int rc = (f32x ? mattn_qmatmul_f32x : mattn_qmatmul)(y, x, W->data, W->type, M, (int)W->ne[1],
                                                               (int)W->ne[0], scratch, scratch_bytes);
    MATTN_ASSERT(rc == 0); /* type and shape were checked at open, the scratch sized by the cache */
}

void mattn_llama_matmul_n(int n, const mattn_gguf_tensor *const *Ws, const float *x, int M, float *const *ys,
                          void *scratch, size_t scratch_bytes, int f32x) {
    int same = n <= MATTN_QMATMUL_MAX;
    const void *data[MATTN_QMATMUL_MAX];
    int Ns[MATTN_QMATMUL_MAX];
    for (int i = 0; i < n && same; i++) {
        same = Ws[i]->type == Ws[0]->type && Ws[i]->ne[0] == Ws[0]->ne[0];
        data[i] = Ws[i]->data, Ns[i] = (int)Ws[i]->ne[1];
    }
    if (!same) {
        for (int i = 0; i < n; i++) mattn_llama_matmul(Ws[i], x, M, ys[i], scratch, scratch_bytes, f32x);
        return;
    }
    const int rc =
        mattn_qmatmul_n(n, ys, data, Ns, Ws[0]->type, x, M, (int)Ws[0]->ne[0], scratch, scratch_bytes, f32x);
    MATTN_ASSERT(rc == 0);
}

#else /* MATTN_F64 */

#define MM_ROWS 8 /* rows of W per thread step */

static size_t slot_bytes(int64_t K) { return mattn_align_up((size_t)MM_ROWS * (size_t)K * sizeof(float)); }

size_t mattn_llama_matmul_scratch(int64_t K, int M, int threads) {
    (void)M;
    return (size_t)(threads > 0 ? threads : 1) * slot_bytes(K > 0 ? K : 1);
}

void mattn_llama_matmul(const mattn_gguf_tensor *W, const float *x, int M, float *y, void *scratch,
                        size_t scratch_bytes, int f32x) {
    (void)f32x; /* the double build is exact either way */
    const int64_t K = W->ne[0], N = W->ne[1];
    const size_t row_bytes = mattn_gguf_nbytes(W->type, K), slot = slot_bytes(K);
    const size_t slots = scratch ? scratch_bytes / slot : 0;
    MATTN_ASSERT(slots >= 1 && row_bytes > 0);
    int team = mattn_max_threads();
    if ((size_t)team > slots) team = (int)slots;
    const int64_t nblk = (N + MM_ROWS - 1) / MM_ROWS;
    if (nblk < team) team = nblk > 0 ? (int)nblk : 1;
    const unsigned char *data = W->data;
    #pragma omp parallel num_threads(team)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *buf = (float *)((char *)scratch + (size_t)tid * slot);
        #pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t n0 = blk * MM_ROWS;
            const int nr = N - n0 < MM_ROWS ? (int)(N - n0) : MM_ROWS;
            for (int r = 0; r < nr; r++) {
                float *dst = buf + (size_t)r * K;
                mattn_status st = mattn_gguf_dequant_ref(W->type, data + (size_t)(n0 + r) * row_bytes, dst, K);
                MATTN_ASSERT(st == MATTN_OK); /* type and K were checked at open */
            }
            for (int m = 0; m < M; m++) {
                const float *xm = x + (size_t)m * K;
                float *ym = y + (size_t)m * N + n0;
                for (int r = 0; r < nr; r++) ym[r] = mattn_dot(xm, buf + (size_t)r * K, (int)K);
            }
        }
    }
}

void mattn_llama_matmul_n(int n, const mattn_gguf_tensor *const *Ws, const float *x, int M, float *const *ys,
                          void *scratch, size_t scratch_bytes, int f32x) {
    for (int i = 0; i < n; i++) mattn_llama_matmul(Ws[i], x, M, ys[i], scratch, scratch_bytes, f32x);
}

#endif
