/*
 * attn_pack.c — the tiled softmax kernels' packing (attn_softmax.c): a
 * head's keys transposed (K^T, dh x n) and its values or keys as
 * zero-padded rows, from float rows or from a cache view's halves, so that
 * the micro-kernels read contiguous, aligned runs.
 */
#include "kernels/kernels.h"
#include "kernels/simd.h"

void mattn_pack_kt(const float *k, int ld, int s0, int nb, int dh, float *restrict Kt, int ldt, int ncols) {
    /* 16 keys at a time: their rows stay in L1 while each row of Kt gets a
     * contiguous 64-byte run (one key at a time wrote dh scattered floats,
     * one per page of a long Kt) */
    int j0 = 0;
    for (; j0 + 16 <= nb; j0 += 16)
        for (int d = 0; d < dh; d++) {
            float *dst = Kt + (size_t)d * ldt + j0;
            const float *src = k + (size_t)(s0 + j0) * ld + d;
            for (int j = 0; j < 16; j++) dst[j] = src[(size_t)j * ld];
        }
    for (int j = j0; j < nb; j++) {
        const float *src = k + (size_t)(s0 + j) * ld;
        for (int d = 0; d < dh; d++) Kt[(size_t)d * ldt + j] = src[d];
    }
    for (int d = 0; d < dh; d++)
        for (int j = nb; j < ncols; j++) Kt[(size_t)d * ldt + j] = 0.0f;
}

/* The halves of a cache view (kernels.h's mattn_kv). */
void mattn_pack_kt_f16(const uint16_t *k, int64_t ld, int s0, int nb, int dh, float *restrict Kt, int ldt,
                       int ncols) {
    _Alignas(64) float blk[16 * MATTN_MAX_HEAD_DIM];
    int j0 = 0;
    for (; j0 + 16 <= nb; j0 += 16) { /* 16 keys to floats, then transposed as mattn_pack_kt does */
        for (int j = 0; j < 16; j++) {
            const uint16_t *src = k + (int64_t)(s0 + j0 + j) * ld;
            int d = 0;
            for (; d + MATTN_VL <= dh; d += MATTN_VL) vstore(blk + (size_t)j * dh + d, vload_kv(src, d, 1));
            for (; d < dh; d++) blk[(size_t)j * dh + d] = mattn_kv_at(src, d, 1);
        }
        for (int d = 0; d < dh; d++)
            for (int j = 0; j < 16; j++) Kt[(size_t)d * ldt + j0 + j] = blk[(size_t)j * dh + d];
    }
    for (int j = j0; j < nb; j++)
        for (int d = 0; d < dh; d++) Kt[(size_t)d * ldt + j] = mattn_kv_at(k, (int64_t)(s0 + j) * ld + d, 1);
    for (int d = 0; d < dh; d++)
        for (int j = nb; j < ncols; j++) Kt[(size_t)d * ldt + j] = 0.0f;
}

void mattn_pack_rows_f16(const uint16_t *x, int64_t ld, int s0, int n, int dh, int dhp, int nmax,
                         float *restrict X) {
    for (int j = 0; j < nmax; j++) {
        float *row = X + (size_t)j * dhp;
        int d = 0;
        if (j < n) {
            const uint16_t *src = x + (int64_t)(s0 + j) * ld;
            for (; d + MATTN_VL <= dh; d += MATTN_VL) vstore(row + d, vload_kv(src, d, 1));
            for (; d < dh; d++) row[d] = mattn_kv_at(src, d, 1);
        }
        for (; d < dhp; d++) row[d] = 0.0f;
    }
}

void mattn_pack_rows(const float *x, int ld, int s0, int n, int dh, int dhp, int nmax, float *restrict X,
                     float mult) {
    for (int j = 0; j < nmax; j++) {
        float *row = X + (size_t)j * dhp;
        int d = 0;
        if (j < n)
            for (; d < dh; d++) row[d] = mult * x[(size_t)(s0 + j) * ld + d];
        for (; d < dhp; d++) row[d] = 0.0f;
    }
}
