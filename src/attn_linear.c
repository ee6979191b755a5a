/*
 * attn_linear.c — the linear (kernel) attention core of the "linear" expert:
 * phi(x) = ELU(x) + 1 on q and k, out_t = phi(q_t)^T S / (phi(q_t)^T z + 1e-6)
 * with S = sum_s phi(k_s) v_s^T and z = sum_s phi(k_s); causal sums run over
 * s <= t, bidirectional ones over all s.  Padded keys are left out of S and z;
 * the additive mask does not apply (there are no scores).
 *
 * mattn_attn_linear_forward walks the keys once per (batch, head), carrying
 * (S, z) in the caller's workspace and answering the listed queries in
 * order: O(T dh^2) per head, keys only as far as the last query needs.
 * mattn_attn_linear_forward_ref is the quadratic formula
 * out_t = sum_s (phi(q_t).phi(k_s)) v_s / (sum_s phi(q_t).phi(k_s) + 1e-6).
 */
#include <math.h>

#include "mattn_impl.h"

static inline float phi(float x) { return x > 0.0f ? x + 1.0f : expf(x); }

static inline int padded(const mattn_attn_args *a, int b, int s) {
    return a->masks && a->masks->key_padding && !a->masks->key_padding[(size_t)b * a->T + s];
}

// ----------------------------------------------------------------------------
// streaming version: one pass over the keys per (b, h)

double mattn_attn_linear_forward(const mattn_attn_args *a) {
    const int B = a->B, T = a->T, H = a->H, dh = a->dh;
    const int64_t n = a->rows ? a->n_rows : (int64_t)B * T;
    double keys = 0.0;
    for (int b = 0; b < B; b++) {
        int64_t r0 = a->rows ? mattn_lower_bound(a->rows, n, (int64_t)b * T) : (int64_t)b * T;
        int64_t r1 = a->rows ? mattn_lower_bound(a->rows, n, (int64_t)(b + 1) * T) : (int64_t)(b + 1) * T;
        if (r1 > r0) keys += a->causal ? (a->rows ? a->rows[r1 - 1] : r1 - 1) - (int64_t)b * T + 1 : T;
    }
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int64_t r0 = a->rows ? mattn_lower_bound(a->rows, n, (int64_t)b * T) : (int64_t)b * T;
            int64_t r1 = a->rows ? mattn_lower_bound(a->rows, n, (int64_t)(b + 1) * T) : (int64_t)(b + 1) * T;
            if (r1 == r0) continue;
            float *S = a->state + ((size_t)b * H + h) * (size_t)(dh * dh + dh), *z = S + dh * dh;
            for (int i = 0; i < dh * dh + dh; i++) S[i] = 0.0f;
            int s = 0;
            for (int64_t r = r0; r < r1; r++) {
                int tok = a->rows ? a->rows[r] : (int)r, t = tok % T;
                int until = a->causal ? t : T - 1;
                for (; s <= until; s++) { /* add key s: S += phi(k) v^T, z += phi(k) */
                    if (padded(a, b, s)) continue;
                    const float *k = a->k + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    const float *v = a->v + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    for (int i = 0; i < dh; i++) {
                        float pk = phi(k[i]);
                        z[i] += pk;
                        for (int j = 0; j < dh; j++) S[i * dh + j] += pk * v[j];
                    }
                }
                const float *q = a->q + (size_t)tok * a->ld + (size_t)h * dh;
                float *o = a->out + (size_t)tok * a->ldo + (size_t)h * dh;
                float den = 0.0f;
                for (int j = 0; j < dh; j++) o[j] = 0.0f;
                for (int i = 0; i < dh; i++) {
                    float pq = phi(q[i]);
                    den += pq * z[i];
                    for (int j = 0; j < dh; j++) o[j] += pq * S[i * dh + j];
                }
                float inv = 1.0f / (den + 1e-6f);
                for (int j = 0; j < dh; j++) o[j] *= inv;
            }
        }
    }
    /* per key and head: phi, S update 2 dh^2, z update dh; per query: 2 dh^2 + 2 dh + dh */
    return (double)H * (keys * (2.0 * dh * dh + 2.0 * dh) + (double)n * (2.0 * dh * dh + 4.0 * dh));
}

// ----------------------------------------------------------------------------
// reference: the quadratic formula

