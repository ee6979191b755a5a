/*
 * attn_softmax_inl.h — the softmax core's geometry and its scalar formulas,
 * shared by the tiled kernels (attn_softmax.c) and their plain references
 * (attn_softmax_ref.c); internal to src/kernels.
 */
#ifndef MATTN_ATTN_SOFTMAX_INL_H
#define MATTN_ATTN_SOFTMAX_INL_H

#include <math.h>

#include "kernels/kernels.h"
#include "kernels/simd.h"

// ----------------------------------------------------------------------------
// shared helpers

static inline int64_t n_queries(const mattn_attn_args *a) {
    return a->rows ? a->n_rows : (int64_t)a->B * a->T;
}

/* The geometry fields with their defaults (kernels.h): keys per sequence,
 * the K/V row stride, the position of query row 0, query head h's K/V head. */
static inline int n_keys(const mattn_attn_args *a) { return a->Tk > 0 ? a->Tk : a->T; }
static inline int ld_kv(const mattn_attn_args *a) { return a->ldkv > 0 ? a->ldkv : a->ld; }
static inline int q_pos0(const mattn_attn_args *a) { return n_keys(a) - a->T; }
static inline int kv_head(const mattn_attn_args *a, int h) { return a->kv_group > 1 ? h / a->kv_group : h; }

/* Element i of query head h's key (v = 0) or value (v = 1) at position s of
 * batch b: from the cache view a->kv when there is one, else from k/v rows. */
static inline float kv_elem(const mattn_attn_args *a, int v, int b, int s, int h, int i) {
    const int64_t pos = (int64_t)b * n_keys(a) + s;
    if (a->kv)
        return mattn_kv_at(v ? a->kv->v : a->kv->k, pos * a->kv->ld + kv_head(a, h) * a->kv->hstride + i,
                           a->kv->f16);
    return (v ? a->v : a->k)[pos * ld_kv(a) + (int64_t)kv_head(a, h) * a->dh + i];
}

/* Sinks a query with key range [lo, hi] sees beside it: keys [0, that). */
static inline int n_sinks(const mattn_attn_args *a, int lo) { return a->sinks < lo ? a->sinks : lo; }
/* The keys a query sees in order: its sinks [0, ns), then [lo, hi]. */
static inline int next_key(int s, int ns, int lo) { return s + 1 == ns ? lo : s + 1; }
static inline int first_key(int ns, int lo) { return ns > 0 ? 0 : lo; }

static inline void check_geometry(const mattn_attn_args *a) {
    MATTN_ASSERT(a->dh <= MATTN_MAX_HEAD_DIM);
    MATTN_ASSERT(a->sinks >= 0 && (a->sinks == 0 || a->causal));
    MATTN_ASSERT(a->Tk == 0 || a->Tk >= a->T);
    MATTN_ASSERT(a->kv_group <= 1 || a->H % a->kv_group == 0);
}

/* Score of query row t (q) against key s, or -INFINITY when s is masked out. */
static inline float score(const mattn_attn_args *a, const float *q, int b, int t, int s, int h,
                          float scale) {
    const mattn_masks *m = a->masks;
    const int Tk = n_keys(a);
    if (m && m->key_padding && !m->key_padding[(size_t)b * Tk + s]) return -INFINITY;
    float d;
    if (a->kv) {
        d = 0.0f;
        for (int i = 0; i < a->dh; i++) d += q[i] * kv_elem(a, 0, b, s, h, i);
        d *= scale;
    } else {
        d = mattn_dot(q, a->k + ((size_t)b * Tk + s) * ld_kv(a) + (size_t)kv_head(a, h) * a->dh, a->dh) * scale;
    }
    if (m && m->additive) {
        size_t off = m->additive_batched ? (size_t)b * a->T * Tk : 0;
        d += m->additive[off + (size_t)t * Tk + s];
    }
    return d;
}

/* Dropout multiplier for probability (b,h,t,s), t a query row: 0 or 1/(1-p).
 * Hashed on the query's position, so a chunk draws what the whole would. */
static inline float keep(const mattn_attn_args *a, int b, int h, int t, int s) {
    if (a->dropout <= 0.0f) return 1.0f;
    uint64_t key = a->dropout_key ^ mattn_mix64((uint64_t)b * (uint64_t)a->H + (uint64_t)h + 1);
    double u = mattn_hash_u01(key, (uint64_t)(t + q_pos0(a)) * (uint64_t)n_keys(a) + (uint64_t)s);
    return u < a->dropout ? 0.0f : 1.0f / (1.0f - a->dropout);
}

static inline double flops(const mattn_attn_args *a) {
    double f = 0.0;
    for (int64_t r = 0; r < n_queries(a); r++) {
        int tok = a->rows ? a->rows[r] : (int)r, lo, hi;
        mattn_attn_key_range(tok % a->T + q_pos0(a), n_keys(a), a->causal, a->window, &lo, &hi);
        if (hi >= lo) f += (double)(hi - lo + 1 + n_sinks(a, lo));
    }
    return f * 4.0 * a->H * a->dh; /* q.k and p*v: 2*dh each per key and head */
}

/* The backward passes take plain multi-head geometry only (sinks: causal). */
static inline int mha_geometry(const mattn_attn_args *a) {
    return a->kv_group <= 1 && (a->Tk == 0 || a->Tk == a->T) && (a->ldkv == 0 || a->ldkv == a->ld) && !a->kv &&
           a->sinks >= 0 && (!a->sinks || a->causal);
}

#endif
