/*
 * attn_softmax.c — the softmax attention core shared by the "full" expert
 * (window < 0) and the "local" expert (window = w): multi-head
 * softmax(q k^T / sqrt(dh) + mask) v for the listed query rows.
 *
 * mattn_attn_softmax_forward streams over key blocks with an online softmax
 * (running max m, running sum l, rescaled accumulator): it never stores a
 * T x T matrix, and it saves the per-row log-sum-exp the backward will use to
 * recompute probabilities.  mattn_attn_softmax_forward_ref is the plain
 * three-pass formula (max, sum, weighted sum) the tests compare it against.
 * Dropout on the probabilities uses a counter-based hash of (b, h, t, s), so
 * both versions (and a backward) draw the same mask whatever the threads.
 */
#include <math.h>
#include <stdlib.h>

#include "mattn_impl.h"

#define KEY_BLOCK 64

// ----------------------------------------------------------------------------
// shared helpers

static inline int64_t n_queries(const mattn_attn_args *a) {
    return a->rows ? a->n_rows : (int64_t)a->B * a->T;
}

/* Score of query q against key s, or -INFINITY when s is masked out. */
static inline float score(const mattn_attn_args *a, const float *q, int b, int t, int s, int h,
                          float scale) {
    const mattn_masks *m = a->masks;
    if (m && m->key_padding && !m->key_padding[(size_t)b * a->T + s]) return -INFINITY;
    const float *k = a->k + ((size_t)b * a->T + s) * a->ld + (size_t)h * a->dh;
    float d = mattn_dot(q, k, a->dh) * scale;
    if (m && m->additive) {
        size_t off = m->additive_batched ? (size_t)b * a->T * a->T : 0;
        d += m->additive[off + (size_t)t * a->T + s];
    }
    return d;
}

/* Dropout multiplier for probability (b,h,t,s): 0 or 1/(1-p). */
static inline float keep(const mattn_attn_args *a, int b, int h, int t, int s) {
    if (a->dropout <= 0.0f) return 1.0f;
    uint64_t key = a->dropout_key ^ mattn_mix64((uint64_t)b * (uint64_t)a->H + (uint64_t)h + 1);
    double u = mattn_hash_u01(key, (uint64_t)t * (uint64_t)a->T + (uint64_t)s);
    return u < a->dropout ? 0.0f : 1.0f / (1.0f - a->dropout);
}

static double flops(const mattn_attn_args *a) {
    double f = 0.0;
    for (int64_t r = 0; r < n_queries(a); r++) {
        int tok = a->rows ? a->rows[r] : (int)r, lo, hi;
        mattn_attn_key_range(tok % a->T, a->T, a->causal, a->window, &lo, &hi);
        if (hi >= lo) f += (double)(hi - lo + 1);
    }
    return f * 4.0 * a->H * a->dh; /* q.k and p*v: 2*dh each per key and head */
}

// ----------------------------------------------------------------------------
// streaming (online-softmax) version

double mattn_attn_softmax_forward(const mattn_attn_args *a) {
    const int64_t n = n_queries(a);
    const int H = a->H, dh = a->dh, T = a->T;
    const float scale = 1.0f / sqrtf((float)dh);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int64_t r = 0; r < n; r++) {
        for (int h = 0; h < H; h++) {
            int tok = a->rows ? a->rows[r] : (int)r, b = tok / T, t = tok % T, lo, hi;
            mattn_attn_key_range(t, T, a->causal, a->window, &lo, &hi);
            const float *q = a->q + (size_t)tok * a->ld + (size_t)h * dh;
            float *acc = a->out + (size_t)tok * a->ldo + (size_t)h * dh;
            for (int i = 0; i < dh; i++) acc[i] = 0.0f;
            float m = -INFINITY, l = 0.0f, s[KEY_BLOCK];
            for (int s0 = lo; s0 <= hi; s0 += KEY_BLOCK) {
                int nb = hi - s0 + 1 < KEY_BLOCK ? hi - s0 + 1 : KEY_BLOCK;
                float bm = -INFINITY;
                for (int j = 0; j < nb; j++) {
                    s[j] = score(a, q, b, t, s0 + j, h, scale);
                    bm = s[j] > bm ? s[j] : bm;
                }
                if (bm == -INFINITY) continue;
                float mn = bm > m ? bm : m;
                float corr = expf(m - mn); /* 0 when m == -inf */
                l *= corr;
                for (int i = 0; i < dh; i++) acc[i] *= corr;
                for (int j = 0; j < nb; j++) {
                    float p = expf(s[j] - mn);
                    l += p;
                    p *= keep(a, b, h, t, s0 + j);
                    if (p == 0.0f) continue;
                    mattn_axpy(acc, p, a->v + ((size_t)b * T + s0 + j) * a->ld + (size_t)h * dh, dh);
                }
                m = mn;
            }
            float inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (int i = 0; i < dh; i++) acc[i] *= inv;
            if (a->lse) a->lse[((size_t)b * H + h) * T + t] = l > 0.0f ? m + logf(l) : -INFINITY;
        }
    }
    return flops(a);
}

