/*
 * microkernel.h — the register-blocked products the tiled attention kernels
 * are built from (attn_softmax.c, attn_linear.c), on simd.h's vectors:
 *   mk_xyt  S = X Yt      (rows of X broadcast against rows of a transposed Y)
 *   mk_ay   C += A Y      (elements of A, which may be read transposed,
 *                          broadcast against rows of Y)
 * MR x NV vector accumulators stay in registers; rows left over run 4, 2,
 * then 1 at a time (a routed call's rows are any number).  Accumulation
 * order is fixed, so results do not depend on threads or on the blocking.
 */
#ifndef MATTN_MICROKERNEL_H
#define MATTN_MICROKERNEL_H

#include "kernels/simd.h"

/* Micro-kernel shape: MR rows x NV vectors of accumulators, as many as the
 * ISA has registers for (32 with AVX-512, 16 with AVX2/SSE/NEON). */
#if MATTN_VBYTES == 64
#define MR 8
#else
#define MR 6
#endif
#define NV 2
#define CW (NV * MATTN_VL)         /* micro-kernel columns */

/* S[r][0..nc) = sum_d X[r][d] Yt[d][0..nc) for r < nr; nc is a multiple of
 * MATTN_VL; rows of X, Yt, S are ldx, ldy, lds apart.  R rows at a time (R = MR,
 * then 1). */
#define XYT_BLOCK(R)                                                                          \
    for (; r + R <= nr; r += R) {                                                             \
        int c = 0;                                                                            \
        for (; c + CW <= nc; c += CW) {                                                       \
            mattn_vf acc[R][NV];                                                              \
            for (int i = 0; i < R; i++)                                                       \
                for (int v = 0; v < NV; v++) acc[i][v] = vset1(0.0f);                         \
            for (int d = 0; d < dh; d++) {                                                    \
                mattn_vf y[NV];                                                               \
                for (int v = 0; v < NV; v++) y[v] = vload(Yt + (size_t)d * ldy + c + v * MATTN_VL); \
                for (int i = 0; i < R; i++) {                                                 \
                    mattn_vf x = vset1(X[(size_t)(r + i) * ldx + d]);                         \
                    for (int v = 0; v < NV; v++) acc[i][v] += x * y[v];                       \
                }                                                                             \
            }                                                                                 \
            for (int i = 0; i < R; i++)                                                       \
                for (int v = 0; v < NV; v++) vstore(S + (size_t)(r + i) * lds + c + v * MATTN_VL, acc[i][v]); \
        }                                                                                     \
        for (; c < nc; c += MATTN_VL) {                                                       \
            mattn_vf acc[R];                                                                  \
            for (int i = 0; i < R; i++) acc[i] = vset1(0.0f);                                 \
            for (int d = 0; d < dh; d++) {                                                    \
                mattn_vf y = vload(Yt + (size_t)d * ldy + c);                                  \
                for (int i = 0; i < R; i++) acc[i] += vset1(X[(size_t)(r + i) * ldx + d]) * y; \
            }                                                                                 \
            for (int i = 0; i < R; i++) vstore(S + (size_t)(r + i) * lds + c, acc[i]);         \
        }                                                                                     \
    }

static inline void mk_xyt(int nr, int dh, const float *restrict X, int ldx, const float *restrict Yt, int ldy,
                          int nc, float *restrict S, int lds) {
    int r = 0;
    XYT_BLOCK(MR)
    XYT_BLOCK(4)
    XYT_BLOCK(2)
    XYT_BLOCK(1)
}

/* C[r][0..ncol) += sum_{x<nx} A[r*sar + x*sax] Y[x][0..ncol) for r < nr; ncol
 * is a multiple of CW; A is read by element, so it may be transposed; rows
 * of Y and C are ldy and ldc apart. */
#define AY_BLOCK(R)                                                                           \
    for (; r + R <= nr; r += R)                                                               \
        for (int c = 0; c < ncol; c += CW) {                                                   \
            mattn_vf acc[R][NV];                                                              \
            for (int i = 0; i < R; i++)                                                       \
                for (int v = 0; v < NV; v++) acc[i][v] = vload(C + (size_t)(r + i) * ldc + c + v * MATTN_VL); \
            for (int x = 0; x < nx; x++) {                                                    \
                mattn_vf y[NV];                                                               \
                for (int v = 0; v < NV; v++) y[v] = vload(Y + (size_t)x * ldy + c + v * MATTN_VL); \
                for (int i = 0; i < R; i++) {                                                 \
                    mattn_vf a = vset1(A[(size_t)(r + i) * sar + (size_t)x * sax]);           \
                    for (int v = 0; v < NV; v++) acc[i][v] += a * y[v];                       \
                }                                                                             \
            }                                                                                 \
            for (int i = 0; i < R; i++)                                                       \
                for (int v = 0; v < NV; v++) vstore(C + (size_t)(r + i) * ldc + c + v * MATTN_VL, acc[i][v]); \
        }

static inline void mk_ay(int nr, int nx, int ncol, const float *restrict A, int sar, int sax,
                         const float *restrict Y, int ldy, float *restrict C, int ldc) {
    int r = 0;
    AY_BLOCK(MR)
    AY_BLOCK(4)
    AY_BLOCK(2)
    AY_BLOCK(1)
}

#endif
