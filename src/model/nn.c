/*
 * nn.c — the language model's building blocks, forward and backward side by
 * side (llm.c style): LayerNorm, GELU (erf), linear with bias, token +
 * position embeddings, dropout, softmax cross-entropy.  Rows are tokens;
 * loops over rows run in parallel.  Every backward ACCUMULATES (+=) into
 * its gradient buffers, parameters and activations alike: the caller zeroes
 * them once per step.
 */
#include <math.h>
#include <string.h>

#include "model/model.h"

// ----------------------------------------------------------------------------
// LayerNorm over the last dimension C (PyTorch: eps 1e-5, biased variance)

void mattn_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int64_t N, int C) {
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + n * C;
        double m = 0.0, v = 0.0;
        for (int i = 0; i < C; i++) m += xn[i];
        m /= C;
        for (int i = 0; i < C; i++) v += (xn[i] - m) * (xn[i] - m);
        v /= C;
        const float s = (float)(1.0 / sqrt(v + 1e-5)), mf = (float)m;
        float *o = out + n * C;
        for (int i = 0; i < C; i++) o[i] = (xn[i] - mf) * s * w[i] + b[i];
        mean[n] = mf;
        rstd[n] = s;
    }
}

/* dx += rstd (w.dy - mean(w.dy) - xhat mean(w.dy xhat));  dw += dy xhat;  db += dy */
void mattn_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                              const float *mean, const float *rstd, const float *w, int64_t N, int C) {
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *dy = dout + n * C, *xn = x + n * C;
        float *dxn = dx + n * C;
        double a = 0.0, bsum = 0.0;
        for (int i = 0; i < C; i++) {
            const double xhat = (xn[i] - mean[n]) * rstd[n], g = (double)w[i] * dy[i];
            a += g;
            bsum += g * xhat;
        }
        a /= C;
        bsum /= C;
        for (int i = 0; i < C; i++) {
            const double xhat = (xn[i] - mean[n]) * rstd[n], g = (double)w[i] * dy[i];
            dxn[i] += (float)(rstd[n] * (g - a - xhat * bsum));
        }
    }
    /* parameter gradients: a reduction over rows, done column-parallel */
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++) {
        double gw = 0.0, gb = 0.0;
        for (int64_t n = 0; n < N; n++) {
            const float dy = dout[n * C + i];
            gw += (double)dy * (x[n * C + i] - mean[n]) * rstd[n];
            gb += dy;
        }
        dw[i] += (float)gw;
        db[i] += (float)gb;
    }
}

// ----------------------------------------------------------------------------
// linear: out (N, O) = x (N, I) W^T + b, W (O, I) row-major as nn.Linear

void mattn_linear_forward(float *out, const float *x, const float *W, const float *b, int64_t N, int I, int O) {
    mattn_gemm(0, 1, (int)N, O, I, 1.0f, x, I, W, I, 0.0f, out, O);
    if (b) {
        #pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++)
            for (int o = 0; o < O; o++) out[n * O + o] += b[o];
    }
}

void mattn_linear_backward(float *dx, float *dW, float *db, const float *dout, const float *x, const float *W,
                           int64_t N, int I, int O) {
    if (dx) mattn_gemm(0, 0, (int)N, I, O, 1.0f, dout, O, W, I, 1.0f, dx, I);
    mattn_gemm(1, 0, O, I, (int)N, 1.0f, dout, O, x, I, 1.0f, dW, I);
    if (db) {
        #pragma omp parallel for schedule(static)
        for (int o = 0; o < O; o++) {
            double s = 0.0;
            for (int64_t n = 0; n < N; n++) s += dout[n * O + o];
            db[o] += (float)s;
        }
    }
}

// ----------------------------------------------------------------------------
// embeddings: x[b,t] = tok[idx[b,t]] + pos[t]

void mattn_embed_forward(float *out, const int32_t *idx, const float *tok, const float *pos, int B, int T, int C) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = tok + (size_t)idx[(size_t)b * T + t] * C, *pe = pos + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = te[i] + pe[i];
        }
}

/* Scatter-add; sequential over tokens (rows of dtok may repeat), parallel
 * over channels, so the sum order is fixed: deterministic. */
void mattn_embed_backward(float *dtok, float *dpos, const float *dout, const int32_t *idx, int B, int T, int C) {
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const float d = dout[((size_t)b * T + t) * C + i];
                dtok[(size_t)idx[(size_t)b * T + t] * C + i] += d;
                dpos[(size_t)t * C + i] += d;
            }
}

// ----------------------------------------------------------------------------
// dropout with a counter-based mask: out = x * keep / (1 - p)

void mattn_dropout_forward(float *out, const float *x, int64_t n, float p, uint64_t key) {
    if (p <= 0.0f) {
        if (out != x) memcpy(out, x, (size_t)n * sizeof(float));
        return;
    }
    const float s = 1.0f / (1.0f - p);
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = mattn_hash_u01(key, (uint64_t)i) < p ? 0.0f : x[i] * s;
}

void mattn_dropout_backward(float *dx, const float *dout, int64_t n, float p, uint64_t key) {
    const float s = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] += p > 0.0f && mattn_hash_u01(key, (uint64_t)i) < p ? 0.0f : dout[i] * s;
}

// ----------------------------------------------------------------------------
// softmax cross-entropy, mean over the N rows with a target (target < 0: ignored)

double mattn_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int64_t N, int V,
                                  int64_t *n_counted) {
    double loss = 0.0;
    int64_t cnt = 0;
    #pragma omp parallel for schedule(static) reduction(+ : loss, cnt)
    for (int64_t n = 0; n < N; n++) {
        const float *l = logits + n * V;
        float *p = probs + n * V;
        float m = l[0];
        for (int v = 1; v < V; v++) m = l[v] > m ? l[v] : m;
        double Z = 0.0;
        for (int v = 0; v < V; v++) Z += (p[v] = expf(l[v] - m));
        const float inv = (float)(1.0 / Z);
        for (int v = 0; v < V; v++) p[v] *= inv;
        if (targets[n] >= 0) {
            loss += -((double)l[targets[n]] - m - log(Z));
            cnt++;
        }
    }
    if (n_counted) *n_counted = cnt;
    return cnt ? loss / (double)cnt : 0.0;
}

/* dlogits += dloss (probs - onehot(target)) / count */
void mattn_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int64_t N, int V,
                                 int64_t count, float dloss) {
    if (!count) return;
    const float s = dloss / (float)count;
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        float *d = dlogits + n * V;
        const float *p = probs + n * V;
        for (int v = 0; v < V; v++) d[v] += s * p[v];
        d[targets[n]] -= s;
    }
}
