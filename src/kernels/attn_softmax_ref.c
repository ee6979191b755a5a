/*
 * attn_softmax_ref.c — the plain formulas the tiled softmax kernels
 * (attn_softmax.c) are tested against: the forward in three passes over
 * each row's visible keys, the backward with P materialised in double.
 */
#include <math.h>

#include "kernels/attn_softmax_inl.h"
#include "kernels/kernels.h"

// ----------------------------------------------------------------------------
// reference: three passes over the visible keys

double mattn_attn_softmax_forward_ref(const mattn_attn_args *a) {
    check_geometry(a);
    const int H = a->H, dh = a->dh, T = a->T, Tk = n_keys(a);
    const float scale = 1.0f / sqrtf((float)dh);
    for (int64_t r = 0; r < n_queries(a); r++) {
        for (int h = 0; h < H; h++) {
            int tok = a->rows ? a->rows[r] : (int)r, b = tok / T, t = tok % T, lo, hi;
            mattn_attn_key_range(t + q_pos0(a), Tk, a->causal, a->window, &lo, &hi);
            const int ns = hi >= lo ? n_sinks(a, lo) : 0, s1 = first_key(ns, lo);
            const float *q = a->q + (size_t)tok * a->ld + (size_t)h * dh;
            float *o = a->out + (size_t)tok * a->ldo + (size_t)h * dh;
            double m = -INFINITY, l = 0.0;
            for (int s = s1; s <= hi; s = next_key(s, ns, lo)) {
                double sc = score(a, q, b, t, s, h, scale);
                if (sc > m) m = sc;
            }
            for (int s = s1; s <= hi && m > -INFINITY; s = next_key(s, ns, lo))
                l += exp(score(a, q, b, t, s, h, scale) - m);
            for (int i = 0; i < dh; i++) {
                double acc = 0.0;
                for (int s = s1; s <= hi && l > 0.0; s = next_key(s, ns, lo)) {
                    double p = exp(score(a, q, b, t, s, h, scale) - m) / l * keep(a, b, h, t, s);
                    acc += p * kv_elem(a, 1, b, s, h, i);
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

/* Reference: materialise P (T x T, double) per (b, h) and apply the matrix
 * formulas; recomputes everything from q, k, v (ignores lse and out). */
void mattn_attn_softmax_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows && mha_geometry(a));
    const int B = a->B, T = a->T, H = a->H, dh = a->dh;
    const float scale = 1.0f / sqrtf((float)dh);
    double *P = mattn_malloc(sizeof(double) * (size_t)T * T), *dS = mattn_malloc(sizeof(double) * (size_t)T * T);
    MATTN_ASSERT(P && dS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const float *q = a->q + ((size_t)b * T + t) * a->ld + (size_t)h * dh;
                double m = -INFINITY, l = 0.0;
                for (int s = 0; s < T; s++) {
                    int lo, hi;
                    mattn_attn_key_range(t, T, a->causal, a->window, &lo, &hi);
                    double sc = (s >= lo || s < a->sinks) && s <= hi ? score(a, q, b, t, s, h, scale) : -INFINITY;
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
    mattn_free(P);
    mattn_free(dS);
}
