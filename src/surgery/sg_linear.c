/*
 * sg_linear.c — the linear expert over one sequence, forward and backward,
 * for training (surgery.h): the recurrence of llama_routed.c,
 *
 *   S_t = S_{t-1} + phi_k(k_t) v_t^T,  z_t = z_{t-1} + phi_k(k_t),
 *   o_t = phi_q(q_t)^T S_t / den_t,    den_t = phi_q(q_t)^T z_t,
 *
 * per K/V head j and the query heads h of its group.  Its gradients, with
 * g_t = dL/do_t and c_t = <o_t, g_t>:
 *
 *   dphi_q(t)  = (S_t g_t - c_t z_t) / den_t                  (a forward pass)
 *   dS_t = sum_{t' >= t} phi_q(t') g_t'^T / den_t',  dz_t = -sum_{t' >= t} phi_q(t') c_t' / den_t'
 *   dphi_k(t)  = dS_t v_t + dz_t,   dv_t = dS_t^T phi_k(t)   (a reverse pass)
 *
 * and through phi = [softmax(u), softmax(-u)], u = x W:
 *   du = p (dp - <p, dp>) - n (dn - <n, dn>),  dW += x du^T,  dx = W du.
 * Threads over K/V heads: each owns its state, its group's query heads and
 * their gradients, so results do not depend on the thread count.
 */
#include <string.h>

#include "surgery/surgery.h"

size_t sg_linear_ws_floats(int Hkv, int dh, int fd) { return (size_t)Hkv * 2 * ((size_t)2 * fd * dh + 2 * fd); }

/* phi of x (dh) through W (dh, fd) and the backward of dphi (2fd) into dW
 * (+=) and dx (+=, NULL: not wanted). */
static void phi_backward(const float *x, const float *W, int dh, int fd, const float *phi, const float *dphi,
                         float *dW, float *dx) {
    float du[SG_MAX_F / 2];
    double sp = 0.0, sn = 0.0;
    for (int j = 0; j < fd; j++) sp += (double)phi[j] * dphi[j], sn += (double)phi[fd + j] * dphi[fd + j];
    for (int j = 0; j < fd; j++)
        du[j] = phi[j] * (dphi[j] - (float)sp) - phi[fd + j] * (dphi[fd + j] - (float)sn);
    for (int i = 0; i < dh; i++) {
        mattn_axpy(dW + (size_t)i * fd, x[i], du, fd);
        if (dx) dx[i] += mattn_dot(W + (size_t)i * fd, du, fd);
    }
}

void sg_linear_forward(const sg_lin *a) {
    const int H = a->H, Hkv = a->Hkv, dh = a->dh, fd = a->fd, F = 2 * fd, g = H / Hkv;
    const int Dq = H * dh, Dkv = Hkv * dh;
    #pragma omp parallel for schedule(static)
    for (int j = 0; j < Hkv; j++) {
        float *S = a->ws + (size_t)j * 2 * ((size_t)F * dh + F), *z = S + (size_t)F * dh;
        float phk[SG_MAX_F], phq[SG_MAX_F];
        memset(S, 0, sizeof(float) * ((size_t)F * dh + F));
        for (int t = 0; t < a->T; t++) {
            const float *v = a->v + (size_t)t * Dkv + (size_t)j * dh;
            mattn_llama_feature_map(a->k + (size_t)t * Dkv + (size_t)j * dh, a->fk + (size_t)j * dh * fd, dh, fd, phk);
            for (int f = 0; f < F; f++) {
                mattn_axpy(S + (size_t)f * dh, phk[f], v, dh);
                z[f] += phk[f];
            }
            for (int h = j * g; h < (j + 1) * g; h++) {
                float *o = a->out + (size_t)t * Dq + (size_t)h * dh;
                mattn_llama_feature_map(a->q + (size_t)t * Dq + (size_t)h * dh, a->fq + (size_t)h * dh * fd, dh, fd, phq);
                memset(o, 0, sizeof(float) * dh);
                for (int f = 0; f < F; f++) mattn_axpy(o, phq[f], S + (size_t)f * dh, dh);
                const float den = mattn_dot(phq, z, F);
                a->den[(size_t)t * H + h] = den;
                for (int d = 0; d < dh; d++) o[d] /= den;
            }
        }
    }
}

