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

#include <string.h>

#include "mattn_impl.h"
#include "microkernel.h"

static inline float phi(float x) { return x > 0.0f ? x + 1.0f : expf(x); }

static inline int padded(const mattn_attn_args *a, int b, int s) {
    return a->masks && a->masks->key_padding && !a->masks->key_padding[(size_t)b * a->T + s];
}

// ----------------------------------------------------------------------------
// chunked version
//
// Per (batch, head), keys and queries in chunks of LC positions.  Causal:
// the queries of a chunk get the state of the chunks before it through GEMMs
// (num = phi(Q) S, den = phi(Q) z) plus the chunk itself as a small masked
// attention (A = phi(Q) phi(K)^T, lower-triangular; num += A V, den += A 1);
// then S += phi(K)^T V, z += colsum phi(K).  Bidirectional: S and z over
// every key first, then num = phi(Q) S.  All products run in mk_xyt / mk_ay
// (microkernel.h).  A task writes only its own rows: the result does not
// depend on threads.

#define LC 64                         /* chunk length */
#define LDH MATTN_MAX_HEAD_DIM        /* padded head dimension bound */

/* Per-thread workspace: Qp (LC x dhp), Kp (LC x dhp), KpT (dh x LC), Vp
 * (LC x dhp), A (LC x LC), num (LC x dhp), S (dh x dhp), z (dh). */
#define LIN_FLOATS (5 * (size_t)LC * LDH + (size_t)LC * LC + (size_t)LDH * LDH + LDH)

static inline int lin_pad(int dh) { return (dh + CW - 1) / CW * CW; }

/* phi of rows [s0, s0+n) of x into X (n x dhp, zero-padded); padded keys
 * (kp != NULL and kp[s] == 0) become zero rows.  XT (dh x LC), if given,
 * receives the transpose, zero columns from n up to LC. */
static void pack_phi(const float *x, int ld, int s0, int n, int dh, int dhp, const uint8_t *kp, float *X,
                     float *XT) {
    for (int j = 0; j < n; j++) {
        float *row = X + (size_t)j * dhp;
        const float *src = x + (size_t)(s0 + j) * ld;
        const int drop = kp && !kp[s0 + j];
        int d = 0;
        if (!drop)
            for (; d + MATTN_VL <= dh; d += MATTN_VL) vstore(row + d, vphi(vload(src + d)));
        for (; d < dh; d++) row[d] = drop ? 0.0f : phi(src[d]);
        for (; d < dhp; d++) row[d] = 0.0f;
        if (XT)
            for (d = 0; d < dh; d++) XT[(size_t)d * LC + j] = row[d];
    }
    if (XT)
        for (int d = 0; d < dh; d++)
            for (int j = n; j < LC; j++) XT[(size_t)d * LC + j] = 0.0f;
}

static void pack_plain(const float *x, int ld, int s0, int n, int dh, int dhp, const uint8_t *kp, float *X) {
    for (int j = 0; j < n; j++) {
        float *row = X + (size_t)j * dhp;
        const float *src = x + (size_t)(s0 + j) * ld;
        const int drop = kp && !kp[s0 + j];
        int d = 0;
        for (; d < dh; d++) row[d] = drop ? 0.0f : src[d];
        for (; d < dhp; d++) row[d] = 0.0f;
    }
}

/* S += Kp^T Vp, z += colsum Kp over n keys; returns FLOPs. */
static double lin_update(int n, int dh, int dhp, const float *Kp, const float *Vp, float *S, float *z) {
    mk_ay(dh, n, dhp, Kp, 1, dhp, Vp, dhp, S, dhp);
    for (int j = 0; j < n; j++)
        for (int d = 0; d < dh; d++) z[d] += Kp[(size_t)j * dhp + d];
    return 2.0 * n * dh * dh + (double)n * dh;
}

