/*
 * attn_linear.c — the linear (kernel) attention core of the "linear" expert:
 * mattn_phi(x) = ELU(x) + 1 on q and k, out_t = mattn_phi(q_t)^T S / (mattn_phi(q_t)^T z + 1e-6)
 * with S = sum_s mattn_phi(k_s) v_s^T and z = sum_s mattn_phi(k_s); causal sums run over
 * s <= t, bidirectional ones over all s.  Padded keys are left out of S and z;
 * the additive mask does not apply (there are no scores).
 *
 * mattn_attn_linear_forward/_backward work in chunks of 64 positions per
 * (batch, head) (below): O(T dh^2 + T 64 dh) per head, keys only as far as
 * the last listed query needs.  mattn_attn_linear_forward_ref is the
 * quadratic formula
 * out_t = sum_s (mattn_phi(q_t).mattn_phi(k_s)) v_s / (sum_s mattn_phi(q_t).mattn_phi(k_s) + 1e-6).
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/microkernel.h"

static inline int padded(const mattn_attn_args *a, int b, int s) {
    return a->masks && a->masks->key_padding && !a->masks->key_padding[(size_t)b * a->T + s];
}

// ----------------------------------------------------------------------------
// chunked version
//
// Per (batch, head), keys and queries in chunks of LC positions.  Causal:
// the queries of a chunk get the state of the chunks before it through GEMMs
// (num = mattn_phi(Q) S, den = mattn_phi(Q) z) plus the chunk itself as a small masked
// attention (A = mattn_phi(Q) mattn_phi(K)^T, lower-triangular; num += A V, den += A 1);
// then S += mattn_phi(K)^T V, z += colsum mattn_phi(K).  Bidirectional: S and z over
// every key first, then num = mattn_phi(Q) S.  All products run in mk_xyt / mk_ay
// (microkernel.h).  A task writes only its own rows: the result does not
// depend on threads.

#define LC 64                         /* chunk length */
#define LDH MATTN_MAX_HEAD_DIM        /* padded head dimension bound */

/* Per-thread workspace: Qp (LC x dhp), Kp (LC x dhp), KpT (dh x LC), Vp
 * (LC x dhp), A (LC x LC), num (LC x dhp), S (dh x dhp), z (dh). */
#define LIN_FLOATS (5 * (size_t)LC * LDH + (size_t)LC * LC + (size_t)LDH * LDH + LDH)

static inline int lin_pad(int dh) { return (dh + CW - 1) / CW * CW; }

/* Rows [s0, s0+n) of x — through phi when with_phi — into X (n x dhp,
 * zero-padded); padded keys (kp != NULL and kp[s] == 0) become zero rows.
 * XT (dh x LC), if given, receives the transpose, zero columns from n up
 * to LC. */
