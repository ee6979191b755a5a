/*
 * quant.h — matrix products with weights kept in their GGUF storage format
 * (kernels floor, internal; included by kernels.h):
 *
 *   y (M, N) = x (M, K) · Wᵀ,   W: N rows of K elements of one ggml type
 *
 * W is row-major as GGUF stores it — row n starts at n * mattn_gguf_nbytes(
 * type, K) bytes, each row of a quantised type is K/32 blocks (layouts in
 * io/gguf.h) — for type F32, F16, BF16, Q8_0, Q4_0 or Q4_1; x and y are
 * fp32, row-major, K and N apart.  M = 1 is a GEMV (decoding one token),
 * M > 1 a GEMM (prefill).
 *
 * The products keep x in fp32 and dequantise W in registers (GEMV) or into
 * a per-thread fp32 panel the GEMM micro-kernel runs on; the dequantised
 * weights are exactly mattn_gguf_dequant_ref's, so the only difference from
 * the reference is the order and precision of the fp32 sums (quant.c says
 * why not 8-bit activations, docs/performance.md has the measurements).
 *
 * Error bound (tests/test_quant.c checks it on every shape): for every
 * output, |y - y_ref| <= 1e-5 · Σ_k |x_k| (|w_k| + |m_b|), with m_b the
 * block's offset for Q4_1 and 0 otherwise (fp32 sums of at most K/16 + 6
 * terms per lane for K <= 1536: (K/16 + 6) · 2^-24 < 1e-5).
 *
 * Threads: OpenMP over rows of W (GEMV) or panels of NB rows (GEMM); every
 * output is computed by one thread in a fixed order, so y is bit-identical
 * whatever the number of threads.  The kernels never allocate: a GEMM
 * (M > 1) takes mattn_qmatmul_scratch() bytes from the caller, a GEMV none.
 *
 * The double build (MATTN_F64) compiles no quantised kernel: they multiply
 * fp32 activations by fp32-or-narrower weights, which float = double would
 * not make more exact; this header then declares nothing.
 */
#ifndef MATTN_QUANT_H
#define MATTN_QUANT_H

#ifndef MATTN_F64
#include <stddef.h>

#include "io/gguf.h" /* mattn_ggml_type and its block layouts; the reference dequantiser */

/* Bytes of scratch mattn_qmatmul needs for an (M, K) x with weights of
 * `type` when `threads` threads may run (0 for M = 1: a GEMV needs none). */
size_t mattn_qmatmul_scratch(mattn_ggml_type type, int M, int K, int threads);

/* y (M, N) = x (M, K) · Wᵀ, as the header says.  scratch: at least
 * mattn_qmatmul_scratch(type, M, K, 1) bytes (NULL with 0 for a GEMV), 64-byte
 * aligned; a call runs at most as many threads as it holds slots for.
 * Returns 0, or -1 (nothing written) for an unsupported type, K not a
 * multiple of the type's block size, negative sizes, or too little scratch. */
int mattn_qmatmul(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K,
                  void *scratch, size_t scratch_bytes);

/* The reference: every row of W dequantised with mattn_gguf_dequant_ref
 * (32 elements at a time, on the stack), a plain dot product accumulated in
 * double, rounded to float once.  Same arguments and -1 cases, no scratch. */
int mattn_qmatmul_ref(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K);

/* Bytes of one row of K elements of type (0: unsupported or K not whole blocks). */
size_t mattn_qmatmul_row_bytes(mattn_ggml_type type, int K);
#endif

#endif