static double lin_head(const mattn_attn_args *a, int b, int h, float *ws) {
    const int T = a->T, dh = a->dh, dhp = lin_pad(dh);
    int64_t r0 = b * (int64_t)T, r1 = (b + 1) * (int64_t)T;
    if (a->rows) {
        r0 = mattn_lower_bound(a->rows, a->n_rows, r0);
        r1 = mattn_lower_bound(a->rows, a->n_rows, r1);
    }
    if (r1 == r0) return 0.0;
    float *Qp = ws, *Kp = Qp + LC * LDH, *KpT = Kp + LC * LDH, *Vp = KpT + LC * LDH, *num = Vp + LC * LDH;
    float *A = num + LC * LDH, *S = A + LC * LC, *z = S + LDH * LDH;
    const size_t hb = (size_t)b * T;
    const float *q = a->q + (size_t)h * dh, *k = a->k + hb * a->ld + (size_t)h * dh;
    const float *v = a->v + hb * a->ld + (size_t)h * dh;
    const uint8_t *kp = a->masks && a->masks->key_padding ? a->masks->key_padding + hb : NULL;
    memset(S, 0, sizeof(float) * (size_t)dh * dhp);
    memset(z, 0, sizeof(float) * (size_t)dh);
    double f = 0.0;
    const int last = a->causal ? (int)((a->rows ? a->rows[r1 - 1] : r1 - 1) - (int64_t)hb) : T - 1;
    if (!a->causal)
        for (int c0 = 0; c0 <= last; c0 += LC) {
            const int nk = last - c0 + 1 < LC ? last - c0 + 1 : LC;
            pack_phi(k, a->ld, c0, nk, dh, dhp, kp, Kp, NULL);
            pack_plain(v, a->ld, c0, nk, dh, dhp, NULL, Vp);
            f += lin_update(nk, dh, dhp, Kp, Vp, S, z);
        }
    int64_t r = r0;
    int tok[LC];
    for (int c0 = 0; c0 <= last; c0 += LC) {
        const int nk = last - c0 + 1 < LC ? last - c0 + 1 : LC;
        int nq = 0; /* the chunk's query rows */
        while (r < r1 && nq < LC) {
            const int t = (int)((a->rows ? a->rows[r] : r) - (int64_t)hb);
            if (t >= c0 + LC) break;
            tok[nq++] = (int)hb + t;
            r++;
        }
        if (a->causal) {
            pack_phi(k, a->ld, c0, nk, dh, dhp, kp, Kp, KpT);
            pack_plain(v, a->ld, c0, nk, dh, dhp, NULL, Vp);
        }
        if (nq) {
            for (int i = 0; i < nq; i++) pack_phi(q + (size_t)tok[i] * a->ld, 0, 0, 1, dh, dhp, NULL, Qp + (size_t)i * dhp, NULL);
            memset(num, 0, sizeof(float) * (size_t)nq * dhp);
            mk_ay(nq, dh, dhp, Qp, dhp, 1, S, dhp, num, dhp); /* phi(Q) S */
            f += 2.0 * nq * dh * dh;
            float den[LC];
            for (int i = 0; i < nq; i++) {
                double s = 0.0;
                for (int d = 0; d < dh; d++) s += Qp[(size_t)i * dhp + d] * z[d];
                den[i] = (float)s;
            }
            if (a->causal) { /* the chunk itself: A = phi(Q) phi(K)^T, masked */
                const int nc = (nk + MATTN_VL - 1) / MATTN_VL * MATTN_VL;
                mk_xyt(nq, dh, Qp, dhp, KpT, LC, nc, A, LC);
                for (int i = 0; i < nq; i++) {
                    float *ar = A + (size_t)i * LC, sum = 0.0f;
                    const int t = tok[i] - (int)hb - c0;
                    for (int j = t + 1; j < nc; j++) ar[j] = 0.0f;
                    for (int j = 0; j <= t; j++) sum += ar[j];
                    den[i] += sum;
                }
                mk_ay(nq, nk, dhp, A, LC, 1, Vp, dhp, num, dhp);
                f += 4.0 * nq * nk * dh;
            }
            for (int i = 0; i < nq; i++) {
                float *o = a->out + (size_t)tok[i] * a->ldo + (size_t)h * dh;
                const float inv = 1.0f / (den[i] + 1e-6f);
                for (int d = 0; d < dh; d++) o[d] = num[(size_t)i * dhp + d] * inv;
            }
            f += 4.0 * nq * dh;
        }
        if (a->causal && c0 + LC <= last) f += lin_update(nk, dh, dhp, Kp, Vp, S, z);
    }
    return f;
}

/* FLOPs executed, or -1 when the per-thread workspace could not be allocated. */
double mattn_attn_linear_forward(const mattn_attn_args *a) {
    MATTN_ASSERT(a->dh <= MATTN_MAX_HEAD_DIM);
    const int B = a->B, H = a->H;
    int nomem = 0;
    double f = 0.0;
    #pragma omp parallel reduction(+ : f)
    {
        float *ws = mattn_amalloc(LIN_FLOATS * sizeof(float));
        if (!ws) {
            #pragma omp atomic write
            nomem = 1;
        }
        #pragma omp barrier
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                if (!nomem) f += lin_head(a, b, h, ws);
        mattn_afree(ws);
    }
    return nomem ? -1.0 : f;
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