/* Reference numerator and denominator for query (b, h, t) in double:
 * num = sum_s w_s v_s, den = sum_s w_s with w_s = phi(q).phi(k_s) over the
 * visible, unpadded keys (den without the 1e-6).  dh <= 512. */
static void ref_numden(const mattn_attn_args *a, int b, int h, int t, const float *q, double *num, double *den) {
    const int T = a->T, dh = a->dh;
    MATTN_ASSERT(dh <= 512);
    *den = 0.0;
    for (int i = 0; i < dh; i++) num[i] = 0.0;
    for (int s = 0; s <= (a->causal ? t : T - 1); s++) {
        if (padded(a, b, s)) continue;
        const float *k = a->k + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
        const float *v = a->v + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
        double w = 0.0;
        for (int i = 0; i < dh; i++) w += (double)phi(q[i]) * phi(k[i]);
        *den += w;
        for (int i = 0; i < dh; i++) num[i] += w * v[i];
    }
}

double mattn_attn_linear_forward_ref(const mattn_attn_args *a) {
    const int T = a->T, H = a->H, dh = a->dh;
    const int64_t n = a->rows ? a->n_rows : (int64_t)a->B * T;
    for (int64_t r = 0; r < n; r++) {
        int tok = a->rows ? a->rows[r] : (int)r, b = tok / T, t = tok % T;
        for (int h = 0; h < H; h++) {
            const float *q = a->q + (size_t)tok * a->ld + (size_t)h * dh;
            float *o = a->out + (size_t)tok * a->ldo + (size_t)h * dh;
            double num[512], den;
            ref_numden(a, b, h, t, q, num, &den);
            for (int i = 0; i < dh; i++) o[i] = (float)(num[i] / (den + 1e-6));
        }
    }
    return 0.0;
}

// ----------------------------------------------------------------------------
// backward (every query row)
//
// o_t = num_t / den_t, num_t = S_t^T phi(q_t), den_t = phi(q_t).z_t + 1e-6:
//   gnum_t = go_t / den_t,  gden_t = -<go_t, o_t> / den_t
//   gphi(q_t) = S_t gnum_t + gden_t z_t
//   gphi(k_s) = G_s v_s + gz_s,  gv_s = G_s^T phi(k_s)
// with G_s = sum_{t sees s} phi(q_t) gnum_t^T and gz_s = sum_{t sees s} gden_t phi(q_t)
// (t >= s when causal, every t otherwise).  Pass 1 runs forward carrying
// (S, z); pass 2 runs backward carrying (G, gz).  Scratch (g->state):
// B*H*(dh^2 + dh) floats for the carried state, then B*T*H*(dh + 1) for
// gnum and gden.

static inline float dphi(float x) { return x > 0.0f ? 1.0f : expf(x); }

size_t mattn_attn_linear_backward_scratch(int B, int T, int H, int dh) {
    return ((size_t)B * H * ((size_t)dh * dh + dh) + (size_t)B * T * H * (dh + 1)) * sizeof(float);
}