static void pack_rows(const float *x, int ld, int s0, int n, int dh, int dhp, const uint8_t *kp, int with_phi,
                      float *X, float *XT) {
    for (int j = 0; j < n; j++) {
        float *row = X + (size_t)j * dhp;
        const float *src = x + (size_t)(s0 + j) * ld;
        const int drop = kp && !kp[s0 + j];
        int d = 0;
        if (!drop && with_phi)
            for (; d + MATTN_VL <= dh; d += MATTN_VL) vstore(row + d, vphi(vload(src + d)));
        for (; d < dh; d++) row[d] = drop ? 0.0f : with_phi ? mattn_phi(src[d]) : src[d];
        for (; d < dhp; d++) row[d] = 0.0f;
        if (XT)
            for (d = 0; d < dh; d++) XT[(size_t)d * LC + j] = row[d];
    }
    if (XT)
        for (int d = 0; d < dh; d++)
            for (int j = n; j < LC; j++) XT[(size_t)d * LC + j] = 0.0f;
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
            pack_rows(k, a->ld, c0, nk, dh, dhp, kp, 1, Kp, NULL);
            pack_rows(v, a->ld, c0, nk, dh, dhp, NULL, 0, Vp, NULL);
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
            pack_rows(k, a->ld, c0, nk, dh, dhp, kp, 1, Kp, KpT);
            pack_rows(v, a->ld, c0, nk, dh, dhp, NULL, 0, Vp, NULL);
        }
        if (nq) {
            for (int i = 0; i < nq; i++)
                pack_rows(q + (size_t)tok[i] * a->ld, 0, 0, 1, dh, dhp, NULL, 1, Qp + (size_t)i * dhp, NULL);
            memset(num, 0, sizeof(float) * (size_t)nq * dhp);
            mk_ay(nq, dh, dhp, Qp, dhp, 1, S, dhp, num, dhp); /* mattn_phi(Q) S */
            f += 2.0 * nq * dh * dh;
            float den[LC];
            for (int i = 0; i < nq; i++) {
                double s = 0.0;
                for (int d = 0; d < dh; d++) s += Qp[(size_t)i * dhp + d] * z[d];
                den[i] = (float)s;
            }
            if (a->causal) { /* the chunk itself: A = mattn_phi(Q) mattn_phi(K)^T, masked */
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

/* FLOPs executed by one (batch, head). */
static double lin_head_task(void *ctx, int b, int h, float *ws) { return lin_head(ctx, b, h, ws); }

/* The linear core takes multi-head geometry only (kv_group, ldkv, Tk at
 * their defaults: kernels.h). */
static int mha_geometry(const mattn_attn_args *a) {
    return a->kv_group <= 1 && (a->Tk == 0 || a->Tk == a->T) && (a->ldkv == 0 || a->ldkv == a->ld);
}

double mattn_attn_linear_forward(const mattn_attn_args *a) {
    MATTN_ASSERT(a->dh <= MATTN_MAX_HEAD_DIM && mha_geometry(a));
    return mattn_for_heads(a->B, a->H, LIN_FLOATS, a->scratch, a->scratch_bytes, lin_head_task, (void *)a);
}

// ----------------------------------------------------------------------------
// reference: the quadratic formula

/* Reference numerator and denominator for query (b, h, t) in double:
 * num = sum_s w_s v_s, den = sum_s w_s with w_s = mattn_phi(q).mattn_phi(k_s) over the
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
        for (int i = 0; i < dh; i++) w += (double)mattn_phi(q[i]) * mattn_phi(k[i]);
        *den += w;
        for (int i = 0; i < dh; i++) num[i] += w * v[i];
    }
}

double mattn_attn_linear_forward_ref(const mattn_attn_args *a) {
    MATTN_ASSERT(mha_geometry(a));
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
// backward (every query row), chunked like the forward
//
// o_t = num_t / den_t, num_t = S_t^T mattn_phi(q_t), den_t = mattn_phi(q_t).z_t + 1e-6:
//   gnum_t = go_t / den_t,  gden_t = -<go_t, o_t> / den_t
//   gmattn_phi(q_t) = S_t gnum_t + gden_t z_t
//   gmattn_phi(k_s) = G_s v_s + gz_s,  gv_s = G_s^T mattn_phi(k_s)
// with G_s = sum_{t sees s} mattn_phi(q_t) gnum_t^T and gz_s = sum_{t sees s} gden_t mattn_phi(q_t).
// Causal, per chunk of LC positions: the part of S, z, G, gz from other
// chunks is carried (pass 1 forward: S^T and z; pass 2 backward: G, G^T, gz)
// and the chunk's own part is the masked LC x LC products A = mattn_phi(Q) mattn_phi(K)^T
// and gA = gnum V^T + gden.  Bidirectional: S, z, G, gz over everything, no
// chunk part.  gnum and gden go from pass 1 to pass 2 through g->state.

static inline float dmattn_phi(float x) { return x > 0.0f ? 1.0f : expf(x); }

/* dst[d] += (g[d] + c add[d]) phi'(x[d]) for d < dh, vectorised. */
static void add_dmattn_phi(float *dst, const float *g, const float *add, float c, const float *x, int dh) {
    int d = 0;
    for (; d + MATTN_VL <= dh; d += MATTN_VL) {
        const mattn_vf xv = vload(x + d);
        const mattn_vi pos = xv > 0.0f;
        const mattn_vf e = vexp(-vmax(-xv, vset1(0.0f)));
        const mattn_vf dp = (mattn_vf)(((mattn_vi)vset1(1.0f) & pos) | ((mattn_vi)e & ~pos));
        vstore(dst + d, vload(dst + d) + (vload(g + d) + c * vload(add + d)) * dp);
    }
    for (; d < dh; d++) dst[d] += (g[d] + c * add[d]) * dmattn_phi(x[d]);
}

size_t mattn_attn_linear_backward_scratch(int B, int T, int H, int dh) {
    return (size_t)B * T * H * (dh + 1) * sizeof(float);
}

/* Per-thread workspace: Qp, Kp, Vp, VpT-free: gN, gQ, gK, gV (LC x dhp each),
 * KpT, VT (dh x LC), A, gA (LC x LC), St, G, Gt (dh x dhp), z, gz (dh). */
#define LINB_FLOATS (7 * (size_t)LC * LDH + 2 * (size_t)LDH * LC + 2 * (size_t)LC * LC + 3 * (size_t)LDH * LDH + 2 * LDH)

/* The products of a causal chunk of n positions (queries = keys), zero
 * above the diagonal: A = mattn_phi(Q) mattn_phi(K)^T, and gA = gN V^T + gden. */
static void lin_chunk_A(int n, int dh, int dhp, const float *Qp, const float *KpT, float *A) {
    const int nc = (n + MATTN_VL - 1) / MATTN_VL * MATTN_VL;
    mk_xyt(n, dh, Qp, dhp, KpT, LC, nc, A, LC);
    for (int t = 0; t < n; t++)
        for (int s = t + 1; s < nc; s++) A[(size_t)t * LC + s] = 0.0f;
}

static void lin_chunk_gA(int n, int dh, int dhp, const float *gN, const float *VT, const float *gden, float *gA) {
    const int nc = (n + MATTN_VL - 1) / MATTN_VL * MATTN_VL;
    mk_xyt(n, dh, gN, dhp, VT, LC, nc, gA, LC);
    for (int t = 0; t < n; t++) {
        float *gr = gA + (size_t)t * LC;
        for (int s = 0; s <= t; s++) gr[s] += gden[t];
        for (int s = t + 1; s < nc; s++) gr[s] = 0.0f;
    }
}

static void lin_bwd_head(const mattn_attn_args *a, const mattn_attn_grad *g, int b, int h, float *ws) {
    const int T = a->T, dh = a->dh, dhp = lin_pad(dh);
    float *Qp = ws, *Kp = Qp + LC * LDH, *Vp = Kp + LC * LDH, *gN = Vp + LC * LDH, *gQ = gN + LC * LDH;
    float *gK = gQ + LC * LDH, *gV = gK + LC * LDH, *KpT = gV + LC * LDH, *VT = KpT + LDH * LC;
    float *A = VT + LDH * LC, *gA = A + LC * LC, *St = gA + LC * LC, *G = St + LDH * LDH, *Gt = G + LDH * LDH;
    float *z = Gt + LDH * LDH, *gz = z + LDH;
    const size_t hb = (size_t)b * T;
    const float *q = a->q + hb * a->ld + (size_t)h * dh, *k = a->k + hb * a->ld + (size_t)h * dh;
    const float *v = a->v + hb * a->ld + (size_t)h * dh;
    const uint8_t *kp = a->masks && a->masks->key_padding ? a->masks->key_padding + hb : NULL;
    float *gstore = g->state + ((size_t)b * a->H + h) * (size_t)T * (dh + 1); /* gnum | gden per t */
    const size_t S2 = (size_t)dh * dhp;
    memset(St, 0, S2 * sizeof(float));
    memset(z, 0, (size_t)dh * sizeof(float));
    if (!a->causal) /* S^T and z over every key */
        for (int c0 = 0; c0 < T; c0 += LC) {
            const int n = T - c0 < LC ? T - c0 : LC;
            pack_rows(k, a->ld, c0, n, dh, dhp, kp, 1, Kp, NULL);
            pack_rows(v, a->ld, c0, n, dh, dhp, NULL, 0, Vp, NULL);
            mk_ay(dh, n, dhp, Vp, 1, dhp, Kp, dhp, St, dhp);
            for (int j = 0; j < n; j++)
                for (int d = 0; d < dh; d++) z[d] += Kp[(size_t)j * dhp + d];
        }
    /* pass 1: gnum, gden and dL/dq */
    for (int c0 = 0; c0 < T; c0 += LC) {
        const int n = T - c0 < LC ? T - c0 : LC;
        float gden[LC];
        pack_rows(q, a->ld, c0, n, dh, dhp, NULL, 1, Qp, NULL);
        if (a->causal) {
            pack_rows(k, a->ld, c0, n, dh, dhp, kp, 1, Kp, KpT);
            pack_rows(v, a->ld, c0, n, dh, dhp, NULL, 0, Vp, VT);
            lin_chunk_A(n, dh, dhp, Qp, KpT, A);
        }
        for (int t = 0; t < n; t++) {
            const size_t row = hb + (size_t)(c0 + t);
            const float *go = g->gout + row * g->ldgo + (size_t)h * dh, *o = a->out + row * a->ldo + (size_t)h * dh;
            double den = 0.0;
            for (int d = 0; d < dh; d++) den += Qp[(size_t)t * dhp + d] * z[d];
            if (a->causal)
                for (int s = 0; s <= t; s++) den += A[(size_t)t * LC + s];
            const float dn = (float)den + 1e-6f, god = mattn_dot(go, o, dh);
            float *gn = gN + (size_t)t * dhp, *st = gstore + (size_t)(c0 + t) * (dh + 1);
            int d = 0;
            for (; d < dh; d++) st[d] = gn[d] = go[d] / dn;
            for (; d < dhp; d++) gn[d] = 0.0f;
            st[dh] = gden[t] = -god / dn;
        }
        memset(gQ, 0, sizeof(float) * (size_t)n * dhp);
        mk_ay(n, dh, dhp, gN, dhp, 1, St, dhp, gQ, dhp); /* S gnum (St rows are S columns) */
        if (a->causal) {
            lin_chunk_gA(n, dh, dhp, gN, VT, gden, gA);
            mk_ay(n, n, dhp, gA, LC, 1, Kp, dhp, gQ, dhp);
        }
        for (int t = 0; t < n; t++) {
            const float *x = q + (size_t)(c0 + t) * a->ld;
            float *gq = g->gq + (hb + (size_t)(c0 + t)) * g->ldg + (size_t)h * dh;
            add_dmattn_phi(gq, gQ + (size_t)t * dhp, z, gden[t], x, dh);
        }
        if (a->causal) { /* carry S^T, z past this chunk */
            mk_ay(dh, n, dhp, Vp, 1, dhp, Kp, dhp, St, dhp);
            for (int j = 0; j < n; j++)
                for (int d = 0; d < dh; d++) z[d] += Kp[(size_t)j * dhp + d];
        }
    }
    /* pass 2: dL/dk, dL/dv; G, G^T, gz carry the queries after the chunk */
    memset(G, 0, S2 * sizeof(float));
    memset(Gt, 0, S2 * sizeof(float));
    memset(gz, 0, (size_t)dh * sizeof(float));
    const int last_c0 = (T - 1) / LC * LC;
    for (int pass = a->causal ? 1 : 0; pass < 2; pass++) /* bidirectional: G over everything first */
        for (int c0 = last_c0; c0 >= 0; c0 -= LC) {
            const int n = T - c0 < LC ? T - c0 : LC;
            float gden[LC];
            pack_rows(q, a->ld, c0, n, dh, dhp, NULL, 1, Qp, NULL);
            for (int t = 0; t < n; t++) {
                const float *st = gstore + (size_t)(c0 + t) * (dh + 1);
                float *gn = gN + (size_t)t * dhp;
                int d = 0;
                for (; d < dh; d++) gn[d] = st[d];
                for (; d < dhp; d++) gn[d] = 0.0f;
                gden[t] = st[dh];
            }
            if (pass == 1) {
                pack_rows(k, a->ld, c0, n, dh, dhp, kp, 1, Kp, KpT);
                pack_rows(v, a->ld, c0, n, dh, dhp, NULL, 0, Vp, a->causal ? VT : NULL);
                memset(gK, 0, sizeof(float) * (size_t)n * dhp);
                memset(gV, 0, sizeof(float) * (size_t)n * dhp);
                mk_ay(n, dh, dhp, Vp, dhp, 1, Gt, dhp, gK, dhp); /* G v */
                mk_ay(n, dh, dhp, Kp, dhp, 1, G, dhp, gV, dhp);  /* G^T mattn_phi(k) */
                if (a->causal) {
                    lin_chunk_A(n, dh, dhp, Qp, KpT, A);
                    lin_chunk_gA(n, dh, dhp, gN, VT, gden, gA);
                    mk_ay(n, n, dhp, gA, 1, LC, Qp, dhp, gK, dhp); /* gA^T mattn_phi(Q) */
                    mk_ay(n, n, dhp, A, 1, LC, gN, dhp, gV, dhp);  /* A^T gnum */
                }
                for (int j = 0; j < n; j++) {
                    const size_t row = hb + (size_t)(c0 + j);
                    if (kp && !kp[c0 + j]) continue; /* padded key: no gradient */
                    const float *x = k + (size_t)(c0 + j) * a->ld;
                    float *gk = g->gk + row * g->ldg + (size_t)h * dh, *gv = g->gv + row * g->ldg + (size_t)h * dh;
                    add_dmattn_phi(gk, gK + (size_t)j * dhp, gz, 1.0f, x, dh);
                    mattn_axpy(gv, 1.0f, gV + (size_t)j * dhp, dh);
                }
            }
            if (pass == 0 || a->causal) { /* G += mattn_phi(Q)^T gnum, G^T += gnum^T mattn_phi(Q), gz += gden mattn_phi(Q) */
                mk_ay(dh, n, dhp, Qp, 1, dhp, gN, dhp, G, dhp);
                mk_ay(dh, n, dhp, gN, 1, dhp, Qp, dhp, Gt, dhp);
                for (int t = 0; t < n; t++)
                    for (int d = 0; d < dh; d++) gz[d] += gden[t] * Qp[(size_t)t * dhp + d];
            }
        }
}

/* Returns 0, or -1 when the per-thread workspace could not be allocated. */
typedef struct { const mattn_attn_args *a; const mattn_attn_grad *g; } lin_bwd_ctx;
static double lin_bwd_task(void *ctx, int b, int h, float *ws) {
    const lin_bwd_ctx *c = ctx;
    lin_bwd_head(c->a, c->g, b, h, ws);
    return 0.0;
}

int mattn_attn_linear_backward(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows && a->dh <= MATTN_MAX_HEAD_DIM && mha_geometry(a));
    lin_bwd_ctx c = {a, g};
    return mattn_for_heads(a->B, a->H, LINB_FLOATS, a->scratch, a->scratch_bytes, lin_bwd_task, &c) < 0 ? -1 : 0;
}

size_t mattn_attn_linear_scratch(int backward, int threads) {
    return mattn_heads_scratch(backward ? LINB_FLOATS : LIN_FLOATS, threads);
}

/* Reference: the quadratic form in double.  A_ts = mattn_phi(q_t).mattn_phi(k_s) over
 * visible, unpadded s; gA_ts = <gnum_t, v_s> + gden_t. */
void mattn_attn_linear_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows && mha_geometry(a));
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
                        w += (double)mattn_phi(q[i]) * mattn_phi(k[i]);
                        gA += (double)go[i] / den * v[i];
                    }
                    for (int i = 0; i < dh; i++) {
                        gv[i] += (float)(w * go[i] / den);
                        gq[i] += (float)(gA * mattn_phi(k[i]) * dmattn_phi(q[i]));
                        gk[i] += (float)(gA * mattn_phi(q[i]) * dmattn_phi(k[i]));
                    }
                }
            }
}