// ----------------------------------------------------------------------------
// reference: three passes over the visible keys

double mattn_attn_softmax_forward_ref(const mattn_attn_args *a) {
    const int H = a->H, dh = a->dh, T = a->T;
    const float scale = 1.0f / sqrtf((float)dh);
    for (int64_t r = 0; r < n_queries(a); r++) {
        for (int h = 0; h < H; h++) {
            int tok = a->rows ? a->rows[r] : (int)r, b = tok / T, t = tok % T, lo, hi;
            mattn_attn_key_range(t, T, a->causal, a->window, &lo, &hi);
            const float *q = a->q + (size_t)tok * a->ld + (size_t)h * dh;
            float *o = a->out + (size_t)tok * a->ldo + (size_t)h * dh;
            double m = -INFINITY, l = 0.0;
            for (int s = lo; s <= hi; s++) {
                double sc = score(a, q, b, t, s, h, scale);
                if (sc > m) m = sc;
            }
            for (int s = lo; s <= hi && m > -INFINITY; s++)
                l += exp(score(a, q, b, t, s, h, scale) - m);
            for (int i = 0; i < dh; i++) {
                double acc = 0.0;
                for (int s = lo; s <= hi && l > 0.0; s++) {
                    double p = exp(score(a, q, b, t, s, h, scale) - m) / l * keep(a, b, h, t, s);
                    acc += p * a->v[((size_t)b * T + s) * a->ld + (size_t)h * dh + i];
                }
                o[i] = (float)acc;
            }
            if (a->lse) a->lse[((size_t)b * H + h) * T + t] = l > 0.0 ? (float)(m + log(l)) : -INFINITY;
        }
    }
    return flops(a);
}

// ----------------------------------------------------------------------------
// backward (every query row; training runs every expert on every token)
//
// o_t = sum_s P_ts m_ts v_s with P = softmax(scores), m the dropout multiplier:
//   D_t    = <go_t, o_t>                   (= sum_s P_ts dP_ts)
//   dP_ts  = m_ts <go_t, v_s>
//   dS_ts  = P_ts (dP_ts - D_t)
//   gv_s  += P_ts m_ts go_t,  gq_t += scale dS_ts k_s,  gk_s += scale dS_ts q_t
// P_ts is recomputed from the saved log-sum-exp: exp(score - lse_t).

static inline float *grow(float *base, const mattn_attn_grad *g, int b, int T, int t, int h, int dh) {
    return base + ((size_t)b * T + t) * g->ldg + (size_t)h * dh;
}

