/*
 * llama_matmul.c — the one matrix product of the LLaMA decoder: y = x W^T
 * with W a GGUF matrix left in its own type (F32, F16, BF16, Q8_0, Q4_0,
 * Q4_1) in the mapping.
 *
 * This is the reference form: each thread dequantises a few rows of W at a
 * time (mattn_gguf_dequant_ref, exact) into its slot of the scratch and
 * takes float dot products of them with every row of x, so a row of W is
 * dequantised once per call whatever M is.  The threads split the output
 * rows (columns of y); each element is one mattn_dot in a fixed order, so
 * the result is the same bits for any thread count and any M.  The
 * quantised kernels (src/kernels/) will replace this body; the signature,
 * the scratch and the determinism stay.
 */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "llama/llama.h"

#define MM_ROWS 8 /* rows of W per thread step: x's rows are reused from L1 across them */
/* A team only for a product worth one (multiply-adds): a decode step's
 * small projections run on the calling thread, since a parallel region per
 * matrix costs more than it saves there, and far more on a loaded machine. */
#define MM_PARALLEL_MIN (1 << 22)

static size_t slot_bytes(int64_t K) { return mattn_align_up((size_t)MM_ROWS * (size_t)K * sizeof(float)); }

size_t mattn_llama_matmul_scratch(int64_t K, int threads) {
    return (size_t)(threads > 0 ? threads : 1) * slot_bytes(K > 0 ? K : 1);
}

void mattn_llama_matmul(const mattn_gguf_tensor *W, const float *x, int M, float *y, void *scratch,
                        size_t scratch_bytes) {
    const int64_t K = W->ne[0], N = W->ne[1];
    const size_t row_bytes = mattn_gguf_nbytes(W->type, K), slot = slot_bytes(K);
    const size_t slots = scratch ? scratch_bytes / slot : 0;
    MATTN_ASSERT(slots >= 1 && row_bytes > 0);
    int team = mattn_max_threads();
    if ((size_t)team > slots) team = (int)slots;
    const int64_t nblk = (N + MM_ROWS - 1) / MM_ROWS;
    if (nblk < team) team = nblk > 0 ? (int)nblk : 1;
    if ((double)M * (double)N * (double)K < MM_PARALLEL_MIN) team = 1;
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
            const float *rows[MM_ROWS];
            for (int r = 0; r < nr; r++) {
                const unsigned char *src = data + (size_t)(n0 + r) * row_bytes;
#ifndef MATTN_F64 /* the double build of the gradient tests: float is double there */
                if (W->type == MATTN_GGML_F32 && (uintptr_t)src % sizeof(float) == 0) {
#else
                if (0) {
#endif
                    rows[r] = (const float *)src; /* F32 rows are used in place */
                } else {
                    float *dst = buf + (size_t)r * K;
                    mattn_status st = mattn_gguf_dequant_ref(W->type, src, dst, K);
                    MATTN_ASSERT(st == MATTN_OK); /* type and K were checked at open */
                    rows[r] = dst;
                }
            }
            for (int m = 0; m < M; m++) {
                const float *xm = x + (size_t)m * K;
                float *ym = y + (size_t)m * N + n0;
                for (int r = 0; r < nr; r++) ym[r] = mattn_dot(xm, rows[r], (int)K);
            }
        }
    }
}