// ----------------------------------------------------------------------------
// decoding: the running state of one sequence, S (H, dh, dh) then z (H, dh)

double mattn_attn_linear_decode_update(float *state, const float *k, const float *v, int H, int dh) {
    for (int h = 0; h < H; h++) {
        float *Sh = state + (size_t)h * ((size_t)dh * dh + dh), *z = Sh + (size_t)dh * dh;
        for (int i = 0; i < dh; i++) {
            const float pk = mattn_phi(k[h * dh + i]);
            z[i] += pk;
            mattn_axpy(Sh + (size_t)i * dh, pk, v + (size_t)h * dh, dh);
        }
    }
    return 2.0 * H * dh * dh + (double)H * dh;
}

double mattn_attn_linear_decode_query(const float *state, const float *q, float *out, int H, int dh) {
    for (int h = 0; h < H; h++) {
        const float *Sh = state + (size_t)h * ((size_t)dh * dh + dh), *z = Sh + (size_t)dh * dh;
        float *o = out + (size_t)h * dh, den = 0.0f;
        for (int j = 0; j < dh; j++) o[j] = 0.0f;
        for (int i = 0; i < dh; i++) {
            const float pq = mattn_phi(q[h * dh + i]);
            den += pq * z[i];
            mattn_axpy(o, pq, Sh + (size_t)i * dh, dh);
        }
        const float inv = 1.0f / (den + 1e-6f);
        for (int j = 0; j < dh; j++) o[j] *= inv;
    }
    return 2.0 * H * dh * dh + 3.0 * H * dh;
}