void sg_linear_backward(const sg_lin *a, const float *gout, float *gq, float *gk, float *gv, float *gfq, float *gfk) {
    const int T = a->T, H = a->H, Hkv = a->Hkv, dh = a->dh, fd = a->fd, F = 2 * fd, g = H / Hkv;
    const int Dq = H * dh, Dkv = Hkv * dh;
    #pragma omp parallel for schedule(static)
    for (int j = 0; j < Hkv; j++) {
        float *S = a->ws + (size_t)j * 2 * ((size_t)F * dh + F), *z = S + (size_t)F * dh;
        float *dS = z + F, *dz = dS + (size_t)F * dh;
        float phk[SG_MAX_F], phq[SG_MAX_F], dphi[SG_MAX_F];
        memset(S, 0, sizeof(float) * 2 * ((size_t)F * dh + F));
        const float *Wk = a->fk + (size_t)j * dh * fd;
        /* forward order: the state at t, the queries' feature gradients */
        for (int t = 0; t < T; t++) {
            const float *v = a->v + (size_t)t * Dkv + (size_t)j * dh;
            mattn_llama_feature_map(a->k + (size_t)t * Dkv + (size_t)j * dh, Wk, dh, fd, phk);
            for (int f = 0; f < F; f++) {
                mattn_axpy(S + (size_t)f * dh, phk[f], v, dh);
                z[f] += phk[f];
            }
            for (int h = j * g; h < (j + 1) * g; h++) {
                const size_t r = (size_t)t * Dq + (size_t)h * dh;
                const float *gt = gout + r, *x = a->q + r, *Wq = a->fq + (size_t)h * dh * fd;
                const float den = a->den[(size_t)t * H + h], c = mattn_dot(a->out + r, gt, dh);
                mattn_llama_feature_map(x, Wq, dh, fd, phq);
                for (int f = 0; f < F; f++) dphi[f] = (mattn_dot(S + (size_t)f * dh, gt, dh) - c * z[f]) / den;
                phi_backward(x, Wq, dh, fd, phq, dphi, gfq + (size_t)h * dh * fd, gq ? gq + r : NULL);
            }
        }
        /* reverse order: the suffix sums, the keys' and values' gradients */
        for (int t = T - 1; t >= 0; t--) {
            for (int h = j * g; h < (j + 1) * g; h++) {
                const size_t r = (size_t)t * Dq + (size_t)h * dh;
                const float *gt = gout + r;
                const float den = a->den[(size_t)t * H + h], c = mattn_dot(a->out + r, gt, dh);
                mattn_llama_feature_map(a->q + r, a->fq + (size_t)h * dh * fd, dh, fd, phq);
                for (int f = 0; f < F; f++) {
                    mattn_axpy(dS + (size_t)f * dh, phq[f] / den, gt, dh);
                    dz[f] -= phq[f] * c / den;
                }
            }
            const size_t r = (size_t)t * Dkv + (size_t)j * dh;
            const float *x = a->k + r, *v = a->v + r;
            mattn_llama_feature_map(x, Wk, dh, fd, phk);
            for (int f = 0; f < F; f++) {
                dphi[f] = mattn_dot(dS + (size_t)f * dh, v, dh) + dz[f];
                if (gv) mattn_axpy(gv + r, phk[f], dS + (size_t)f * dh, dh);
            }
            phi_backward(x, Wk, dh, fd, phk, dphi, gfk + (size_t)j * dh * fd, gk ? gk + r : NULL);
        }
    }
}
