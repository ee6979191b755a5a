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


#define DEC_BLOCK 64         /* keys per online-softmax step */
#define DEC_GROUP 8          /* query heads of one K/V head done together (K and V rows read once for them) */
#define DEC_CHUNK_KEYS 256   /* a chunk of keys per work item at least ... */
#define DEC_CHUNKS 8         /* ... and at most this many chunks */
#define DEC_PART 16384       /* floats of the chunks' partial results (stack) */
#define DEC_AHEAD 16         /* keys ahead whose K and V rows are prefetched (64: slower) */

/* dh elements of a cache from element i as floats: in place, or halves
 * converted into tmp. */
static inline const float *row_f32(const void *p, int64_t i, int f16, int dh, float *tmp) {
    if (!f16) return (const float *)p + i;
    for (int d = 0; d < dh; d++) tmp[d] = mattn_kv_at(p, i + d, 1);
    return tmp;
}

/* The g (<= DEC_GROUP) query heads q (g rows of dh) of one K/V head, whose
 * keys and values start at Kh, Vh (floats or halves: f16, a constant where
 * the two wrappers below inline it), over the sinks [0, ns) and then keys
 * [s_lo, s_hi] (position s at element (ring ? s % ring : s) * ld): blocks
 * of 64 keys, each key's row read once for all g scores (dot products) and
 * all g value updates; online softmax across blocks.  Out: per head the
 * running max m, the sum l and the unnormalised o (g rows of dh). */
static inline __attribute__((always_inline)) void
decode_chunk(const float *q, const void *Kh, const void *Vh, int64_t ld, int f16, int g, int dh, int ns, int s_lo,
             int s_hi, int ring, float scale, float *m, float *l, float *o) {
    _Alignas(64) float sc[DEC_GROUP][DEC_BLOCK], tmp[MATTN_MAX_HEAD_DIM];
    const int esz = f16 ? 2 : (int)sizeof(float);
    /* the hardware prefetchers stop at each page, so the rows DEC_AHEAD
     * keys on are asked for, into L2 (prefetcht1; into L1 measured the same
     * in bench_kernels --only kvdecode, 5.6 against 5.8 ms) */
    const int ahead = !ring, nv = ns + s_hi - s_lo + 1; /* keys: v < ns the sink v, else s_lo + v - ns */
    for (int h = 0; h < g; h++) {
        m[h] = -INFINITY, l[h] = 0.0f;
        for (int i = 0; i < dh; i++) o[(size_t)h * dh + i] = 0.0f;
    }
    for (int v = 0; ahead && v < DEC_AHEAD && v < nv; v++) /* the first rows, which the loop does not ask for */
        for (int i = 0; i < dh * esz; i += 64) {
            const int64_t k = (int64_t)(v < ns ? v : s_lo + v - ns) * ld * esz + i;
            __builtin_prefetch((const char *)Kh + k, 0, 2);
            __builtin_prefetch((const char *)Vh + k, 0, 2);
        }
    for (int v0 = 0; v0 < nv; v0 += DEC_BLOCK) {
        const int nb = nv - v0 < DEC_BLOCK ? nv - v0 : DEC_BLOCK;
        const int nc = (nb + MATTN_VL - 1) / MATTN_VL * MATTN_VL;
        for (int j = 0; j < nb; j++) {
            const int s = v0 + j < ns ? v0 + j : s_lo + v0 + j - ns;
            const int64_t k = (int64_t)(ring ? s % ring : s) * ld;
            if (ahead && v0 + j + DEC_AHEAD < nv)
                for (int i = 0; i < dh * esz; i += 64) {
                    const int va = v0 + j + DEC_AHEAD;
                    const int64_t ka = (int64_t)(va < ns ? va : s_lo + va - ns) * ld * esz + i;
                    __builtin_prefetch((const char *)Kh + ka, 0, 2);
                    __builtin_prefetch((const char *)Vh + ka, 0, 2);
                }
            if (dh % MATTN_VL == 0) { /* one vector accumulator, a tree sum: mattn_dot's 16 partial sums end in
                                       * a chain of 16 dependent adds, which dominated this loop */
                for (int h = 0; h < g; h++) {
                    const float *qh = q + (size_t)h * dh;
                    mattn_vf acc = vset1(0.0f);
                    for (int i = 0; i < dh; i += MATTN_VL) acc += vload(qh + i) * vload_kv(Kh, k + i, f16);
                    sc[h][j] = vhsum(acc) * scale;
                }
            } else { /* the row as floats, then the same products for either storage */
                const float *kr = row_f32(Kh, k, f16, dh, tmp);
                for (int h = 0; h < g; h++) sc[h][j] = mattn_dot(q + (size_t)h * dh, kr, dh) * scale;
            }
        }
        for (int h = 0; h < g; h++) {
            float bm = -INFINITY;
            for (int j = 0; j < nb; j++) bm = sc[h][j] > bm ? sc[h][j] : bm;
            for (int j = nb; j < nc; j++) sc[h][j] = -INFINITY;
            /* 0 when m was -inf; 1 when the max did not move; NaN when no score was a number (-inf - -inf),
             * so that a NaN in q or K reaches the output */
            const float mn = bm > m[h] ? bm : m[h], corr = mn == m[h] && mn > -INFINITY ? 1.0f : expf(m[h] - mn);
            l[h] *= corr;
            for (int i = 0; i < dh; i++) o[(size_t)h * dh + i] *= corr;
            mattn_vf vs = vset1(0.0f);
            for (int j = 0; j < nc; j += MATTN_VL) {
                const mattn_vf p = vexp(vload(sc[h] + j) - vset1(mn));
                vs += p;
                vstore(sc[h] + j, p);
            }
            l[h] += vhsum(vs);
            m[h] = mn;
        }
        for (int j = 0; j < nb; j++) {
            const int s = v0 + j < ns ? v0 + j : s_lo + v0 + j - ns;
            const int64_t v = (int64_t)(ring ? s % ring : s) * ld;
            if (dh % MATTN_VL == 0) {
                for (int i = 0; i < dh; i += MATTN_VL) {
                    const mattn_vf vv = vload_kv(Vh, v + i, f16);
                    for (int h = 0; h < g; h++) {
                        float *oh = o + (size_t)h * dh + i;
                        vstore(oh, vload(oh) + vset1(sc[h][j]) * vv);
                    }
                }
            } else {
                const float *vr = row_f32(Vh, v, f16, dh, tmp);
                for (int h = 0; h < g; h++) mattn_axpy(o + (size_t)h * dh, sc[h][j], vr, dh);
            }
        }
    }
}
static void decode_chunk_f32(const float *q, const void *Kh, const void *Vh, int64_t ld, int g, int dh, int ns,
                             int s_lo, int s_hi, int ring, float scale, float *m, float *l, float *o) {
    decode_chunk(q, Kh, Vh, ld, 0, g, dh, ns, s_lo, s_hi, ring, scale, m, l, o);
}
static void decode_chunk_f16(const float *q, const void *Kh, const void *Vh, int64_t ld, int g, int dh, int ns,
                             int s_lo, int s_hi, int ring, float scale, float *m, float *l, float *o) {
    decode_chunk(q, Kh, Vh, ld, 1, g, dh, ns, s_lo, s_hi, ring, scale, m, l, o);
}

