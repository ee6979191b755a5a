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
 * How x enters (quant.c has the arithmetic, docs/performance.md the
 * measurements): with quantised weights x is quantised on the fly to 8-bit
 * blocks of 32 with fp32 scales (llama.cpp's Q8_0/Q8_1 idea) and every block
 * product is an exact integer dot product — 1.4–2× faster than fp32 x here;
 * with float weights x stays fp32.  mattn_qmatmul_f32x keeps x in fp32 for
 * every type (the quantised weights dequantised in registers for a GEMV,
 * into per-thread panels for a GEMM, like the float types): slower, and
 * then only the fp32 sums' term of the bound below applies.  Either way the
 * weights are used exactly as mattn_gguf_dequant_ref gives them.
 *
 * Error bound (tests/test_quant.c checks it on every output):
 *   |y - y_ref| <= Σ_b (d_x,b / 2)(1 + 2^-12) Σ_{k in b} |w_k|  +  1e-5 Σ_k |x_k| (|w_k| + |c_b|)
 * The first term is x's rounding to its 8-bit blocks, d_x,b = max_{k in b}
 * |x_k| / 127 (quantised types only; at most 1/254 of Σ_k max_b|x| |w_k|,
 * 0.6–1.6e-3 of Σ|x||w| measured on the model's matrices); the second the
 * fp32 sums, with c_b the block's offset term (m for Q4_1, 8 d for Q4_0,
 * 128 d for Q8_0, 0 for the float types and for mattn_qmatmul_f32x, whose
 * bound is the float types' for every type).  Their worst case is γ_n = n 2^-24
 * for sums of n terms — n = K/32 + 4 (quantised: exact integer blocks,
 * 8 lanes), K / (2 MATTN_VL) + 5 (float GEMV), K (float GEMM) — which is
 * below 1e-5 for the quantised types up to K = 5000; for long float rows
 * 1e-5 is the tested tolerance (errors of random signs grow as √n: 3.3e-7
 * at most over the tests).  x must be finite.
 *
 * Threads: OpenMP over rows of W (groups of 4; panels of NB for the float
 * GEMM); every output is computed by one thread in a fixed order and x's
 * blocks do not depend on the split, so y is bit-identical whatever the
 * number of threads.  The kernels never allocate: the quantised types take
 * mattn_qmatmul_scratch() bytes for x's blocks (any M), the float types
 * for their per-thread panels (M > 1; a float GEMV needs none).
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
 * `type` when up to `threads` threads may run: quantised types M K +
 * 8 M K / 32 (x's blocks, whatever the threads), float types 0 for M = 1,
 * else threads panels of (K + M) * NB floats (NB = 16–64 by ISA). */
size_t mattn_qmatmul_scratch(mattn_ggml_type type, int M, int K, int threads);

/* y (M, N) = x (M, K) · Wᵀ, as the header says.  scratch: at least
 * mattn_qmatmul_scratch(type, M, K, 1) bytes (NULL with 0 for a float GEMV),
 * 64-byte aligned; a float GEMM runs at most as many threads as it holds
 * panels for.  y must not overlap x, W or the scratch.
 * Returns 0, or -1 (nothing written) for an unsupported type, K not a
 * multiple of the type's block size, negative sizes, or too little scratch. */
int mattn_qmatmul(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K,
                  void *scratch, size_t scratch_bytes);

/* The same product with x in fp32 for every type (for the float types it is
 * mattn_qmatmul); scratch mattn_qmatmul_scratch_f32x(type, M, K, 1) bytes or
 * more (0 for a GEMV), the float types' panels for every type. */
size_t mattn_qmatmul_scratch_f32x(mattn_ggml_type type, int M, int K, int threads);
int mattn_qmatmul_f32x(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K,
                       void *scratch, size_t scratch_bytes);

/* Several products of one x: y_i (M, Ns[i]) = x (M, K) · W_iᵀ for the n
 * matrices Ws[i] of one type and K (1 <= n <= MATTN_QMATMUL_MAX), as
 * mattn_qmatmul (f32x 0) or mattn_qmatmul_f32x (f32x 1) gives each — the
 * same bits — but x quantised once and, for GEMVs and 8-bit x, one
 * parallel region over all their rows (a decode step's q, k and v).
 * Scratch as for one of them; the -1 cases as theirs, and n out of range. */
#define MATTN_QMATMUL_MAX 4
int mattn_qmatmul_n(int n, float *const *ys, const void *const *Ws, const int *Ns, mattn_ggml_type type,
                    const float *x, int M, int K, void *scratch, size_t scratch_bytes, int f32x);

/* The reference: every row of W dequantised with mattn_gguf_dequant_ref
 * (32 elements at a time, on the stack), a plain dot product accumulated in
 * double, rounded to float once.  Same arguments and -1 cases, no scratch. */
int mattn_qmatmul_ref(float *y, const float *x, const void *W, mattn_ggml_type type, int M, int N, int K);

/* Bytes of one row of K elements of type (0: unsupported or K not whole blocks). */
size_t mattn_qmatmul_row_bytes(mattn_ggml_type type, int K);
#endif

#endif