/* The plain twins, in double: the same sums written out. */
double mattn_attn_linear_decode_update_ref(float *state, const float *k, const float *v, int H, int dh) {
    for (int h = 0; h < H; h++) {
        float *Sh = state + (size_t)h * ((size_t)dh * dh + dh), *z = Sh + (size_t)dh * dh;
        for (int i = 0; i < dh; i++) {
            const double x = k[h * dh + i], pk = x > 0.0 ? x + 1.0 : exp(x);
            z[i] = (float)(z[i] + pk);
            for (int j = 0; j < dh; j++) Sh[(size_t)i * dh + j] = (float)(Sh[(size_t)i * dh + j] + pk * v[h * dh + j]);
        }
    }
    return 2.0 * H * dh * dh + (double)H * dh;
}

double mattn_attn_linear_decode_query_ref(const float *state, const float *q, float *out, int H, int dh) {
    for (int h = 0; h < H; h++) {
        const float *Sh = state + (size_t)h * ((size_t)dh * dh + dh), *z = Sh + (size_t)dh * dh;
        double num[MATTN_MAX_HEAD_DIM] = {0}, den = 0.0;
        for (int i = 0; i < dh; i++) {
            const double x = q[h * dh + i], pq = x > 0.0 ? x + 1.0 : exp(x);
            den += pq * z[i];
            for (int j = 0; j < dh; j++) num[j] += pq * Sh[(size_t)i * dh + j];
        }
        for (int j = 0; j < dh; j++) out[(size_t)h * dh + j] = (float)(num[j] / (den + 1e-6));
    }
    return 2.0 * H * dh * dh + 3.0 * H * dh;
}
