/*
 * attn_decode.c — the softmax core's decode step: one new query per
 * sequence against its cached keys and values (the "full" and "local"
 * experts' caches, and a LLaMA-style model's grouped-query KV cache), with
 * its plain double-precision _ref twin (kernels.h).  The tiled forward and
 * backward over whole sequences are attn_softmax.c.
 */
#include <math.h>

#include "kernels/kernels.h"
#include "kernels/simd.h"


/* One query against cached keys [lo, hi] (ring: slot s % ring), every head:
 * blocks of 64 keys, scores by dot products, exp vectorised, online softmax
 * across blocks.  Query head h reads K/V head h / kv_group.  Heads run in
 * parallel when the context is long enough to pay for it. */
double mattn_attn_softmax_decode_gqa(const float *q, const float *K, const float *V, int ldkv, int H, int kv_group,
                                     int dh, int lo, int hi, int ring, float *out) {
    const int g = kv_group > 1 ? kv_group : 1;
    MATTN_ASSERT(H % g == 0);
    const float scale = 1.0f / sqrtf((float)dh);
    #pragma omp parallel for schedule(static) if ((double)(hi - lo + 1) * H * dh > 65536.0)
    for (int h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * dh;
        const float *Kh = K + (size_t)(h / g) * dh, *Vh = V + (size_t)(h / g) * dh;
        float *o = out + (size_t)h * dh, m = -INFINITY, l = 0.0f;
        _Alignas(64) float sc[64];
        for (int i = 0; i < dh; i++) o[i] = 0.0f;
        for (int s0 = lo; s0 <= hi; s0 += 64) {
            const int nb = hi - s0 + 1 < 64 ? hi - s0 + 1 : 64, nc = (nb + MATTN_VL - 1) / MATTN_VL * MATTN_VL;
            float bm = -INFINITY;
            for (int j = 0; j < nb; j++) {
                const int s = s0 + j;
                sc[j] = mattn_dot(qh, Kh + (size_t)(ring ? s % ring : s) * ldkv, dh) * scale;
                bm = sc[j] > bm ? sc[j] : bm;
            }
            for (int j = nb; j < nc; j++) sc[j] = -INFINITY;
            const float mn = bm > m ? bm : m, corr = expf(m - mn); /* 0 when m == -inf */
            l *= corr;
            for (int i = 0; i < dh; i++) o[i] *= corr;
            mattn_vf vs = vset1(0.0f);
            for (int j = 0; j < nc; j += MATTN_VL) {
                const mattn_vf p = vexp(vload(sc + j) - vset1(mn));
                vs += p;
                vstore(sc + j, p);
            }
            l += vhsum(vs);
            m = mn;
            for (int j = 0; j < nb; j++) {
                const int s = s0 + j;
                mattn_axpy(o, sc[j], Vh + (size_t)(ring ? s % ring : s) * ldkv, dh);
            }
        }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int i = 0; i < dh; i++) o[i] *= inv;
    }
    return 4.0 * (hi - lo + 1) * (double)H * dh;
}

/* The plain formula: every score, the max, the exponentials, the weighted
 * sum — in double. */
double mattn_attn_softmax_decode_gqa_ref(const float *q, const float *K, const float *V, int ldkv, int H,
                                         int kv_group, int dh, int lo, int hi, int ring, float *out) {
    const int g = kv_group > 1 ? kv_group : 1;
    MATTN_ASSERT(H % g == 0);
    const double scale = 1.0 / sqrt((double)dh);
    for (int h = 0; h < H; h++) {
        const size_t col = (size_t)(h / g) * dh;
        double m = -INFINITY, l = 0.0, o[MATTN_MAX_HEAD_DIM] = {0};
        for (int s = lo; s <= hi; s++) {
            const float *k = K + (size_t)(ring ? s % ring : s) * ldkv + col;
            double sc = 0.0;
            for (int i = 0; i < dh; i++) sc += (double)q[h * dh + i] * k[i];
            m = sc * scale > m ? sc * scale : m;
        }
        for (int s = lo; s <= hi; s++) {
            const float *k = K + (size_t)(ring ? s % ring : s) * ldkv + col;
            const float *v = V + (size_t)(ring ? s % ring : s) * ldkv + col;
            double sc = 0.0;
            for (int i = 0; i < dh; i++) sc += (double)q[h * dh + i] * k[i];
            const double p = exp(sc * scale - m);
            l += p;
            for (int i = 0; i < dh; i++) o[i] += p * v[i];
        }
        for (int i = 0; i < dh; i++) out[(size_t)h * dh + i] = l > 0.0 ? (float)(o[i] / l) : 0.0f;
    }
    return 4.0 * (hi - lo + 1) * (double)H * dh;
}