/* One query against cached keys [lo, hi] (ring: slot s % ring), every head.
 * Query head h reads K/V head h / kv_group.  Work items are (a group of up
 * to DEC_GROUP query heads of one K/V head, a chunk of the keys): the
 * chunks (their number fixed by the context length alone, never by the
 * thread count, so the result is the same bits for any thread count) keep
 * both threads busy when there are few K/V heads (SmolLM2: 3) and the
 * shared rows are read once per group; the chunks' partial softmaxes are
 * combined in chunk order (flash-decoding).  Items run in parallel when
 * the context is long enough to pay for it. */
double mattn_attn_softmax_decode_kv(const float *q, const mattn_kv *kv, int H, int kv_group, int dh, int sinks,
                                    int lo, int hi, int ring, float *out) {
    const int g = kv_group > 1 ? kv_group : 1, n = hi - lo + 1, ns = sinks < lo ? sinks : lo;
    MATTN_ASSERT(H % g == 0 && sinks >= 0 && !(sinks && ring));
    const float scale = 1.0f / sqrtf((float)dh);
    const int sub = (g + DEC_GROUP - 1) / DEC_GROUP; /* head groups per K/V head */
    const int esz = kv->f16 ? 2 : (int)sizeof(float);
    void (*chunk)(const float *, const void *, const void *, int64_t, int, int, int, int, int, int, float,
                  float *, float *, float *) = kv->f16 ? decode_chunk_f16 : decode_chunk_f32;
    /* chunks of [lo, hi], the sinks [0, ns) in front of the first (their keys before its own, as the reference) */
    int C = n / DEC_CHUNK_KEYS;
    C = C < 1 ? 1 : C > DEC_CHUNKS ? DEC_CHUNKS : C;
    while (C > 1 && (size_t)C * H * (dh + 2) > DEC_PART) C--;
    float part[DEC_PART]; /* C > 1: per chunk and head m, l, o (dh) */
    const int items = (H / g) * sub * C;
    #pragma omp parallel for schedule(static) if ((double)(n + ns) * H * dh > 65536.0)
    for (int it = 0; it < items; it++) {
        const int c = it % C, hg = it / C, hk = hg / sub, h0 = hk * g + (hg % sub) * DEC_GROUP;
        const int gn = hk * g + g - h0 < DEC_GROUP ? hk * g + g - h0 : DEC_GROUP;
        const int s_lo = lo + (int)((int64_t)n * c / C), s_hi = lo + (int)((int64_t)n * (c + 1) / C) - 1;
        const char *Kh = (const char *)kv->k + hk * kv->hstride * esz;
        const char *Vh = (const char *)kv->v + hk * kv->hstride * esz;
        float m[DEC_GROUP], l[DEC_GROUP];
        float *o = C > 1 ? part + ((size_t)c * H + h0) * (dh + 2) : out + (size_t)h0 * dh;
        if (C > 1) {
            _Alignas(64) float ob[DEC_GROUP * MATTN_MAX_HEAD_DIM];
            chunk(q + (size_t)h0 * dh, Kh, Vh, kv->ld, gn, dh, c ? 0 : ns, s_lo, s_hi, ring, scale, m, l, ob);
            for (int h = 0; h < gn; h++) {
                float *p = o + (size_t)h * (dh + 2);
                p[0] = m[h], p[1] = l[h];
                for (int i = 0; i < dh; i++) p[2 + i] = ob[(size_t)h * dh + i];
            }
        } else {
            chunk(q + (size_t)h0 * dh, Kh, Vh, kv->ld, gn, dh, ns, s_lo, s_hi, ring, scale, m, l, o);
            for (int h = 0; h < gn; h++) {
                const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
                for (int i = 0; i < dh; i++) o[(size_t)h * dh + i] *= inv;
            }
        }
    }
    for (int h = 0; C > 1 && h < H; h++) { /* the chunks' softmaxes into one, chunk by chunk */
        float mx = -INFINITY, L = 0.0f, *oh = out + (size_t)h * dh;
        for (int c = 0; c < C; c++) {
            const float mc = part[((size_t)c * H + h) * (dh + 2)];
            mx = mc > mx ? mc : mx;
        }
        for (int i = 0; i < dh; i++) oh[i] = 0.0f;
        for (int c = 0; c < C; c++) {
            const float *p = part + ((size_t)c * H + h) * (dh + 2), w = p[1] > 0.0f ? expf(p[0] - mx) : 0.0f;
            L += p[1] * w;
            for (int i = 0; i < dh; i++) oh[i] += w * p[2 + i];
        }
        const float inv = L > 0.0f ? 1.0f / L : 0.0f;
        for (int i = 0; i < dh; i++) oh[i] *= inv;
    }
    return 4.0 * (n + ns) * (double)H * dh;
}

