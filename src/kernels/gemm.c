/*
 * gemm.c — mattn_gemm(), the library's only GEMM entry point and its only
 * CBLAS call site.  Row-major C = alpha * op(A) op(B) + beta * C.
 * CBLAS (OpenBLAS) is used when the build has it (MATTN_USE_CBLAS) and every
 * dimension is at least MATTN_GEMM_MIN (ggml-blas does the same); otherwise a
 * built-in loop nest, vectorisable by the compiler and parallel over rows.
 * mattn_gemm_ref() is the plain triple loop the tests compare against.
 */
#ifdef MATTN_USE_CBLAS
#include <cblas.h>
#endif

#include "kernels/kernels.h"

#define MATTN_GEMM_MIN 16

void mattn_gemm_ref(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                float a = tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += (double)a * b;
            }
            float c = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
            C[(size_t)i * ldc + j] = c + alpha * (float)s;
        }
}

/* Built-in kernel.  NT (x W^T, the projections): every C element is a dot
 * product of two contiguous rows with 16 partial sums (mattn_dot), parallel
 * over rows and blocks of columns so that a single row (decoding) still
 * uses every thread.  Other layouts: rows of C in parallel, axpy inner loops
 * over contiguous memory. */
static void gemm_builtin(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                         int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    const double work = (double)M * N * K;
    (void)work; /* only read by OpenMP clauses */
    if (!tA && tB) {
        const int nb = (N + 63) / 64;
        #pragma omp parallel for collapse(2) schedule(static) if (work > 2e5)
        for (int i = 0; i < M; i++)
            for (int jb = 0; jb < nb; jb++) {
                const float *a = A + (size_t)i * lda;
                float *c = C + (size_t)i * ldc;
                const int j1 = (jb + 1) * 64 < N ? (jb + 1) * 64 : N;
                for (int j = jb * 64; j < j1; j++) {
                    const float s = alpha * mattn_dot(a, B + (size_t)j * ldb, K);
                    c[j] = beta == 0.0f ? s : beta * c[j] + s;
                }
            }
        return;
    }
    #pragma omp parallel for schedule(static) if (work > 1e6)
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
        for (int k = 0; k < K; k++) {
            float a = alpha * (tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
            if (!tB) {
                const float *b = B + (size_t)k * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            } else {
                for (int j = 0; j < N; j++) c[j] += a * B[(size_t)j * ldb + k];
            }
        }
    }
}

const char *mattn_gemm_backend(void) {
#ifdef MATTN_USE_CBLAS
    return "CBLAS (OpenBLAS) above 16 in every dimension, built-in below";
#else
    return "built-in";
#endif
}

void mattn_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef MATTN_USE_CBLAS
    if (M >= MATTN_GEMM_MIN && N >= MATTN_GEMM_MIN && K >= MATTN_GEMM_MIN) {
        cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    gemm_builtin(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
