/*
 * gelu.c — GELU, exact erf form, vectorised (simd.h's erf and exp), with its
 * derivative; the plain twins use erf() and exp() of libm in double.
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/simd.h"

// Vectorised (simd.h's erf and exp); the last partial vector goes through a
// zero-padded copy, so every element sees the same arithmetic.

/* Load n - i (< MATTN_VL) trailing elements, zero-padded. */
static inline mattn_vf vload_tail(const float *p, int64_t m) {
    _Alignas(64) float t[MATTN_VL] = {0};
    memcpy(t, p, (size_t)m * sizeof(float));
    return vload(t);
}
static inline void vstore_tail(float *p, mattn_vf v, int64_t m) {
    _Alignas(64) float t[MATTN_VL];
    vstore(t, v);
    memcpy(p, t, (size_t)m * sizeof(float));
}

void mattn_gelu_forward(float *out, const float *x, int64_t n) {
    const int64_t nv = n / MATTN_VL * MATTN_VL;
    #pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < nv; i += MATTN_VL) vstore(out + i, vgelu(vload(x + i)));
    if (nv < n) vstore_tail(out + nv, vgelu(vload_tail(x + nv, n - nv)), n - nv);
}

void mattn_gelu_backward(float *dx, const float *x, const float *dout, int64_t n) {
    const int64_t nv = n / MATTN_VL * MATTN_VL;
    #pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < nv; i += MATTN_VL)
        vstore(dx + i, vload(dx + i) + vgelu_grad(vload(x + i)) * vload(dout + i));
    if (nv < n) {
        const int64_t m = n - nv;
        vstore_tail(dx + nv, vload_tail(dx + nv, m) + vgelu_grad(vload_tail(x + nv, m)) * vload_tail(dout + nv, m), m);
    }
}

void mattn_gelu_grad_mul(float *g, const float *x, int64_t n) {
    const int64_t nv = n / MATTN_VL * MATTN_VL;
    #pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < nv; i += MATTN_VL) vstore(g + i, vload(g + i) * vgelu_grad(vload(x + i)));
    if (nv < n) vstore_tail(g + nv, vload_tail(g + nv, n - nv) * vgelu_grad(vload_tail(x + nv, n - nv)), n - nv);
}

/* The plain twins: 0.5 x (1 + erf(x / sqrt 2)) and its derivative
 * Phi(x) + x phi_N(x), in double with libm's erf and exp. */
static double gelu_ref(double x) { return 0.5 * x * (1.0 + erf(x * 0.70710678118654752)); }
static double gelu_grad_ref(double x) {
    return 0.5 * (1.0 + erf(x * 0.70710678118654752)) + x * exp(-0.5 * x * x) * 0.39894228040143268;
}

void mattn_gelu_forward_ref(float *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = (float)gelu_ref(x[i]);
}

void mattn_gelu_backward_ref(float *dx, const float *x, const float *dout, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = (float)(dx[i] + gelu_grad_ref(x[i]) * dout[i]);
}