/* The plain formula: every score, the max, the exponentials, the weighted
 * sum — in double. */
double mattn_attn_softmax_decode_kv_ref(const float *q, const mattn_kv *kv, int H, int kv_group, int dh, int sinks,
                                        int lo, int hi, int ring, float *out) {
    const int g = kv_group > 1 ? kv_group : 1, ns = sinks < lo ? sinks : lo;
    MATTN_ASSERT(H % g == 0 && sinks >= 0 && !(sinks && ring));
    const double scale = 1.0 / sqrt((double)dh);
    for (int h = 0; h < H; h++) {
        const int64_t head = (int64_t)(h / g) * kv->hstride;
        double m = -INFINITY, l = 0.0, o[MATTN_MAX_HEAD_DIM] = {0};
        for (int s = ns > 0 ? 0 : lo; s <= hi; s = s + 1 == ns ? lo : s + 1) { /* the sinks, then [lo, hi] */
            const int64_t k = head + (int64_t)(ring ? s % ring : s) * kv->ld;
            double sc = 0.0;
            for (int i = 0; i < dh; i++) sc += (double)q[h * dh + i] * mattn_kv_at(kv->k, k + i, kv->f16);
            m = sc * scale > m ? sc * scale : m;
        }
        for (int s = ns > 0 ? 0 : lo; s <= hi; s = s + 1 == ns ? lo : s + 1) {
            const int64_t k = head + (int64_t)(ring ? s % ring : s) * kv->ld;
            double sc = 0.0;
            for (int i = 0; i < dh; i++) sc += (double)q[h * dh + i] * mattn_kv_at(kv->k, k + i, kv->f16);
            const double p = exp(sc * scale - m);
            l += p;
            for (int i = 0; i < dh; i++) o[i] += p * mattn_kv_at(kv->v, k + i, kv->f16);
        }
        for (int i = 0; i < dh; i++) out[(size_t)h * dh + i] = l > 0.0 ? (float)(o[i] / l) : 0.0f;
    }
    return 4.0 * (hi - lo + 1 + ns) * (double)H * dh;
}