void mattn_attn_softmax_backward(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows && a->lse);
    const int B = a->B, T = a->T, H = a->H, dh = a->dh;
    const float scale = 1.0f / sqrtf((float)dh);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const float lse = a->lse[((size_t)b * H + h) * T + t];
                if (lse == -INFINITY) continue; /* saw no key: output 0, no gradient */
                const size_t row = (size_t)b * T + t;
                const float *q = a->q + row * a->ld + (size_t)h * dh;
                const float *o = a->out + row * a->ldo + (size_t)h * dh;
                const float *go = g->gout + row * g->ldgo + (size_t)h * dh;
                float *gq = grow(g->gq, g, b, T, t, h, dh);
                const float Dt = mattn_dot(go, o, dh);
                int lo, hi;
                mattn_attn_key_range(t, T, a->causal, a->window, &lo, &hi);
                for (int s = lo; s <= hi; s++) {
                    float sc = score(a, q, b, t, s, h, scale);
                    if (sc == -INFINITY) continue;
                    const float p = expf(sc - lse), mk = keep(a, b, h, t, s);
                    const size_t ks = ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    const float *k = a->k + ks, *v = a->v + ks;
                    float *gk = grow(g->gk, g, b, T, s, h, dh), *gv = grow(g->gv, g, b, T, s, h, dh);
                    const float dp = mattn_dot(go, v, dh);
                    const float ds = p * (mk * dp - Dt) * scale, pm = p * mk;
                    mattn_axpy(gv, pm, go, dh);
                    mattn_axpy(gq, ds, k, dh);
                    mattn_axpy(gk, ds, q, dh);
                }
            }
        }
    }
}

/* Reference: materialise P (T x T, double) per (b, h) and apply the matrix
 * formulas; recomputes everything from q, k, v (ignores lse and out). */
void mattn_attn_softmax_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows);
    const int B = a->B, T = a->T, H = a->H, dh = a->dh;
    const float scale = 1.0f / sqrtf((float)dh);
    double *P = malloc(sizeof(double) * (size_t)T * T), *dS = malloc(sizeof(double) * (size_t)T * T);
    MATTN_ASSERT(P && dS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const float *q = a->q + ((size_t)b * T + t) * a->ld + (size_t)h * dh;
                double m = -INFINITY, l = 0.0;
                for (int s = 0; s < T; s++) {
                    int lo, hi;
                    mattn_attn_key_range(t, T, a->causal, a->window, &lo, &hi);
                    double sc = s >= lo && s <= hi ? score(a, q, b, t, s, h, scale) : -INFINITY;
                    P[(size_t)t * T + s] = sc;
                    if (sc > m) m = sc;
                }
                for (int s = 0; s < T; s++) {
                    double e = m > -INFINITY ? exp(P[(size_t)t * T + s] - m) : 0.0;
                    P[(size_t)t * T + s] = e;
                    l += e;
                }
                for (int s = 0; s < T; s++) P[(size_t)t * T + s] = l > 0.0 ? P[(size_t)t * T + s] / l : 0.0;
            }
            /* dP = (go v^T) .* mask;  dS = P .* (dP - rowsum(P .* dP)) */
            for (int t = 0; t < T; t++) {
                const float *go = g->gout + ((size_t)b * T + t) * g->ldgo + (size_t)h * dh;
                double Dt = 0.0;
                for (int s = 0; s < T; s++) {
                    const float *v = a->v + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    double dp = 0.0;
                    for (int i = 0; i < dh; i++) dp += (double)go[i] * v[i];
                    dp *= keep(a, b, h, t, s);
                    dS[(size_t)t * T + s] = dp;
                    Dt += P[(size_t)t * T + s] * dp;
                }
                for (int s = 0; s < T; s++) {
                    double p = P[(size_t)t * T + s], ds = p * (dS[(size_t)t * T + s] - Dt) * scale;
                    float *gq = grow(g->gq, g, b, T, t, h, dh), *gk = grow(g->gk, g, b, T, s, h, dh);
                    float *gv = grow(g->gv, g, b, T, s, h, dh);
                    const size_t ks = ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    const float *k = a->k + ks, *q = a->q + ((size_t)b * T + t) * a->ld + (size_t)h * dh;
                    double pm = p * keep(a, b, h, t, s);
                    for (int i = 0; i < dh; i++) {
                        gv[i] += (float)(pm * go[i]);
                        gq[i] += (float)(ds * k[i]);
                        gk[i] += (float)(ds * q[i]);
                    }
                }
            }
        }
    }
    free(P);
    free(dS);
}