void mattn_attn_linear_backward(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows);
    const int B = a->B, T = a->T, H = a->H, dh = a->dh;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            float *S = g->state + ((size_t)b * H + h) * (size_t)(dh * dh + dh), *z = S + dh * dh;
            float *gn = g->state + (size_t)B * H * (dh * dh + dh) + ((size_t)b * H + h) * (size_t)T * (dh + 1);
            for (int i = 0; i < dh * dh + dh; i++) S[i] = 0.0f;
            #define KV(s) const size_t ks = ((size_t)b * T + (s)) * a->ld + (size_t)h * dh; \
                          const float *k = a->k + ks, *v = a->v + ks
            if (!a->causal)
                for (int s = 0; s < T; s++) {
                    if (padded(a, b, s)) continue;
                    KV(s);
                    for (int i = 0; i < dh; i++) {
                        float pk = phi(k[i]);
                        z[i] += pk;
                        for (int j = 0; j < dh; j++) S[i * dh + j] += pk * v[j];
                    }
                }
            for (int t = 0; t < T; t++) { /* pass 1 */
                if (a->causal && !padded(a, b, t)) {
                    KV(t);
                    for (int i = 0; i < dh; i++) {
                        float pk = phi(k[i]);
                        z[i] += pk;
                        for (int j = 0; j < dh; j++) S[i * dh + j] += pk * v[j];
                    }
                }
                const size_t row = (size_t)b * T + t;
                const float *q = a->q + row * a->ld + (size_t)h * dh;
                const float *o = a->out + row * a->ldo + (size_t)h * dh;
                const float *go = g->gout + row * g->ldgo + (size_t)h * dh;
                float *gq = g->gq + row * g->ldg + (size_t)h * dh, *gnum = gn + (size_t)t * (dh + 1);
                float den = 0.0f, god = 0.0f;
                for (int i = 0; i < dh; i++) {
                    den += phi(q[i]) * z[i];
                    god += go[i] * o[i];
                }
                den += 1e-6f;
                for (int j = 0; j < dh; j++) gnum[j] = go[j] / den;
                const float gden = gnum[dh] = -god / den;
                for (int i = 0; i < dh; i++)
                    gq[i] += (gden * z[i] + mattn_dot(S + (size_t)i * dh, gnum, dh)) * dphi(q[i]);
            }
            float *G = S, *gz = z; /* reuse the state buffer */
            for (int i = 0; i < dh * dh + dh; i++) S[i] = 0.0f;
            if (!a->causal)
                for (int t = 0; t < T; t++) {
                    const float *q = a->q + ((size_t)b * T + t) * a->ld + (size_t)h * dh;
                    const float *gnum = gn + (size_t)t * (dh + 1);
                    for (int i = 0; i < dh; i++) {
                        float pq = phi(q[i]);
                        gz[i] += gnum[dh] * pq;
                        for (int j = 0; j < dh; j++) G[i * dh + j] += pq * gnum[j];
                    }
                }
            for (int s = T - 1; s >= 0; s--) { /* pass 2 */
                if (a->causal) {
                    const float *q = a->q + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    const float *gnum = gn + (size_t)s * (dh + 1);
                    for (int i = 0; i < dh; i++) {
                        float pq = phi(q[i]);
                        gz[i] += gnum[dh] * pq;
                        for (int j = 0; j < dh; j++) G[i * dh + j] += pq * gnum[j];
                    }
                }
                if (padded(a, b, s)) continue;
                KV(s);
                float *gk = g->gk + ((size_t)b * T + s) * g->ldg + (size_t)h * dh;
                float *gv = g->gv + ((size_t)b * T + s) * g->ldg + (size_t)h * dh;
                for (int i = 0; i < dh; i++) {
                    const float *Gi = G + (size_t)i * dh;
                    gk[i] += (gz[i] + mattn_dot(Gi, v, dh)) * dphi(k[i]);
                    mattn_axpy(gv, phi(k[i]), Gi, dh);
                }
            }
            #undef KV
        }
    }
}

/* Reference: the quadratic form in double.  A_ts = phi(q_t).phi(k_s) over
 * visible, unpadded s; gA_ts = <gnum_t, v_s> + gden_t. */
void mattn_attn_linear_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows);
    const int B = a->B, T = a->T, H = a->H, dh = a->dh;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *q = a->q + ((size_t)b * T + t) * a->ld + (size_t)h * dh;
                const float *go = g->gout + ((size_t)b * T + t) * g->ldgo + (size_t)h * dh;
                double num[512], den;
                ref_numden(a, b, h, t, q, num, &den);
                const int last = a->causal ? t : T - 1;
                den += 1e-6;
                double gden = 0.0;
                for (int i = 0; i < dh; i++) gden -= (double)go[i] * num[i] / (den * den);
                float *gq = g->gq + ((size_t)b * T + t) * g->ldg + (size_t)h * dh;
                for (int s = 0; s <= last; s++) {
                    if (padded(a, b, s)) continue;
                    const float *k = a->k + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    const float *v = a->v + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    float *gk = g->gk + ((size_t)b * T + s) * g->ldg + (size_t)h * dh;
                    float *gv = g->gv + ((size_t)b * T + s) * g->ldg + (size_t)h * dh;
                    double w = 0.0, gA = gden;
                    for (int i = 0; i < dh; i++) {
                        w += (double)phi(q[i]) * phi(k[i]);
                        gA += (double)go[i] / den * v[i];
                    }
                    for (int i = 0; i < dh; i++) {
                        gv[i] += (float)(w * go[i] / den);
                        gq[i] += (float)(gA * phi(k[i]) * dphi(q[i]));
                        gk[i] += (float)(gA * phi(q[i]) * dphi(k[i]));
                    }
                }
            }
}
